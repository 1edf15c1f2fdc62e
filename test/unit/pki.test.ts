/**
 * PKI unit tests with real OpenSSL: CSRs made by `openssl req` are parsed and checked, certificates
 * and CRLs built here are verified by `openssl verify` / `openssl crl`.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { X509Certificate, createPublicKey, generateKeyPairSync, sign as cryptoSign } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FleetpassError } from '../../src/core/errors.js';
import type { ReasonCode } from '../../src/core/errors.js';
import { SoftKeyManager } from '../../src/kms/index.js';
import type { KeyAlgorithm, Signer } from '../../src/kms/index.js';
import {
  buildCrl,
  createRootAndIssuingCa,
  createSelfSignedCa,
  derToPem,
  issueCertificate,
  issueServerCertificate,
  parseCertificate,
  parseCsr,
  pemToDer,
  splitPemChain,
  verifyChain,
} from '../../src/pki/index.js';
import type { CaMaterial, CsrLimits } from '../../src/pki/index.js';
import { buildCsr, csrPem, newEcKey } from '../../sim/crypto.js';
import { decodeBasicConstraints, decodeSubjectAltName, readExtensions } from '../../src/pki/extensions.js';
import { readExact } from '../../src/pki/der.js';

// ---------------------------------------------------------------------------------------------
// helpers
// ---------------------------------------------------------------------------------------------

const work = mkdtempSync(join(tmpdir(), 'fleetpass-pki-'));
after(() => rmSync(work, { recursive: true, force: true }));
let fileCounter = 0;

function file(name: string, content: string | Buffer): string {
  const p = join(work, `${fileCounter++}-${name}`);
  writeFileSync(p, content);
  return p;
}

function openssl(args: string[]): { status: number; out: string } {
  const r = spawnSync('openssl', args, { cwd: work, encoding: 'utf8' });
  return { status: r.status ?? -1, out: `${r.stdout}${r.stderr}` };
}

/** `openssl req -new` with a fresh key; returns the CSR PEM and the key file path. */
function opensslCsr(keyArgs: string[], opts: { subj?: string; san?: string; extra?: string[] } = {}): { pem: string; keyFile: string } {
  const keyFile = join(work, `${fileCounter++}-key.pem`);
  const out = join(work, `${fileCounter++}-req.pem`);
  const args = ['req', '-new', ...keyArgs, '-nodes', '-keyout', keyFile, '-out', out, '-subj', opts.subj ?? '/CN=device-0001/O=Acme Devices'];
  if (opts.san) args.push('-addext', `subjectAltName=${opts.san}`);
  args.push(...(opts.extra ?? []));
  execFileSync('openssl', args, { cwd: work, stdio: ['ignore', 'ignore', 'pipe'] });
  return { pem: readFileSync(out, 'utf8'), keyFile };
}

const LIMITS: CsrLimits = { maxBytes: 8192, minRsaBits: 2048 };

function assertCode(fn: () => unknown, code: ReasonCode, message?: RegExp): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof FleetpassError, `expected FleetpassError, got ${String(err)}`);
    assert.equal(err.code, code, `expected ${code}, got ${err.code}: ${err.message}`);
    if (message) assert.match(err.message, message);
    return true;
  });
}

/** A Signer around a bare key; `claimSpki` lets a test lie about which key it holds. */
function rawSigner(key: KeyObject, algorithm: KeyAlgorithm, claimSpki?: Buffer): Signer {
  const hash = algorithm === 'ed25519' ? null : algorithm === 'ecdsa-p384' ? 'sha384' : 'sha256';
  return {
    keyRef: 'test:raw',
    algorithm,
    publicKeySpki: claimSpki ?? createPublicKey(key).export({ format: 'der', type: 'spki' }),
    sign: (data) => Promise.resolve(cryptoSign(hash, data, key)),
  };
}

function spkiOf(keyFile: string): Buffer {
  return createPublicKey(readFileSync(keyFile)).export({ format: 'der', type: 'spki' });
}

const NOW = new Date();
const DAY = 86_400_000;

let km: SoftKeyManager;
const cas = new Map<KeyAlgorithm, { root: CaMaterial; issuing: CaMaterial }>();

before(async () => {
  km = await SoftKeyManager.open({ dataDir: join(work, 'kms'), passphrase: 'test-passphrase', logger: { warn: () => undefined } });
});

async function caFor(algorithm: KeyAlgorithm): Promise<{ root: CaMaterial; issuing: CaMaterial }> {
  let ca = cas.get(algorithm);
  if (!ca) {
    ca = await createRootAndIssuingCa(km, { algorithm, organization: `Acme ${algorithm}`, now: NOW });
    cas.set(algorithm, ca);
  }
  return ca;
}

async function issueClient(issuing: CaMaterial, spki: Buffer, extra: Partial<Parameters<typeof issueCertificate>[0]> = {}) {
  return issueCertificate({
    signer: issuing.signer,
    issuerCertificateDer: issuing.der,
    subject: { commonName: 'device-0001', organization: 'Acme Devices' },
    publicKeySpki: spki,
    notBefore: new Date(NOW.getTime() - 60_000),
    notAfter: new Date(NOW.getTime() + 365 * DAY),
    usage: 'client',
    crlDistributionPointUrl: 'http://pki.example.com/crl/issuing.crl',
    ocspUrl: 'http://pki.example.com/ocsp',
    ...extra,
  });
}

// ---------------------------------------------------------------------------------------------
// PEM
// ---------------------------------------------------------------------------------------------

