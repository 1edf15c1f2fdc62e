/** PKCS#7 certs-only, csrattrs, server key generation and renewal-name checks, read back with openssl. */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { FleetpassError } from '../../src/core/errors.js';
import { certsOnlyPkcs7, csrAttributes, describePublicKey, generateKeyPairLike, parseCsr, pemToDer, renewalNameMismatch, renewalNamesOf } from '../../src/pki/index.js';
import { makeCa, makeLeaf, openssl, tempDir } from '../helpers/openssl.js';

describe('EST PKI helpers', () => {
  const dir = tempDir('fp-est-pki-');
  makeCa(dir, 'ca');

  it('certsOnlyPkcs7 is a SignedData without signers that openssl prints the certificates of', () => {
    const a = makeLeaf(dir, 'ca', 'a', 'device-a');
    const b = makeLeaf(dir, 'ca', 'b', 'device-b');
    writeFileSync(join(dir, 'two.p7b'), certsOnlyPkcs7([pemToDer(a.certPem, 'CERTIFICATE'), pemToDer(b.certPem, 'CERTIFICATE')]));
    const printed = openssl(['pkcs7', '-inform', 'DER', '-in', 'two.p7b', '-print_certs'], { cwd: dir });
    assert.match(printed, /subject=CN = device-a/);
    assert.match(printed, /subject=CN = device-b/);
    assert.match(openssl(['pkcs7', '-inform', 'DER', '-in', 'two.p7b', '-print', '-noout'], { cwd: dir }), /signer_info:\s*<EMPTY>/);
    assert.throws(() => certsOnlyPkcs7([]), FleetpassError);
  });

  it('csrAttributes names the key type and signature algorithm', () => {
    const show = (der: Buffer) => {
      writeFileSync(join(dir, 'attrs.der'), der);
      return openssl(['asn1parse', '-inform', 'DER', '-in', 'attrs.der'], { cwd: dir });
    };
    assert.match(show(csrAttributes({ type: 'ec', curve: 'P-384' })), /ecdsa-with-SHA384[\s\S]*id-ecPublicKey[\s\S]*secp384r1/);
    assert.match(show(csrAttributes({ type: 'rsa', bits: 3072 })), /sha256WithRSAEncryption[\s\S]*rsaEncryption[\s\S]*INTEGER\s+:0C00/);
    assert.match(show(csrAttributes({ type: 'ed25519' })), /ED25519/);
  });

  it('generateKeyPairLike makes the same kind of key (never a weaker RSA)', async () => {
    const kinds = [
      [{ type: 'ec', curve: 'P-384', bits: 384 }, 'P-384'],
      [{ type: 'ed25519', bits: 256 }, 'ed25519'],
      [{ type: 'rsa', bits: 1024 }, 'rsa-2048'],
      [undefined, 'P-256'],
    ] as const;
    for (const [like, expected] of kinds) {
      const made = await generateKeyPairLike(like, 2048);
      const info = describePublicKey(made.spki);
      const got = info.type === 'ec' ? info.curve : info.type === 'rsa' ? `rsa-${info.bits}` : info.type;
      assert.equal(got, expected);
      writeFileSync(join(dir, 'made.der'), made.pkcs8);
      openssl(['pkey', '-inform', 'DER', '-in', 'made.der', '-noout'], { cwd: dir });
    }
  });

  it('renewalNameMismatch compares subject and subjectAltName exactly; renewalNamesOf reads them back', () => {
    const leaf = makeLeaf(dir, 'ca', 'named', 'dev-1');
    // A certificate with SANs, made by openssl.
    writeFileSync(join(dir, 'san.ext'), 'subjectAltName=URI:urn:fleetpass:device:dev-1,DNS:dev-1.example\n');
    openssl(['x509', '-req', '-in', 'named.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'san.pem', '-days', '30', '-extfile', 'san.ext'], { cwd: dir });
    const certPem = openssl(['x509', '-in', 'san.pem'], { cwd: dir });
    const same = (subj: string, san?: string) => {
      openssl(['req', '-new', '-key', leaf.keyFile, '-subj', subj, ...(san ? ['-addext', `subjectAltName=${san}`] : []), '-out', 'r.csr'], { cwd: dir });
      return renewalNameMismatch(parseCsr(openssl(['req', '-in', 'r.csr'], { cwd: dir })), certPem);
    };
    assert.equal(same('/CN=dev-1', 'DNS:DEV-1.example,URI:urn:fleetpass:device:dev-1'), undefined, 'order and DNS case do not matter');
    assert.match(same('/CN=dev-2', 'URI:urn:fleetpass:device:dev-1,DNS:dev-1.example') ?? '', /subject/);
    assert.match(same('/CN=dev-1') ?? '', /subjectAltName/);
    assert.match(same('/CN=dev-1', 'URI:urn:fleetpass:device:dev-1') ?? '', /subjectAltName/);
    assert.match(same('/O=x/CN=dev-1', 'URI:urn:fleetpass:device:dev-1,DNS:dev-1.example') ?? '', /subject/);
    const names = renewalNamesOf(certPem);
    assert.deepEqual(names, { subject: { commonName: 'dev-1' }, dnsNames: ['dev-1.example'], uris: ['urn:fleetpass:device:dev-1'] });
  });
});