describe('pem', () => {
  test('round trip, bare base64, labels, chains', () => {
    const der = Buffer.from([0x30, 0x03, 0x02, 0x01, 0x05]);
    const pem = derToPem(der, 'CERTIFICATE');
    assert.match(pem, /^-----BEGIN CERTIFICATE-----\nMAMCAQU=\n-----END CERTIFICATE-----\n$/);
    assert.deepEqual(pemToDer(pem), der);
    assert.deepEqual(pemToDer(pem, 'CERTIFICATE'), der);
    assert.deepEqual(pemToDer(`  \r\n${pem.replace(/\n/g, '\r\n')}  `), der);
    assert.deepEqual(pemToDer(' MAMC\nAQU= \n'), der);
    assertCode(() => pemToDer(pem, 'CERTIFICATE REQUEST'), 'VALIDATION_FAILED', /found CERTIFICATE/);
    assertCode(() => pemToDer('not base64 !!'), 'VALIDATION_FAILED');
    assertCode(() => pemToDer(''), 'VALIDATION_FAILED');
    assertCode(() => pemToDer('-----BEGIN CERTIFICATE-----\nMAMCAQU=\n'), 'VALIDATION_FAILED');
    const long = Buffer.alloc(100, 0xab);
    const longPem = derToPem(long, 'X');
    assert.ok(longPem.split('\n').every((l) => l.length <= 64));
    assert.deepEqual(splitPemChain(`junk\n${pem}${derToPem(long, 'PRIVATE KEY')}${longPem.replace(/X-----/g, 'CERTIFICATE-----')}`), [der, long]);
  });
});

// ---------------------------------------------------------------------------------------------
// CSR
// ---------------------------------------------------------------------------------------------

describe('parseCsr with OpenSSL CSRs', () => {
  test('P-256 with SAN: subject, CN, DNS names, fingerprint', () => {
    const { pem, keyFile } = opensslCsr(['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256'], {
      subj: '/C=DE/O=Acme Devices/CN=device-0001',
      san: 'DNS:device-0001.example.com,DNS:alt.example.com,IP:10.0.0.1',
    });
    const csr = parseCsr(pem, LIMITS);
    assert.equal(csr.subject, 'CN=device-0001,O=Acme Devices,C=DE');
    assert.equal(csr.commonName, 'device-0001');
    assert.deepEqual(csr.dnsNames, ['device-0001.example.com', 'alt.example.com']);
    assert.deepEqual(csr.publicKey, { type: 'ec', curve: 'P-256', bits: 256 });
    assert.deepEqual(csr.publicKeySpki, spkiOf(keyFile));
    assert.match(csr.publicKeyFingerprint, /^[0-9a-f]{64}$/);
    assert.deepEqual(csr.der, pemToDer(pem));
  });

  test('accepts NEW CERTIFICATE REQUEST, base64 DER with and without line breaks, raw DER, Buffer PEM', () => {
    const { pem } = opensslCsr(['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256']);
    const der = pemToDer(pem);
    const expected = parseCsr(pem, LIMITS).publicKeyFingerprint;
    const b64 = der.toString('base64');
    for (const input of [
      pem.replace(/CERTIFICATE REQUEST/g, 'NEW CERTIFICATE REQUEST'),
      b64,
      b64.replace(/(.{64})/g, '$1\n'),
      der,
      Buffer.from(pem),
      `\n\n${pem}\n`,
    ]) {
      assert.equal(parseCsr(input, LIMITS).publicKeyFingerprint, expected);
    }
  });

  test('P-384 (sha384), P-521, RSA 2048, RSA-PSS signature, Ed25519 are accepted', () => {
    const p384 = parseCsr(opensslCsr(['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-384', '-sha384']).pem, LIMITS);
    assert.deepEqual(p384.publicKey, { type: 'ec', curve: 'P-384', bits: 384 });
    const p521 = parseCsr(opensslCsr(['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-521', '-sha512']).pem, LIMITS);
    assert.deepEqual(p521.publicKey, { type: 'ec', curve: 'P-521', bits: 521 });
    const rsa = parseCsr(opensslCsr(['-newkey', 'rsa:2048']).pem, LIMITS);
    assert.deepEqual(rsa.publicKey, { type: 'rsa', bits: 2048 });
    const pss = parseCsr(opensslCsr(['-newkey', 'rsa:2048', '-sigopt', 'rsa_padding_mode:pss', '-sigopt', 'rsa_pss_saltlen:32']).pem, LIMITS);
    assert.deepEqual(pss.publicKey, { type: 'rsa', bits: 2048 });
    const ed = parseCsr(opensslCsr(['-newkey', 'ed25519']).pem, LIMITS);
    assert.deepEqual(ed.publicKey, { type: 'ed25519', bits: 256 });
  });

  test('key policy: RSA 1024 too weak, secp256k1 / Ed448 / DSA unsupported', () => {
    assertCode(() => parseCsr(opensslCsr(['-newkey', 'rsa:1024']).pem, LIMITS), 'KEY_TOO_WEAK', /1024/);
    assertCode(() => parseCsr(opensslCsr(['-newkey', 'rsa:2048']).pem, { ...LIMITS, minRsaBits: 3072 }), 'KEY_TOO_WEAK');
    assertCode(() => parseCsr(opensslCsr(['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:secp256k1']).pem, LIMITS), 'KEY_UNSUPPORTED', /secp256k1/);
    assertCode(() => parseCsr(opensslCsr(['-newkey', 'ed448']).pem, LIMITS), 'KEY_UNSUPPORTED', /Ed448/);
    const params = join(work, `${fileCounter++}-dsa.pem`);
    execFileSync('openssl', ['genpkey', '-genparam', '-algorithm', 'DSA', '-pkeyopt', 'dsa_paramgen_bits:2048', '-out', params], { stdio: 'ignore' });
    assertCode(() => parseCsr(opensslCsr(['-newkey', `dsa:${params}`]).pem, LIMITS), 'KEY_UNSUPPORTED', /DSA/);
  });

  test('a flipped signature byte fails proof of possession', () => {
    for (const keyArgs of [['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256'], ['-newkey', 'rsa:2048'], ['-newkey', 'ed25519']]) {
      const der = Buffer.from(pemToDer(opensslCsr(keyArgs).pem));
      der[der.length - 2] = (der[der.length - 2] as number) ^ 0x01;
      assertCode(() => parseCsr(der, LIMITS), 'CSR_SIGNATURE_INVALID');
    }
  });

  test('a CSR whose signed part was altered fails proof of possession', () => {
    const der = Buffer.from(pemToDer(opensslCsr(['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256'], { subj: '/CN=device-0001' }).pem));
    const at = der.indexOf(Buffer.from('device-0001'));
    der[at] = 'D'.charCodeAt(0);
    assertCode(() => parseCsr(der, LIMITS), 'CSR_SIGNATURE_INVALID');
  });

  test('SHA-1 signed CSRs are refused', () => {
    assertCode(() => parseCsr(opensslCsr(['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-sha1']).pem, LIMITS), 'CSR_SIGNATURE_INVALID', /not accepted/);
  });

  test('garbage, non-PEM, truncated, trailing data, certificate instead of CSR → CSR_INVALID', () => {
    const { pem } = opensslCsr(['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256']);
    const der = pemToDer(pem);
    assertCode(() => parseCsr('hello world, I am a device', LIMITS), 'CSR_INVALID');
    assertCode(() => parseCsr('', LIMITS), 'CSR_INVALID');
    assertCode(() => parseCsr(Buffer.from([0x30, 0x82, 0xff]), LIMITS), 'CSR_INVALID');
    assertCode(() => parseCsr(der.subarray(0, der.length - 10), LIMITS), 'CSR_INVALID');
    assertCode(() => parseCsr(Buffer.concat([der, Buffer.from([0, 0])]), LIMITS), 'CSR_INVALID');
    assertCode(() => parseCsr(der.subarray(0, 40).toString('base64'), LIMITS), 'CSR_INVALID');
    assertCode(() => parseCsr(pem.replace(/CERTIFICATE REQUEST/g, 'CERTIFICATE'), LIMITS), 'CSR_INVALID');
    assertCode(() => parseCsr(pem.slice(0, pem.length / 2), LIMITS), 'CSR_INVALID');
    assertCode(() => parseCsr(Buffer.from([0x30, 0x03, 0x02, 0x01, 0x00]), LIMITS), 'CSR_INVALID');
    assertCode(() => parseCsr(pem.replace(/[A-Za-z0-9]{10}\n/, 'AAAAAAAAAA\n'), LIMITS), 'CSR_INVALID');
  });

  test('oversized input → CSR_INVALID naming the size', () => {
    const { pem } = opensslCsr(['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256']);
    assertCode(() => parseCsr(pem, { ...LIMITS, maxBytes: 100 }), 'CSR_INVALID', new RegExp(`${pem.length} bytes.*100`));
    assertCode(() => parseCsr(Buffer.alloc(1_000_000, 0x30), LIMITS), 'CSR_INVALID', /1000000 bytes/);
  });
});

// ---------------------------------------------------------------------------------------------
// issuance, verified by OpenSSL
// ---------------------------------------------------------------------------------------------

describe('issued certificates verify with OpenSSL', () => {
  for (const algorithm of ['ecdsa-p256', 'ecdsa-p384', 'rsa-3072', 'ed25519'] as const) {
    test(`${algorithm} CA: root → issuing → client leaf`, async () => {
      const { root, issuing } = await caFor(algorithm);
      const { pem: csrPem } = opensslCsr(['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256'], { subj: '/CN=device-0001' });
      const csr = parseCsr(csrPem, LIMITS);
      const leaf = await issueClient(issuing, csr.publicKeySpki);
      const rootFile = file('root.pem', root.pem);
      const issuingFile = file('issuing.pem', issuing.pem);
      const leafFile = file('leaf.pem', leaf.pem);

      const v = openssl(['verify', '-x509_strict', '-purpose', 'sslclient', '-CAfile', rootFile, '-untrusted', issuingFile, leafFile]);
      assert.equal(v.status, 0, v.out);
      assert.match(v.out, /: OK/);
      const vi = openssl(['verify', '-x509_strict', '-CAfile', rootFile, issuingFile]);
      assert.equal(vi.status, 0, vi.out);

      const text = openssl(['x509', '-in', leafFile, '-noout', '-text']).out;
      assert.match(text, /Version: 3 \(0x2\)/);
      assert.match(text, /TLS Web Client Authentication/);
      assert.match(text, /Key Usage: critical\s+Digital Signature\n/);
      assert.match(text, /Basic Constraints: critical\s+CA:FALSE/);
      assert.match(text, /Subject Key Identifier/);
      assert.match(text, /Authority Key Identifier/);
      assert.match(text, /CRL Distribution Points:[\s\S]*URI:http:\/\/pki\.example\.com\/crl\/issuing\.crl/);
      assert.match(text, /OCSP - URI:http:\/\/pki\.example\.com\/ocsp/);
      assert.match(text, /Subject: O\s?=\s?Acme Devices, CN\s?=\s?device-0001/);
      const sigAlg = { 'ecdsa-p256': 'ecdsa-with-SHA256', 'ecdsa-p384': 'ecdsa-with-SHA384', 'rsa-3072': 'sha256WithRSAEncryption', ed25519: 'ED25519' }[algorithm];
      assert.match(text, new RegExp(`Signature Algorithm: ${sigAlg}`));

      const rootText = openssl(['x509', '-in', rootFile, '-noout', '-text']).out;
      assert.match(rootText, /Basic Constraints: critical\s+CA:TRUE, pathlen:1/);
      assert.match(rootText, /Key Usage: critical\s+Digital Signature, Certificate Sign, CRL Sign/);
      const issuingText = openssl(['x509', '-in', issuingFile, '-noout', '-text']).out;
      assert.match(issuingText, /CA:TRUE, pathlen:0/);

      // Node's own X509 agrees, and our parser reads back what we wrote.
      const x = new X509Certificate(leaf.der);
      assert.ok(x.verify(new X509Certificate(issuing.der).publicKey));
      assert.equal(x.serialNumber.toLowerCase(), leaf.serialHex);
      const info = parseCertificate(leaf.pem);
      assert.equal(info.serialHex, leaf.serialHex);
      assert.equal(info.subject, 'CN=device-0001,O=Acme Devices');
      assert.equal(info.subject, leaf.subject);
      assert.equal(info.issuer, `CN=Acme ${algorithm} Issuing CA,O=Acme ${algorithm}`);
      assert.equal(info.isCa, false);
      assert.equal(info.publicKeyFingerprint, csr.publicKeyFingerprint);
      assert.equal(info.authorityKeyIdentifier, parseCertificate(issuing.der).subjectKeyIdentifier);
      assert.deepEqual(info.notBefore, leaf.notBefore);
      assert.deepEqual(info.notAfter, leaf.notAfter);
      const rootInfo = parseCertificate(root.der);
      assert.equal(rootInfo.isCa, true);
      assert.equal(rootInfo.authorityKeyIdentifier, rootInfo.subjectKeyIdentifier);
    });
  }

  test('leaf keys of every accepted kind (P-384, RSA 2048, Ed25519) can be certified', async () => {
    const { root, issuing } = await caFor('ecdsa-p256');
    for (const keyArgs of [['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-384'], ['-newkey', 'rsa:2048'], ['-newkey', 'ed25519']]) {
      const csr = parseCsr(opensslCsr(keyArgs).pem, LIMITS);
      const leaf = await issueClient(issuing, csr.publicKeySpki);
      const v = openssl(['verify', '-CAfile', file('root.pem', root.pem), '-untrusted', file('issuing.pem', issuing.pem), file('leaf.pem', leaf.pem)]);
      assert.equal(v.status, 0, v.out);
    }
  });

  test('server certificate: SANs, serverAuth, works in an OpenSSL verify with -verify_hostname', async () => {
    const { root, issuing } = await caFor('ecdsa-p256');
    const server = await issueServerCertificate({ issuer: issuing, hostnames: ['fleetpass.example.com', '192.168.1.10', '2001:db8::1'], now: NOW });
    assert.ok(server.privateKeyPem?.includes('PRIVATE KEY'));
    assert.equal(splitPemChain(server.chainPem).length, 2);
    const leafFile = file('server.pem', server.pem);
    const base = ['verify', '-x509_strict', '-purpose', 'sslserver', '-CAfile', file('root.pem', root.pem), '-untrusted', file('issuing.pem', issuing.pem)];
    for (const host of ['localhost', 'fleetpass.example.com']) {
      const v = openssl([...base, '-verify_hostname', host, leafFile]);
      assert.equal(v.status, 0, v.out);
    }
    for (const ip of ['127.0.0.1', '::1', '192.168.1.10', '2001:db8::1']) {
      const v = openssl([...base, '-verify_ip', ip, leafFile]);
      assert.equal(v.status, 0, `${ip}: ${v.out}`);
    }
    assert.notEqual(openssl([...base, '-verify_hostname', 'evil.example.com', leafFile]).status, 0);
    const text = openssl(['x509', '-in', leafFile, '-noout', '-text']).out;
    assert.match(text, /TLS Web Server Authentication, TLS Web Client Authentication/);
    assert.match(text, /Digital Signature, Key Encipherment/);
    assert.deepEqual(parseCertificate(server.der).dnsNames, ['localhost', 'fleetpass.example.com']);
    assert.equal(parseCertificate(server.der).commonName, 'fleetpass.example.com');
  });

  test('URI SANs, country, OU, validity after 2049 uses GeneralizedTime', async () => {
    const { root, issuing } = await caFor('ecdsa-p256');
    const { publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const leaf = await issueClient(issuing, publicKey.export({ format: 'der', type: 'spki' }), {
      subject: { commonName: 'dev-ü', organization: 'Acme', organizationalUnit: 'Line 3', country: 'de' },
      uris: ['spiffe://acme/device/dev-1'],
      dnsNames: ['dev-1.local'],
      notAfter: new Date(Date.UTC(2051, 0, 1)),
    });
    const info = parseCertificate(leaf.der);
    assert.deepEqual(info.uris, ['spiffe://acme/device/dev-1']);
    assert.deepEqual(info.dnsNames, ['dev-1.local']);
    assert.equal(info.subject, 'CN=dev-ü,OU=Line 3,O=Acme,C=DE');
    assert.equal(leaf.subject, info.subject);
    assert.deepEqual(info.notAfter, new Date(Date.UTC(2051, 0, 1)));
    assert.equal(new X509Certificate(leaf.der).validTo, 'Jan  1 00:00:00 2051 GMT');
    // the root may expire before 2051; -no_check_time keeps this about encoding only
    const v = openssl(['verify', '-no_check_time', '-CAfile', file('root.pem', root.pem), '-untrusted', file('issuing.pem', issuing.pem), file('leaf.pem', leaf.pem)]);
    assert.equal(v.status, 0, v.out);
  });

  test('issuance input errors', async () => {
    const { issuing } = await caFor('ecdsa-p256');
    const spki = generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ format: 'der', type: 'spki' });
    await assert.rejects(issueClient(issuing, Buffer.from('nope')), (e: FleetpassError) => e.code === 'VALIDATION_FAILED');
    await assert.rejects(issueClient(issuing, spki, { notAfter: new Date(NOW.getTime() - DAY) }), (e: FleetpassError) => e.code === 'VALIDATION_FAILED');
    await assert.rejects(issueClient(issuing, spki, { dnsNames: ['bad name'] }), (e: FleetpassError) => e.code === 'VALIDATION_FAILED');
    await assert.rejects(issueClient(issuing, spki, { subject: { commonName: 'x', country: 'Germany' } }), (e: FleetpassError) => e.code === 'VALIDATION_FAILED');
    const other = await caFor('ecdsa-p384');
    await assert.rejects(issueClient({ ...issuing, signer: other.issuing.signer }, spki), /does not hold the key/);
  });

  test('10,000 issued certificates have unique, positive, 16-byte serials', async () => {
    const { issuing } = await caFor('ecdsa-p256');
    const spki = generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ format: 'der', type: 'spki' });
    const serials = new Set<string>();
    for (let i = 0; i < 10_000; i++) {
      const c = await issueClient(issuing, spki, { subject: { commonName: `device-${i}` } });
      assert.match(c.serialHex, /^(?:[1-7][0-9a-f]|0[1-9a-f])[0-9a-f]{30}$/);
      serials.add(c.serialHex);
    }
    assert.equal(serials.size, 10_000);
  });
});

// ---------------------------------------------------------------------------------------------
// CRL
// ---------------------------------------------------------------------------------------------

describe('CRL', () => {
  for (const algorithm of ['ecdsa-p256', 'rsa-3072'] as const) {
    test(`${algorithm}: openssl accepts the CRL; -crl_check rejects the revoked serial only`, async () => {
      const { root, issuing } = await caFor(algorithm);
      const spki = generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ format: 'der', type: 'spki' });
      const revoked = await issueClient(issuing, spki, { subject: { commonName: 'revoked-device' } });
      const good = await issueClient(issuing, spki, { subject: { commonName: 'good-device' } });
      const crl = await buildCrl({
        signer: issuing.signer,
        issuerCertificateDer: issuing.der,
        revoked: [
          { serialHex: revoked.serialHex, revokedAt: NOW, reasonCode: 1 },
          { serialHex: '0abc', revokedAt: new Date(NOW.getTime() - DAY) },
          { serialHex: 'ff01', revokedAt: new Date(NOW.getTime() - DAY), reasonCode: 4 },
        ],
        thisUpdate: NOW,
        nextUpdate: new Date(NOW.getTime() + 7 * DAY),
        crlNumber: 42n,
      });
      const crlFile = file('crl.der', crl);
      const caFile = file('ca.pem', issuing.pem);
      const check = openssl(['crl', '-inform', 'DER', '-in', crlFile, '-CAfile', caFile, '-noout']);
      assert.equal(check.status, 0, check.out);
      assert.match(check.out, /verify OK/);
      const text = openssl(['crl', '-inform', 'DER', '-in', crlFile, '-noout', '-text']).out;
      assert.match(text, /Version 2 \(0x1\)/);
      assert.match(text, /X509v3 CRL Number:\s+42/);
      assert.match(text, /X509v3 Authority Key Identifier/);
      assert.match(text, new RegExp(`Serial Number: ${revoked.serialHex.toUpperCase()}[\\s\\S]*?Key Compromise`));
      assert.match(text, /Serial Number: 0ABC/);
      assert.match(text, /Serial Number: FF01[\s\S]*?Superseded/);

      const crlPem = file('crl.pem', derToPem(crl, 'X509 CRL'));
      const base = ['verify', '-crl_check', '-CAfile', file('root.pem', root.pem), '-untrusted', caFile, '-CRLfile', crlPem];
      const bad = openssl([...base, file('revoked.pem', revoked.pem)]);
      assert.notEqual(bad.status, 0);
      assert.match(bad.out, /certificate revoked/);
      const ok = openssl([...base, file('good.pem', good.pem)]);
      assert.equal(ok.status, 0, ok.out);
    });
  }

  test('an empty CRL is valid too', async () => {
    const { issuing } = await caFor('ecdsa-p256');
    const crl = await buildCrl({ signer: issuing.signer, issuerCertificateDer: issuing.der, revoked: [], thisUpdate: NOW, nextUpdate: new Date(NOW.getTime() + DAY), crlNumber: 1n });
    const check = openssl(['crl', '-inform', 'DER', '-in', file('crl.der', crl), '-CAfile', file('ca.pem', issuing.pem), '-noout']);
    assert.equal(check.status, 0, check.out);
  });
});

// ---------------------------------------------------------------------------------------------
// verifyChain
// ---------------------------------------------------------------------------------------------

describe('verifyChain', () => {
  async function freshSpki(): Promise<Buffer> {
    return generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ format: 'der', type: 'spki' });
  }

  test('good chain through the issuing CA to the root anchor; issuing CA as anchor works too', async () => {
    const { root, issuing } = await caFor('ecdsa-p256');
    const leaf = await issueClient(issuing, await freshSpki());
    const r = verifyChain(leaf.der, [issuing.der], [{ id: 'other', der: (await caFor('ecdsa-p384')).root.der }, { id: 'root', der: root.der }], NOW);
    assert.equal(r.anchorId, 'root');
    assert.deepEqual(
      r.chain.map((c) => c.commonName),
      ['device-0001', 'Acme ecdsa-p256 Issuing CA', 'Acme ecdsa-p256 Root CA'],
    );
    const direct = verifyChain(leaf.der, [], [{ id: 'issuing', der: issuing.der }], NOW);
    assert.equal(direct.anchorId, 'issuing');
    assert.equal(direct.chain.length, 2);
    // unrelated and garbage intermediates are ignored
    const noisy = verifyChain(leaf.der, [Buffer.from('junk'), (await caFor('rsa-3072')).issuing.der, issuing.der], [{ id: 'root', der: root.der }], NOW);
    assert.equal(noisy.chain.length, 3);
  });

  test('missing intermediate or wrong CA → CERTIFICATE_UNTRUSTED', async () => {
    const { root, issuing } = await caFor('ecdsa-p256');
    const other = await caFor('ecdsa-p384');
    const leaf = await issueClient(issuing, await freshSpki());
    assertCode(() => verifyChain(leaf.der, [], [{ id: 'root', der: root.der }], NOW), 'CERTIFICATE_UNTRUSTED');
    assertCode(() => verifyChain(leaf.der, [issuing.der], [{ id: 'other', der: other.root.der }], NOW), 'CERTIFICATE_UNTRUSTED');
    assertCode(() => verifyChain(leaf.der, [issuing.der, other.issuing.der], [], NOW), 'CERTIFICATE_UNTRUSTED');
    assertCode(() => verifyChain(Buffer.from('garbage'), [], [{ id: 'root', der: root.der }], NOW), 'CERTIFICATE_UNTRUSTED');
  });

  test('leaf signed by an unrelated key with the same issuer name (and AKI) → CERTIFICATE_UNTRUSTED', async () => {
    const { root, issuing } = await caFor('ecdsa-p256');
    const impostorKey = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey;
    const forged = await issueClient({ ...issuing, signer: rawSigner(impostorKey, 'ecdsa-p256', issuing.signer.publicKeySpki) }, await freshSpki());
    assert.equal(parseCertificate(forged.der).issuer, parseCertificate(issuing.der).subject);
    assertCode(() => verifyChain(forged.der, [issuing.der], [{ id: 'root', der: root.der }], NOW), 'CERTIFICATE_UNTRUSTED');
    const v = openssl(['verify', '-CAfile', file('root.pem', root.pem), '-untrusted', file('issuing.pem', issuing.pem), file('forged.pem', forged.pem)]);
    assert.notEqual(v.status, 0, 'openssl agrees');

    // Same subject name, different key, self-signed "root": the genuine chain does not verify against it.
    const fakeRootSigner = rawSigner(generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey, 'ecdsa-p256');
    const fakeRoot = await createSelfSignedCa(fakeRootSigner, { commonName: 'Acme ecdsa-p256 Root CA', organization: 'Acme ecdsa-p256' }, new Date(NOW.getTime() - DAY), new Date(NOW.getTime() + DAY), 1);
    assert.equal(parseCertificate(fakeRoot.der).subject, parseCertificate(root.der).subject);
    const genuine = await issueClient(issuing, await freshSpki());
    assertCode(() => verifyChain(genuine.der, [issuing.der], [{ id: 'fake', der: fakeRoot.der }], NOW), 'CERTIFICATE_UNTRUSTED');
  });

  test('expired or not-yet-valid leaf → CERTIFICATE_EXPIRED', async () => {
    const { root, issuing } = await caFor('ecdsa-p256');
    const anchors = [{ id: 'root', der: root.der }];
    const expired = await issueClient(issuing, await freshSpki(), { notBefore: new Date(NOW.getTime() - 10 * DAY), notAfter: new Date(NOW.getTime() - DAY) });
    assertCode(() => verifyChain(expired.der, [issuing.der], anchors, NOW), 'CERTIFICATE_EXPIRED', /expired/);
    const future = await issueClient(issuing, await freshSpki(), { notBefore: new Date(NOW.getTime() + DAY) });
    assertCode(() => verifyChain(future.der, [issuing.der], anchors, NOW), 'CERTIFICATE_EXPIRED', /not valid before/);
    // the not-yet-valid leaf is fine once its window has started
    assert.equal(verifyChain(future.der, [issuing.der], anchors, new Date(NOW.getTime() + 2 * DAY)).anchorId, 'root');
  });

  test('expired intermediate → CERTIFICATE_EXPIRED', async () => {
    const { root } = await caFor('ecdsa-p256');
    const rootSigner = root.signer;
    const interSigner = await km.createKey('ecdsa-p256', 'short-lived intermediate');
    const inter = await issueCertificate({
      signer: rootSigner,
      issuerCertificateDer: root.der,
      subject: { commonName: 'Short Issuing CA' },
      publicKeySpki: interSigner.publicKeySpki,
      notBefore: new Date(NOW.getTime() - 30 * DAY),
      notAfter: new Date(NOW.getTime() - DAY),
      usage: 'ca',
      pathLength: 0,
    });
    const leaf = await issueClient({ signer: interSigner, der: inter.der, pem: inter.pem }, await freshSpki());
    assertCode(() => verifyChain(leaf.der, [inter.der], [{ id: 'root', der: root.der }], NOW), 'CERTIFICATE_EXPIRED', /Short Issuing CA/);
  });

  test('a non-CA issuer and pathLen violations → CERTIFICATE_UNTRUSTED', async () => {
    const { root, issuing } = await caFor('ecdsa-p256');
    // an end-entity certificate used as an issuer
    const eeSigner = await km.createKey('ecdsa-p256', 'end entity');
    const ee = await issueClient(issuing, eeSigner.publicKeySpki, { subject: { commonName: 'not-a-ca' } });
    const leaf = await issueClient({ signer: eeSigner, der: ee.der, pem: ee.pem }, await freshSpki());
    assertCode(() => verifyChain(leaf.der, [ee.der, issuing.der], [{ id: 'root', der: root.der }], NOW), 'CERTIFICATE_UNTRUSTED');

    // issuing CA has pathLen 0: a sub-CA below it is not allowed
    const subSigner = await km.createKey('ecdsa-p256', 'sub ca');
    const sub = await issueCertificate({
      signer: issuing.signer,
      issuerCertificateDer: issuing.der,
      subject: { commonName: 'Sub CA' },
      publicKeySpki: subSigner.publicKeySpki,
      notBefore: new Date(NOW.getTime() - DAY),
      notAfter: new Date(NOW.getTime() + DAY),
      usage: 'ca',
    });
    const deep = await issueClient({ signer: subSigner, der: sub.der, pem: sub.pem }, await freshSpki());
    assertCode(() => verifyChain(deep.der, [sub.der, issuing.der], [{ id: 'root', der: root.der }], NOW), 'CERTIFICATE_UNTRUSTED', /path length/);
    const v = openssl(['verify', '-CAfile', file('root.pem', root.pem), '-untrusted', file('chain.pem', sub.pem + issuing.pem), file('deep.pem', deep.pem)]);
    assert.notEqual(v.status, 0, 'openssl agrees');
    // the anchor's own pathLen is enforced too (as OpenSSL does)
    assertCode(() => verifyChain(deep.der, [sub.der], [{ id: 'issuing', der: issuing.der }], NOW), 'CERTIFICATE_UNTRUSTED', /path length/);
    // but the sub CA itself as anchor is fine
    assert.equal(verifyChain(deep.der, [], [{ id: 'sub', der: sub.der }], NOW).chain.length, 2);
  });

  test('chains longer than the maximum depth are refused', async () => {
    const rootSigner = await km.createKey('ecdsa-p256', 'deep root');
    const root = await createSelfSignedCa(rootSigner, { commonName: 'Deep Root' }, new Date(NOW.getTime() - DAY), new Date(NOW.getTime() + DAY));
    let parent: CaMaterial = { signer: rootSigner, der: root.der, pem: root.pem };
    const intermediates: Buffer[] = [];
    for (let i = 0; i < 5; i++) {
      const s = await km.createKey('ecdsa-p256', `deep ${i}`);
      const c = await issueCertificate({
        signer: parent.signer,
        issuerCertificateDer: parent.der,
        subject: { commonName: `Deep CA ${i}` },
        publicKeySpki: s.publicKeySpki,
        notBefore: new Date(NOW.getTime() - DAY),
        notAfter: new Date(NOW.getTime() + DAY),
        usage: 'ca',
      });
      intermediates.push(c.der);
      parent = { signer: s, der: c.der, pem: c.pem };
    }
    const leaf = await issueClient(parent, await freshSpki());
    assertCode(() => verifyChain(leaf.der, intermediates, [{ id: 'root', der: root.der }], NOW), 'CERTIFICATE_UNTRUSTED', /depth/);
    assert.equal(verifyChain(leaf.der, intermediates.slice(2), [{ id: 'mid', der: intermediates[1] as Buffer }], NOW).chain.length, 5);
  });
});

describe('parseCertificate', () => {
  test('garbage → VALIDATION_FAILED; PEM, base64 and DER accepted', async () => {
    const { root } = await caFor('ecdsa-p256');
    assertCode(() => parseCertificate('garbage'), 'VALIDATION_FAILED');
    assertCode(() => parseCertificate(Buffer.from([0x30, 0x00])), 'VALIDATION_FAILED');
    assertCode(() => parseCertificate(root.der.subarray(0, 100)), 'VALIDATION_FAILED');
    const a = parseCertificate(root.pem);
    assert.deepEqual(parseCertificate(root.der.toString('base64')), a);
    assert.deepEqual(parseCertificate(root.der), a);
    assert.equal(a.fingerprint, new X509Certificate(root.der).fingerprint256.replace(/:/g, '').toLowerCase());
  });
});

describe('certificate extensions (DER reader) match OpenSSL', () => {
  test('SAN (DNS, URI, email, IP), basicConstraints with pathlen, SKI and AKI', () => {
    const keyFile = file('ext-key.pem', '');
    const certFile = join(work, `${fileCounter++}-ext-cert.pem`);
    execFileSync('openssl', [
      'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', keyFile, '-out', certFile, '-days', '2',
      '-subj', '/O=Acme/CN=Acme Intermediate',
      '-addext', 'basicConstraints=critical,CA:true,pathlen:3',
      '-addext', 'subjectAltName=DNS:a.example.com,URI:urn:acme:device:1,email:ops@example.com,IP:10.0.0.1,DNS:b.example.com',
      '-addext', 'subjectKeyIdentifier=hash',
      '-addext', 'authorityKeyIdentifier=keyid:always',
    ], { cwd: work, stdio: ['ignore', 'ignore', 'pipe'] });
    const pem = readFileSync(certFile, 'utf8');
    const info = parseCertificate(pem);
    const x = new X509Certificate(pem);
    assert.deepEqual(info.dnsNames, ['a.example.com', 'b.example.com']);
    assert.deepEqual(info.uris, ['urn:acme:device:1']);
    assert.equal(info.isCa, true);
    assert.equal(x.ca, true);
    const text = openssl(['x509', '-in', certFile, '-noout', '-ext', 'subjectKeyIdentifier,authorityKeyIdentifier']).out;
    const hexIds = [...text.matchAll(/([0-9A-F]{2}(?::[0-9A-F]{2}){19})/g)].map((m) => m[1]!.replace(/:/g, '').toLowerCase());
    assert.equal(hexIds.length, 2, text);
    assert.equal(info.subjectKeyIdentifier, hexIds[0]);
    assert.equal(info.authorityKeyIdentifier, hexIds[1]);
  });

  test('a leaf without basicConstraints is not a CA; a malformed SAN is VALIDATION_FAILED', async () => {
    const { issuing } = await caFor('ecdsa-p256');
    const { publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const leaf = await issueClient(issuing, publicKey.export({ format: 'der', type: 'spki' }), { dnsNames: ['leaf.example.com'] });
    const info = parseCertificate(leaf.der);
    assert.equal(info.isCa, false);
    assert.deepEqual(info.dnsNames, ['leaf.example.com']);
    // Re-tag the SAN's SEQUENCE as a SET inside the (unsigned-over-here) structure: the reader refuses it.
    const san = Buffer.from([0x06, 0x03, 0x55, 0x1d, 0x11]);
    const at = leaf.der.indexOf(san);
    assert.ok(at > 0);
    const broken = Buffer.from(leaf.der);
    const octet = at + san.length;
    assert.equal(broken[octet], 0x04);
    broken[octet + 2] = 0x31;
    assertCode(() => parseCertificate(broken), 'VALIDATION_FAILED', /malformed|not a certificate/);
  });
});

describe('CSR public key import', () => {
  /** A CSR for a P-256 key whose SPKI carries `point` (signed with the real key), as sim/crypto builds them. */
  async function csrWithPoint(mutate: (point: Buffer) => Buffer): Promise<string> {
    const key = await newEcKey();
    const prefix = key.spki.subarray(0, key.spki.length - 66);
    const point = mutate(key.spki.subarray(key.spki.length - 65));
    const bitString = Buffer.concat([Buffer.from([0x03, point.length + 1, 0x00]), point]);
    const algId = prefix.subarray(2, 2 + 21);
    const spki = Buffer.concat([Buffer.from([0x30, algId.length + bitString.length]), algId, bitString]);
    return csrPem(buildCsr({ ...key, spki }, 'device-compressed'));
  }

  test('a compressed EC point is accepted (through the DER decoder)', async () => {
    const pem = await csrWithPoint((p) => {
      const y = p.subarray(33);
      return Buffer.concat([Buffer.from([(y[31]! & 1) === 1 ? 0x03 : 0x02]), p.subarray(1, 33)]);
    });
    const csr = parseCsr(pem, LIMITS);
    assert.deepEqual(csr.publicKey, { type: 'ec', curve: 'P-256', bits: 256 });
  });

  test('a point that is not on the curve → CSR_INVALID, not a crash', async () => {
    const pem = await csrWithPoint((p) => {
      const q = Buffer.from(p);
      q[64] = q[64]! ^ 0x01;
      return q;
    });
    assertCode(() => parseCsr(pem, LIMITS), 'CSR_INVALID', /public key/);
  });
});

describe('extension decoders refuse malformed DER', () => {
  const hex = (h: string) => Buffer.from(h.replace(/\s+/g, ''), 'hex');

  test('basicConstraints: DER booleans and pathLen in range only', () => {
    assert.deepEqual(decodeBasicConstraints(hex('3006 0101ff 020102')), { cA: true, pathLength: 2 });
    assert.deepEqual(decodeBasicConstraints(hex('3000')), { cA: false, pathLength: undefined });
    assert.throws(() => decodeBasicConstraints(hex('3003 010101')), /not a DER BOOLEAN/);
    assert.throws(() => decodeBasicConstraints(hex('3006 0101ff 0201ff')), /pathLenConstraint out of range/);
    assert.throws(() => decodeBasicConstraints(hex('3009 0101ff 020101 020101')), /extra fields/);
    assert.throws(() => decodeBasicConstraints(hex('3006 0101ff 020102 00')), /trailing data/);
  });

  test('subjectAltName: IA5 names only, never empty, GeneralName tags only', () => {
    assert.deepEqual(decodeSubjectAltName(hex('3007 820161 860275 3a')), { dnsNames: ['a'], uris: ['u:'] });
    assert.throws(() => decodeSubjectAltName(hex('3003 8201e9')), /not IA5/);
    assert.throws(() => decodeSubjectAltName(hex('3000')), /empty/);
    assert.throws(() => decodeSubjectAltName(hex('3003 0c0161')), /not a GeneralName/);
  });

  test('Extensions: two or three fields per extension, an OCTET STRING value', () => {
    // SEQUENCE { SEQUENCE { OID 2.5.29.19, OCTET STRING { SEQUENCE {} } } }
    assert.deepEqual(readExtensions(readExact(hex('300b 3009 0603551d13 04023000'))), [{ id: '2.5.29.19', value: hex('3000') }]);
    assert.throws(() => readExtensions(readExact(hex('3007 3005 0603551d13'))), /wrong number of fields/);
    assert.throws(() => readExtensions(readExact(hex('300b 3009 0603551d13 0c023000'))), /extension value/);
  });
});
