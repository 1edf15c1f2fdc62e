/**
 * EST (RFC 7030 / RFC 8951) end to end. The device side is only curl and openssl (plus sh/awk to cut
 * a multipart answer): exactly what docs/protocols/est.md walks through.
 */
import { it, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import { createServer, type Server } from 'node:http';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { deviceSettingKeys, renewalForceSettingKey, serverKeygenSettingKey } from '../../src/provisioning/pipeline.js';
import { describeEachBackend } from '../helpers/backends.js';
import { makeCa, makeLeaf, openssl, tempDir } from '../helpers/openssl.js';
import { startTestServer, type TestServer } from '../helpers/server.js';

const execFileAsync = promisify(execFile);

interface CurlResult {
  status: number;
  headers: Record<string, string>;
  body: string;
  bodyFile: string;
}

/** curl as a child process (async: the server under test shares this event loop). */
async function curl(dir: string, args: string[]): Promise<CurlResult> {
  const id = Math.random().toString(36).slice(2);
  const headerFile = join(dir, `curl-${id}.headers`);
  const bodyFile = join(dir, `curl-${id}.body`);
  const { stdout } = await execFileAsync('curl', ['-sS', '--max-time', '30', '-H', 'Expect:', '-D', headerFile, '-o', bodyFile, '-w', '%{http_code}', ...args], { encoding: 'utf8' });
  const blocks = readFileSync(headerFile, 'utf8').split(/\r?\n\r?\n/).filter((b) => b.startsWith('HTTP/'));
  const headers: Record<string, string> = {};
  for (const line of (blocks[blocks.length - 1] ?? '').split(/\r?\n/).slice(1)) {
    const i = line.indexOf(':');
    if (i > 0) headers[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim();
  }
  let body: string;
  try {
    body = readFileSync(bodyFile, 'utf8');
  } catch {
    body = ''; // no body was written (e.g. the connection closed early)
  }
  return { status: Number(stdout.trim()), headers, body, bodyFile };
}

/** A shell step of the device (openssl, awk, tr; never curl — that goes through curl() above). */
function sh(dir: string, script: string, env: Record<string, string> = {}): string {
  return execFileSync('sh', ['-c', script], { cwd: dir, encoding: 'utf8', env: { ...process.env, ...env }, stdio: ['pipe', 'pipe', 'pipe'] });
}

/** base64(HMAC-SHA256(key, data)) computed by openssl, as a device script would. */
function opensslHmacB64(keyB64: string, data: string): string {
  const hexkey = Buffer.from(keyB64, 'base64').toString('hex');
  return execFileSync('sh', ['-c', `printf '%s' "$DATA" | openssl dgst -sha256 -mac HMAC -macopt hexkey:${hexkey} -binary | openssl base64 -A`], { encoding: 'utf8', env: { ...process.env, DATA: data } }).trim();
}

/** The certificate in a base64 certs-only PKCS#7 file, as PEM, via openssl pkcs7 -print_certs. */
function certFromPkcs7(dir: string, b64File: string, outPem: string): string {
  sh(dir, `openssl base64 -d -in '${b64File}' -out '${outPem}.p7b' && openssl pkcs7 -inform DER -in '${outPem}.p7b' -print_certs -out '${outPem}'`);
  return readFileSync(join(dir, outPem), 'utf8');
}

function x509(dir: string, pemFile: string, ...args: string[]): string {
  return openssl(['x509', '-in', pemFile, '-noout', ...args], { cwd: dir }).trim();
}

/** The public key of a certificate or a private key, as PEM: to compare which key a certificate carries. */
const certPub = (dir: string, pemFile: string) => openssl(['x509', '-in', pemFile, '-noout', '-pubkey'], { cwd: dir });
const keyPub = (dir: string, keyFile: string) => openssl(['pkey', '-in', keyFile, '-pubout'], { cwd: dir });

/** A key and CSR made by openssl; the CSR also as base64 DER in three wire forms RFC 8951 allows. */
function csr(dir: string, name: string, subject = '/CN=device', keyArgs = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256']): { key: string; oneLine: string; wrapped: string; crlf: string } {
  openssl(['req', '-new', ...keyArgs, '-nodes', '-keyout', `${name}.key`, '-subj', subject, '-outform', 'DER', '-out', `${name}.der`], { cwd: dir });
  sh(dir, `openssl base64 -A -in ${name}.der > ${name}.b64 && openssl base64 -in ${name}.der > ${name}.wrapped.b64 && openssl base64 -in ${name}.der | sed 's/$/\\r/' > ${name}.crlf.b64`);
  return { key: join(dir, `${name}.key`), oneLine: join(dir, `${name}.b64`), wrapped: join(dir, `${name}.wrapped.b64`), crlf: join(dir, `${name}.crlf.b64`) };
}

/** A re-enrollment CSR: the current certificate's subject and SANs (openssl x509 -x509toreq), signed by `keyFile`. */
function renewalCsr(dir: string, certFile: string, keyFile: string, name: string): string {
  sh(dir, `openssl x509 -x509toreq -in '${certFile}' -key '${keyFile}' -copy_extensions copyall -out ${name}.csr && openssl req -in ${name}.csr -outform DER | openssl base64 > ${name}.b64`);
  return join(dir, `${name}.b64`);
}

/** A factory certificate with a validity window in the past, made by `openssl ca` (openssl x509 cannot backdate). */
function expiredLeaf(dir: string, ca: string, name: string, cn: string): { certFile: string; keyFile: string } {
  const caDir = join(dir, `${name}-ca`);
  mkdirSync(join(caDir, 'newcerts'), { recursive: true });
  writeFileSync(join(caDir, 'index.txt'), '');
  writeFileSync(join(caDir, 'serial'), '1000\n');
  writeFileSync(join(caDir, 'ca.cnf'), `[ca]\ndefault_ca = d\n[d]\ndir = ${caDir}\ndatabase = $dir/index.txt\nnew_certs_dir = $dir/newcerts\nserial = $dir/serial\ndefault_md = sha256\npolicy = p\nunique_subject = no\n[p]\ncommonName = supplied\n`);
  openssl(['req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${cn}`], { cwd: dir });
  openssl(['ca', '-batch', '-config', join(caDir, 'ca.cnf'), '-cert', `${ca}.pem`, '-keyfile', `${ca}.key`, '-in', `${name}.csr`, '-out', `${name}.pem`, '-startdate', '20200101000000Z', '-enddate', '20210101000000Z', '-notext'], { cwd: dir });
  return { certFile: join(dir, `${name}.pem`), keyFile: join(dir, `${name}.key`) };
}

function assertEstError(r: CurlResult, status: number, code: string): void {
  assert.equal(r.status, status, `${code}: got ${r.status} ${r.body}`);
  assert.match(r.headers['content-type'] ?? '', /^text\/plain/, `${code}: text/plain body`);
  assert.ok(r.body.startsWith(`${code}: `), `expected "${code}: …", got "${r.body}"`);
  if (status === 401) assert.equal(r.headers['www-authenticate'], 'Basic realm="fleetpass-est", charset="UTF-8"');
}

describeEachBackend('EST with openssl and curl', (ctx) => {
  let srv: TestServer;
  let dir: string;
  let est: string;
  let caFile: string;
  /** curl options of a device that pins the CA bundle it got from /cacerts. */
  const tls = () => ['--cacert', caFile];
  const pkcs10 = ['-H', 'content-type: application/pkcs10'];
  const enroll = (args: string[], path = 'simpleenroll') => curl(dir, [...tls(), ...pkcs10, ...args, `${est}/${path}`]);

  before(async () => {
    srv = await startTestServer(ctx().url);
    dir = tempDir('fp-est-');
    est = `${srv.url}/.well-known/est`;
    caFile = join(dir, 'fleetpass-ca.pem');
    // RFC 7030 section 4.1.1 bootstrap: fetch /cacerts without trust, check it out of band, then pin it.
    const got = await curl(dir, ['-k', `${est}/cacerts`]);
    assert.equal(got.status, 200, got.body);
    certFromPkcs7(dir, got.bodyFile, 'fleetpass-ca.pem');
  });
  after(async () => {
    await srv?.close();
  });

  it('GET cacerts: a certs-only PKCS#7 that openssl pkcs7 -print_certs turns into the issuing chain', async () => {
    const r = await curl(dir, [...tls(), `${est}/cacerts`]);
    assert.equal(r.status, 200);
    assert.equal(r.headers['content-type'], 'application/pkcs7-mime');
    assert.match(r.body, /^[A-Za-z0-9+/=\n]+$/, 'base64 in lines');
    const chain = certFromPkcs7(dir, r.bodyFile, 'cacerts.pem');
    assert.match(chain, /subject=O = Fleetpass, CN = Fleetpass Issuing CA/);
    assert.match(chain, /subject=O = Fleetpass, CN = Fleetpass Root CA/);
    // The same two certificates as /ca.pem.
    const fp = (pem: string) => [...pem.matchAll(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g)].map((m) => m[0].replace(/\s+/g, '')).sort();
    assert.deepEqual(fp(chain), fp(srv.caPem));
    // A no-signer SignedData: openssl sees no signer infos.
    const printed = openssl(['pkcs7', '-inform', 'DER', '-in', 'cacerts.pem.p7b', '-print', '-noout'], { cwd: dir });
    assert.match(printed, /type: pkcs7-signedData/);
    assert.match(printed, /signer_info:\s*<EMPTY>/);
    // Any label answers the same chain.
    const labelled = await curl(dir, [...tls(), `${est}/any-label/cacerts`]);
    assert.equal(labelled.status, 200);
    assert.equal(labelled.body, r.body);
  });

  it('GET csrattrs: asks for a P-256 key signed with ECDSA-SHA256', async () => {
    const r = await curl(dir, [...tls(), `${est}/csrattrs`]);
    assert.equal(r.status, 200);
    assert.equal(r.headers['content-type'], 'application/csrattrs');
    const parsed = sh(dir, `openssl base64 -d -in '${r.bodyFile}' | openssl asn1parse -inform DER`);
    assert.match(parsed, /:ecdsa-with-SHA256/);
    assert.match(parsed, /:id-ecPublicKey/);
    assert.match(parsed, /:prime256v1/);
  });

  it('simpleenroll with a factory certificate: parameters in the query, retries answered with the same certificate, the label selects the group', async () => {
    const caPem = makeCa(dir, 'mfg');
    const main = await srv.admin('POST', '/enrollment-groups', {
      name: 'acme', attestation: { type: 'x509-ca', caCertificatePem: caPem },
      template: { deviceName: '${model}-${registrationId}', groups: ['main'], configuration: { line: 'main' }, validation: { allowedRegions: ['eu', 'us'], minFirmware: { '*': '1.0.0' } } },
    });
    assert.equal(main.status, 201, main.text);
    const lab = await srv.admin('POST', '/enrollment-groups', { name: 'acme-lab', attestation: { type: 'x509-ca', caCertificatePem: caPem }, template: { groups: ['lab'], configuration: { line: 'lab' } } });
    assert.equal(lab.status, 201, lab.text);

    const factory = makeLeaf(dir, 'mfg', 'factory-1', 'SN-EST-1');
    const req = csr(dir, 'op-1');
    const args = ['--cert', factory.certFile, '--key', factory.keyFile, '--data-binary', `@${req.oneLine}`];
    const first = await curl(dir, [...tls(), ...pkcs10, ...args, `${est}/simpleenroll?model=thermo&firmwareVersion=1.2.0&region=eu`]);
    assert.equal(first.status, 200, first.body);
    assert.equal(first.headers['content-type'], 'application/pkcs7-mime; smime-type=certs-only');
    const pem = certFromPkcs7(dir, first.bodyFile, 'est-1.pem');
    assert.match(openssl(['verify', '-CAfile', caFile, '-purpose', 'sslclient', 'est-1.pem'], { cwd: dir }), /est-1\.pem: OK/);
    assert.equal(certPub(dir, 'est-1.pem'), keyPub(dir, req.key), 'the certificate carries the CSR key');
    const device = (await srv.admin('GET', '/devices?registrationId=SN-EST-1')).json.items[0];
    assert.equal(device.name, 'thermo-SN-EST-1');
    assert.deepEqual(device.groups, ['main']);
    assert.match(x509(dir, 'est-1.pem', '-subject'), new RegExp(`CN ?= ?${device.id}`));

    // The answer was lost: the same request again gets the same certificate.
    const again = await curl(dir, [...tls(), ...pkcs10, ...args, `${est}/simpleenroll?model=thermo&firmwareVersion=1.2.0&region=eu`]);
    assert.equal(again.status, 200, again.body);
    assert.equal(certFromPkcs7(dir, again.bodyFile, 'est-1b.pem'), pem);
    assert.equal((await srv.admin('GET', `/certificates?deviceId=${device.id}`)).json.items.length, 1);

    // Template rules apply as on every door.
    const noRegion = await enroll(['--cert', makeLeaf(dir, 'mfg', 'factory-2', 'SN-EST-2').certFile, '--key', join(dir, 'factory-2.key'), '--data-binary', `@${csr(dir, 'op-2').oneLine}`]);
    assertEstError(noRegion, 422, 'REGION_MISMATCH');

    // The label path: the same CA, but the enrollment group named by the label.
    const f3 = makeLeaf(dir, 'mfg', 'factory-3', 'SN-EST-LAB');
    const labelled = await curl(dir, [...tls(), ...pkcs10, '--cert', f3.certFile, '--key', f3.keyFile, '--data-binary', `@${csr(dir, 'op-3').wrapped}`, `${est}/acme-lab/simpleenroll`]);
    assert.equal(labelled.status, 200, labelled.body);
    const labDevice = (await srv.admin('GET', '/devices?registrationId=SN-EST-LAB')).json.items[0];
    assert.equal(labDevice.enrollmentId, lab.json.id);
    assert.deepEqual(labDevice.groups, ['lab']);
    const unknown = await curl(dir, [...tls(), ...pkcs10, '--cert', f3.certFile, '--key', f3.keyFile, '--data-binary', `@${csr(dir, 'op-3b').oneLine}`, `${est}/no-such-group/simpleenroll`]);
    assertEstError(unknown, 403, 'ENROLLMENT_NOT_FOUND');

    const attempts = await srv.admin('GET', '/attempts?registrationId=SN-EST-1');
    assert.deepEqual(attempts.json.items.map((a: { protocol: string; outcome: string }) => `${a.protocol}:${a.outcome}`), ['est:success', 'est:success']);
  });

  it('simpleenroll with HTTP Basic and a one-time token (CSR with line breaks and Content-Transfer-Encoding); a replay with another key is refused', async () => {
    const created = await srv.admin('POST', '/enrollments', { registrationId: 'SN-EST-TOK', attestation: { type: 'token' } });
    assert.equal(created.status, 201, created.text);
    const token: string = created.json.token;
    const req = csr(dir, 'tok');
    const args = ['-u', `SN-EST-TOK:${token}`, '-H', 'Content-Transfer-Encoding: base64', '--data-binary', `@${req.crlf}`];
    const first = await enroll(args);
    assert.equal(first.status, 200, first.body);
    const pem = certFromPkcs7(dir, first.bodyFile, 'tok.pem');
    assert.equal(certPub(dir, 'tok.pem'), keyPub(dir, req.key));
    const retry = await enroll(args);
    assert.equal(retry.status, 200, retry.body);
    assert.equal(certFromPkcs7(dir, retry.bodyFile, 'tok-2.pem'), pem);

    const thief = await enroll(['-u', `SN-EST-TOK:${token}`, '--data-binary', `@${csr(dir, 'thief').oneLine}`]);
    assertEstError(thief, 401, 'TOKEN_REPLAYED');
    const wrongUser = await enroll(['-u', `SN-OTHER:${token}`, '--data-binary', `@${req.oneLine}`]);
    assertEstError(wrongUser, 403, 'REGISTRATION_ID_MISMATCH');
    const unknown = await enroll(['-u', 'SN-EST-TOK:fpt_not-a-token', '--data-binary', `@${req.oneLine}`]);
    assertEstError(unknown, 401, 'TOKEN_INVALID');
    const failures = await srv.admin('GET', '/attempts?registrationId=SN-EST-TOK&outcome=failure');
    assert.ok(failures.json.items.some((a: { reasonCode: string; protocol: string }) => a.reasonCode === 'TOKEN_REPLAYED' && a.protocol === 'est'));
  });

  it('simpleenroll with HTTP Basic and a symmetric-key-derived device key on the label path of its group', async () => {
    const g = await srv.admin('POST', '/enrollment-groups', { name: 'sensors', attestation: { type: 'symmetric-key' } });
    assert.equal(g.status, 201, g.text);
    const deviceKey = opensslHmacB64(g.json.primaryKey, 'sensor-7');
    const req = csr(dir, 'sym');
    const ok = await curl(dir, [...tls(), ...pkcs10, '-u', `sensor-7:${deviceKey}`, '--data-binary', `@${req.oneLine}`, `${est}/sensors/simpleenroll`]);
    assert.equal(ok.status, 200, ok.body);
    certFromPkcs7(dir, ok.bodyFile, 'sym.pem');
    assert.match(openssl(['verify', '-CAfile', caFile, 'sym.pem'], { cwd: dir }), /OK/);
    // The group key itself is not the device key; and without the label no group is tried.
    assertEstError(await curl(dir, [...tls(), ...pkcs10, '-u', `sensor-8:${g.json.primaryKey}`, '--data-binary', `@${csr(dir, 'sym-2').oneLine}`, `${est}/sensors/simpleenroll`]), 401, 'ATTESTATION_FAILED');
    assertEstError(await curl(dir, [...tls(), ...pkcs10, '-u', `sensor-7:${deviceKey}`, '--data-binary', `@${req.oneLine}`, `${est}/simpleenroll`]), 401, 'ATTESTATION_FAILED');
    // An individual symmetric-key enrollment: the key itself is the password, no label needed.
    const ind = await srv.admin('POST', '/enrollments', { registrationId: 'sensor-ind', attestation: { type: 'symmetric-key' } });
    assert.equal(ind.status, 201, ind.text);
    const indOk = await enroll(['-u', `sensor-ind:${ind.json.primaryKey}`, '--data-binary', `@${csr(dir, 'sym-ind').oneLine}`]);
    assert.equal(indOk.status, 200, indOk.body);
  });

  it('simplereenroll: renewal with the same key inside the window, a retry with the old certificate, then a rekey', async () => {
    const caPem = makeCa(dir, 'mfg-short', '/O=Short Lived/CN=mfg-short');
    const g = await srv.admin('POST', '/enrollment-groups', { name: 'short', attestation: { type: 'x509-ca', caCertificatePem: caPem }, template: { certificateProfile: { validityDays: 10, organization: 'Acme' } } });
    assert.equal(g.status, 201, g.text);
    const factory = makeLeaf(dir, 'mfg-short', 'factory-r', 'SN-RENEW');
    const req = csr(dir, 'renew-0');
    const first = await enroll(['--cert', factory.certFile, '--key', factory.keyFile, '--data-binary', `@${req.oneLine}`]);
    assert.equal(first.status, 200, first.body);
    certFromPkcs7(dir, first.bodyFile, 'renew-0.pem');
    const subject0 = x509(dir, 'renew-0.pem', '-subject');
    const san0 = x509(dir, 'renew-0.pem', '-ext', 'subjectAltName');
    assert.match(subject0, /O ?= ?Acme/);

    // 10-day certificate, 30-day window: due. Same key, names copied from the certificate.
    const renewCsr = renewalCsr(dir, join(dir, 'renew-0.pem'), req.key, 'renew-1');
    const reArgs = ['--cert', join(dir, 'renew-0.pem'), '--key', req.key, '--data-binary', `@${renewCsr}`];
    const renewed = await enroll(reArgs, 'simplereenroll');
    assert.equal(renewed.status, 200, renewed.body);
    assert.equal(renewed.headers['content-type'], 'application/pkcs7-mime; smime-type=certs-only');
    certFromPkcs7(dir, renewed.bodyFile, 'renew-1.pem');
    assert.equal(x509(dir, 'renew-1.pem', '-subject'), subject0);
    assert.equal(x509(dir, 'renew-1.pem', '-ext', 'subjectAltName'), san0);
    assert.notEqual(x509(dir, 'renew-1.pem', '-serial'), x509(dir, 'renew-0.pem', '-serial'));
    assert.equal(certPub(dir, 'renew-1.pem'), keyPub(dir, req.key));
    assert.match(openssl(['verify', '-CAfile', caFile, '-purpose', 'sslclient', 'renew-1.pem'], { cwd: dir }), /OK/);

    const deviceId = (await srv.admin('GET', '/devices?registrationId=SN-RENEW')).json.items[0].id as string;
    const serial = (f: string) => x509(dir, f, '-serial').replace(/^serial=/, '').toLowerCase().replace(/^0+/, '');
    const statuses = async () => Object.fromEntries((await srv.admin('GET', `/certificates?deviceId=${deviceId}`)).json.items.map((c: { serial: string; status: string }) => [c.serial.replace(/^0+/, ''), c.status]));
    assert.deepEqual(await statuses(), { [serial('renew-0.pem')]: 'superseded', [serial('renew-1.pem')]: 'active' });

    // The answer was lost: the device retries with its old certificate and the same CSR.
    const retry = await enroll(reArgs, 'simplereenroll');
    assert.equal(retry.status, 200, retry.body);
    certFromPkcs7(dir, retry.bodyFile, 'renew-1b.pem');
    assert.equal(serial('renew-1b.pem'), serial('renew-1.pem'));
    // The superseded certificate is not revoked: it is not on the CRL.
    const crl = await curl(dir, [...tls(), `${srv.url}/crl/${srv.fp.authority.issuing.id}.crl`]);
    assert.equal(crl.status, 200);
    const crlText = openssl(['crl', '-inform', 'DER', '-in', crl.bodyFile, '-noout', '-text'], { cwd: dir });
    assert.doesNotMatch(crlText.toLowerCase(), new RegExp(serial('renew-0.pem')));

    // Rekey: a new key, the renewed certificate's names.
    openssl(['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', 'renew-2.key'], { cwd: dir });
    const rekeyCsr = renewalCsr(dir, join(dir, 'renew-1.pem'), join(dir, 'renew-2.key'), 'renew-2');
    const rekeyed = await enroll(['--cert', join(dir, 'renew-1.pem'), '--key', req.key, '--data-binary', `@${rekeyCsr}`], 'simplereenroll');
    assert.equal(rekeyed.status, 200, rekeyed.body);
    certFromPkcs7(dir, rekeyed.bodyFile, 'renew-2.pem');
    assert.equal(certPub(dir, 'renew-2.pem'), keyPub(dir, join(dir, 'renew-2.key')));
    assert.equal(x509(dir, 'renew-2.pem', '-subject'), subject0);
    const self = await curl(dir, [...tls(), '--cert', join(dir, 'renew-2.pem'), '--key', join(dir, 'renew-2.key'), `${srv.url}/v1/devices/self`]);
    assert.equal(self.status, 200, self.body);
    assert.equal(JSON.parse(self.body).deviceId, deviceId);
    const old = await curl(dir, [...tls(), '--cert', join(dir, 'renew-1.pem'), '--key', req.key, `${srv.url}/v1/devices/self`]);
    assert.equal(old.status, 401, 'a superseded certificate no longer identifies the device');
    assert.equal(Object.values(await statuses()).filter((s) => s === 'active').length, 1);

    const attempts = (await srv.admin('GET', '/attempts?registrationId=SN-RENEW&outcome=success')).json.items.map((a: { protocol: string; message: string | null }) => `${a.protocol}:${a.message ?? ''}`);
    assert.ok(attempts.some((m: string) => /^est:renewed \(same key\)/.test(m)), attempts.join('\n'));
    assert.ok(attempts.some((m: string) => /^est:retry answered/.test(m)), attempts.join('\n'));
    assert.ok(attempts.some((m: string) => /^est:rekeyed/.test(m)), attempts.join('\n'));
    const audit = (await srv.admin('GET', '/audit-events?limit=1000')).json.items.filter((e: { resourceType: string; actor: string }) => e.actor === `device:${deviceId}`).map((e: { action: string }) => e.action);
    assert.deepEqual(audit, ['certificate.renew', 'certificate.rekey']);
  });

  it('simplereenroll: eight concurrent copies of one renewal issue exactly one certificate', async () => {
    const created = await srv.admin('POST', '/enrollments', { registrationId: 'SN-RACE', attestation: { type: 'token' } });
    const req = csr(dir, 'race-0');
    const first = await enroll(['-u', `SN-RACE:${created.json.token}`, '--data-binary', `@${req.oneLine}`]);
    assert.equal(first.status, 200, first.body);
    certFromPkcs7(dir, first.bodyFile, 'race-0.pem');
    const deviceId = (await srv.admin('GET', '/devices?registrationId=SN-RACE')).json.items[0].id as string;
    await srv.admin('POST', `/devices/${deviceId}/renewal`, { force: true });
    const renewal = renewalCsr(dir, join(dir, 'race-0.pem'), req.key, 'race-1');
    const answers = await Promise.all(Array.from({ length: 8 }, () => enroll(['--cert', join(dir, 'race-0.pem'), '--key', req.key, '--data-binary', `@${renewal}`], 'simplereenroll')));
    for (const a of answers) assert.equal(a.status, 200, a.body);
    assert.equal(new Set(answers.map((a) => a.body)).size, 1, 'every copy got the same certificate');
    const certs = (await srv.admin('GET', `/certificates?deviceId=${deviceId}`)).json.items.map((c: { status: string }) => c.status).sort();
    assert.deepEqual(certs, ['active', 'superseded']);
  });

  it('simplereenroll outside the window needs an operator force, which is audited, tenant-scoped and used once', async () => {
    const created = await srv.admin('POST', '/enrollments', { registrationId: 'SN-FORCE', attestation: { type: 'token' } });
    const req = csr(dir, 'force-0');
    const first = await enroll(['-u', `SN-FORCE:${created.json.token}`, '--data-binary', `@${req.oneLine}`]);
    assert.equal(first.status, 200, first.body);
    certFromPkcs7(dir, first.bodyFile, 'force-0.pem');
    const reArgs = ['--cert', join(dir, 'force-0.pem'), '--key', req.key, '--data-binary', `@${renewalCsr(dir, join(dir, 'force-0.pem'), req.key, 'force-1')}`];
    assertEstError(await enroll(reArgs, 'simplereenroll'), 403, 'RENEWAL_NOT_DUE');

    const deviceId = (await srv.admin('GET', '/devices?registrationId=SN-FORCE')).json.items[0].id as string;
    const status = await srv.admin('GET', `/devices/${deviceId}/renewal`);
    assert.equal(status.status, 200, status.text);
    assert.equal(status.json.renewable, false);
    assert.equal(status.json.windowDays, 30);
    // Another tenant cannot see or force this device.
    const other = await srv.admin('POST', '/tenants', { name: 'other-tenant' });
    assert.equal(other.status, 201, other.text);
    assert.equal((await srv.admin('POST', `/devices/${deviceId}/renewal`, { force: true }, other.json.adminToken)).status, 404);
    assert.equal((await srv.admin('POST', `/devices/${deviceId}/renewal`, { force: true, until: '2001-01-01T00:00:00Z' })).status, 400);

    const forced = await srv.admin('POST', `/devices/${deviceId}/renewal`, { force: true });
    assert.equal(forced.status, 200, forced.text);
    assert.equal(forced.json.renewable, true);
    assert.ok(forced.json.force.until > new Date().toISOString());
    const renewed = await enroll(reArgs, 'simplereenroll');
    assert.equal(renewed.status, 200, renewed.body);
    certFromPkcs7(dir, renewed.bodyFile, 'force-1.pem');
    // Used once: the renewed certificate is again outside the window.
    const again = await enroll(['--cert', join(dir, 'force-1.pem'), '--key', req.key, '--data-binary', `@${renewalCsr(dir, join(dir, 'force-1.pem'), req.key, 'force-2')}`], 'simplereenroll');
    assertEstError(again, 403, 'RENEWAL_NOT_DUE');
    assert.equal((await srv.admin('GET', `/devices/${deviceId}/renewal`)).json.force, null);
    assert.equal(await srv.fp.store.getSetting(renewalForceSettingKey(deviceId)), undefined, 'a used force leaves no row behind');
    const actions = (await srv.admin('GET', '/audit-events?limit=1000')).json.items.filter((e: { resourceId: string | null; details: { deviceId?: string } }) => e.resourceId === deviceId || e.details.deviceId === deviceId).map((e: { action: string }) => e.action);
    assert.deepEqual(actions, ['device.renewal.force', 'certificate.renew']);

    // Withdrawn, or still unused when the device is deleted: no per-device row outlives either.
    await srv.admin('POST', `/devices/${deviceId}/renewal`, { force: true });
    assert.equal((await srv.admin('POST', `/devices/${deviceId}/renewal`, { force: false })).json.force, null);
    assert.equal(await srv.fp.store.getSetting(renewalForceSettingKey(deviceId)), undefined);
    await srv.admin('POST', `/devices/${deviceId}/renewal`, { force: true });
    assert.notEqual(await srv.fp.store.getSetting(renewalForceSettingKey(deviceId)), undefined);
    assert.equal((await srv.admin('DELETE', `/devices/${deviceId}`)).status, 204);
    for (const key of deviceSettingKeys(deviceId)) assert.equal(await srv.fp.store.getSetting(key), undefined, key);
  });

  it('serverkeygen: the server makes the key (the CSR key type), answers key and certificate as multipart; a retry replaces the undelivered key', async () => {
    const created = await srv.admin('POST', '/enrollments', { registrationId: 'SN-KEYGEN', attestation: { type: 'token' } });
    const token: string = created.json.token;
    const req = csr(dir, 'kg-req', '/CN=SN-KEYGEN', ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-384']);
    const args = ['-u', `SN-KEYGEN:${token}`, '--data-binary', `@${req.oneLine}`];
    const split = (file: string, prefix: string) =>
      sh(dir, `tr -d '\\r' < '${file}' | awk '/^--/{hdr=1; out=""; next} hdr && tolower($0) ~ /^content-type: *application\\/pkcs8/{out="${prefix}.key.b64"} hdr && tolower($0) ~ /^content-type: *application\\/pkcs7-mime/{out="${prefix}.p7.b64"} hdr && /^$/{hdr=0; next} !hdr && out!=""{print > out}' && openssl base64 -d -in ${prefix}.key.b64 | openssl pkey -inform DER -out ${prefix}.key`);

    const r = await enroll(args, 'serverkeygen');
    assert.equal(r.status, 200, r.body);
    assert.match(r.headers['content-type'] ?? '', /^multipart\/mixed; boundary=/);
    assert.equal(r.headers['cache-control'], 'no-store');
    split(r.bodyFile, 'kg-1');
    certFromPkcs7(dir, 'kg-1.p7.b64', 'kg-1.pem');
    assert.equal(certPub(dir, 'kg-1.pem'), keyPub(dir, 'kg-1.key'), 'the certificate is for the key the server sent');
    assert.notEqual(keyPub(dir, 'kg-1.key'), keyPub(dir, req.key), 'a new key, not the request key');
    assert.match(openssl(['pkey', '-in', 'kg-1.key', '-noout', '-text'], { cwd: dir }), /NIST CURVE: P-384/);
    assert.match(openssl(['verify', '-CAfile', caFile, 'kg-1.pem'], { cwd: dir }), /OK/);
    const self = await curl(dir, [...tls(), '--cert', join(dir, 'kg-1.pem'), '--key', join(dir, 'kg-1.key'), `${srv.url}/v1/devices/self`]);
    assert.equal(self.status, 200, self.body);

    // The answer was lost: the same request again gets a fresh key; the first certificate is superseded.
    const retry = await enroll(args, 'serverkeygen');
    assert.equal(retry.status, 200, retry.body);
    split(retry.bodyFile, 'kg-2');
    certFromPkcs7(dir, 'kg-2.p7.b64', 'kg-2.pem');
    assert.equal(certPub(dir, 'kg-2.pem'), keyPub(dir, 'kg-2.key'));
    const devices = (await srv.admin('GET', '/devices?registrationId=SN-KEYGEN')).json.items;
    assert.equal(devices.length, 1);
    const certs = (await srv.admin('GET', `/certificates?deviceId=${devices[0].id}`)).json.items.map((c: { status: string }) => c.status).sort();
    assert.deepEqual(certs, ['active', 'superseded']);
    // Another request key with the used token is a replay.
    assertEstError(await enroll(['-u', `SN-KEYGEN:${token}`, '--data-binary', `@${csr(dir, 'kg-thief').oneLine}`], 'serverkeygen'), 401, 'TOKEN_REPLAYED');
    // Once the device re-enrolls with its key, serverkeygen retries are over.
    await srv.admin('POST', `/devices/${devices[0].id}/renewal`, { force: true });
    const re = await enroll(['--cert', join(dir, 'kg-2.pem'), '--key', join(dir, 'kg-2.key'), '--data-binary', `@${renewalCsr(dir, join(dir, 'kg-2.pem'), join(dir, 'kg-2.key'), 'kg-re')}`], 'simplereenroll');
    assert.equal(re.status, 200, re.body);
    assertEstError(await enroll(args, 'serverkeygen'), 401, 'TOKEN_REPLAYED');
    assert.equal(await srv.fp.store.getSetting(serverKeygenSettingKey(devices[0].id)), undefined, 'the retry permission is gone, row and all');
    const audit = (await srv.admin('GET', '/audit-events?limit=1000')).json.items.filter((e: { actor: string }) => e.actor === `device:${devices[0].id}`).map((e: { action: string }) => e.action);
    assert.deepEqual(audit, ['certificate.serverkeygen', 'certificate.serverkeygen', 'certificate.renew']);
  });

  it('refuses wrong CA, expired factory certificate, revoked or suspended device, subject mismatch, garbage, oversized and mistyped bodies', async () => {
    const good = csr(dir, 'bad-good');
    const body = ['--data-binary', `@${good.oneLine}`];

    makeCa(dir, 'rogue', '/O=Acme Devices/CN=mfg');
    const rogue = makeLeaf(dir, 'rogue', 'rogue-leaf', 'SN-ROGUE');
    assertEstError(await enroll(['--cert', rogue.certFile, '--key', rogue.keyFile, ...body]), 401, 'CERTIFICATE_UNTRUSTED');
    const expired = expiredLeaf(dir, 'mfg', 'old-factory', 'SN-OLD');
    assert.match(x509(dir, expired.certFile, '-enddate'), /2021/);
    assertEstError(await enroll(['--cert', expired.certFile, '--key', expired.keyFile, ...body]), 401, 'CERTIFICATE_EXPIRED');
    assertEstError(await enroll(body), 401, 'ATTESTATION_MISSING');

    // Two devices with operational certificates: one gets revoked, one suspended.
    const onboard = async (id: string) => {
      const t = await srv.admin('POST', '/enrollments', { registrationId: id, attestation: { type: 'token' } });
      const k = csr(dir, id);
      const r = await enroll(['-u', `${id}:${t.json.token}`, '--data-binary', `@${k.oneLine}`]);
      assert.equal(r.status, 200, r.body);
      certFromPkcs7(dir, r.bodyFile, `${id}.pem`);
      const deviceId = (await srv.admin('GET', `/devices?registrationId=${id}`)).json.items[0].id as string;
      await srv.admin('POST', `/devices/${deviceId}/renewal`, { force: true });
      return { deviceId, cert: join(dir, `${id}.pem`), key: k.key, renewal: renewalCsr(dir, join(dir, `${id}.pem`), k.key, `${id}-renew`) };
    };
    const revoked = await onboard('SN-EST-REVOKED');
    assert.equal((await srv.admin('POST', `/devices/${revoked.deviceId}/revoke`, { reason: 'keyCompromise' })).status, 200);
    assertEstError(await enroll(['--cert', revoked.cert, '--key', revoked.key, '--data-binary', `@${revoked.renewal}`], 'simplereenroll'), 401, 'CERTIFICATE_REVOKED');
    const revokedAttempts = (await srv.admin('GET', '/attempts?registrationId=SN-EST-REVOKED&outcome=failure')).json.items;
    assert.deepEqual(revokedAttempts.map((a: { protocol: string; reasonCode: string; deviceId: string }) => [a.protocol, a.reasonCode, a.deviceId]), [['est', 'CERTIFICATE_REVOKED', revoked.deviceId]]);
    const suspended = await onboard('SN-EST-SUSPENDED');
    assert.equal((await srv.admin('POST', `/devices/${suspended.deviceId}/suspend`)).status, 200);
    assertEstError(await enroll(['--cert', suspended.cert, '--key', suspended.key, '--data-binary', `@${suspended.renewal}`], 'simplereenroll'), 403, 'DEVICE_SUSPENDED');
    await srv.admin('POST', `/devices/${suspended.deviceId}/resume`);

    // RFC 7030 section 4.2.2: subject and SANs must be those of the certificate.
    const mismatch = csr(dir, 'mismatch', '/CN=someone-else');
    assertEstError(await enroll(['--cert', suspended.cert, '--key', suspended.key, '--data-binary', `@${mismatch.oneLine}`], 'simplereenroll'), 400, 'SUBJECT_MISMATCH');
    const cn = x509(dir, suspended.cert, '-subject').replace(/^subject=\s*CN\s*=\s*/, '');
    const noSan = csr(dir, 'no-san', `/CN=${cn}`);
    const r = await enroll(['--cert', suspended.cert, '--key', suspended.key, '--data-binary', `@${noSan.oneLine}`], 'simplereenroll');
    assertEstError(r, 400, 'SUBJECT_MISMATCH');
    assert.match(r.body, /subjectAltName/);
    assertEstError(await enroll(['-u', `SN-EST-SUSPENDED:whatever`, '--data-binary', `@${suspended.renewal}`], 'simplereenroll'), 401, 'ATTESTATION_MISSING');
    // The untouched renewal CSR still works: the refusals changed nothing.
    assert.equal((await enroll(['--cert', suspended.cert, '--key', suspended.key, '--data-binary', `@${suspended.renewal}`], 'simplereenroll')).status, 200);

    const tokenFor = async (id: string) => (await srv.admin('POST', '/enrollments', { registrationId: id, attestation: { type: 'token' } })).json.token as string;
    const basic = ['-u', `SN-EST-BAD:${await tokenFor('SN-EST-BAD')}`];
    writeFileSync(join(dir, 'garbage.b64'), 'this is not base64 DER at all!');
    assertEstError(await enroll([...basic, '--data-binary', `@${join(dir, 'garbage.b64')}`]), 400, 'CSR_INVALID');
    writeFileSync(join(dir, 'garbage2.b64'), Buffer.from('not a CSR but valid base64').toString('base64'));
    assertEstError(await enroll([...basic, '--data-binary', `@${join(dir, 'garbage2.b64')}`]), 400, 'CSR_INVALID');
    writeFileSync(join(dir, 'huge.b64'), 'A'.repeat(200_000));
    assertEstError(await enroll([...basic, '--data-binary', `@${join(dir, 'huge.b64')}`]), 413, 'BODY_TOO_LARGE');
    writeFileSync(join(dir, 'big.b64'), 'A'.repeat(40_000));
    assertEstError(await enroll([...basic, '--data-binary', `@${join(dir, 'big.b64')}`]), 400, 'CSR_INVALID');
    for (const type of ['application/json', 'text/plain', 'application/x-www-form-urlencoded']) {
      const wrong = await curl(dir, [...tls(), ...basic, '-H', `content-type: ${type}`, '--data-binary', `@${good.oneLine}`, `${est}/simpleenroll`]);
      assertEstError(wrong, 415, 'UNSUPPORTED_MEDIA_TYPE');
    }
    assertEstError(await curl(dir, [...tls(), `${est}/fullcmc`]), 404, 'NOT_FOUND');
    assert.equal((await srv.admin('GET', '/devices?registrationId=SN-EST-BAD')).json.items.length, 0);
    const codes = new Set((await srv.admin('GET', '/attempts?registrationId=SN-EST-BAD&outcome=failure')).json.items.map((a: { reasonCode: string }) => a.reasonCode));
    assert.ok(codes.has('CSR_INVALID'), [...codes].join(','));
  });
});

describe('EST under load: deferral is 202 with Retry-After (RFC 7030 section 4.2.3)', () => {
  let srv: TestServer;
  let hook: Server;
  let dir: string;
  let releaseHook: () => void = () => undefined;
  let hookCalled: Promise<void>;

  before(async () => {
    let called: () => void = () => undefined;
    hookCalled = new Promise((resolve) => {
      called = resolve;
    });
    const held = new Promise<void>((resolve) => {
      releaseHook = resolve;
    });
    hook = createServer((req, res) => {
      req.resume();
      called();
      void held.then(() => res.writeHead(200, { 'content-type': 'application/json' }).end('{"allow":true}'));
    });
    await new Promise<void>((resolve) => hook.listen(0, '127.0.0.1', resolve));
    srv = await startTestServer(null, { admissionMaxInFlight: 1, admissionMaxQueue: 0, retryAfterSeconds: 3 });
    dir = tempDir('fp-est-load-');
    writeFileSync(join(dir, 'ca.pem'), srv.caPem);
  });
  after(async () => {
    releaseHook();
    await srv?.close();
    await new Promise<void>((resolve) => hook.close(() => resolve()));
  });

  it('a request beyond the in-flight limit gets 202 and Retry-After; repeated later it is answered', async () => {
    const port = (hook.address() as { port: number }).port;
    const slow = await srv.admin('POST', '/enrollments', { registrationId: 'SN-SLOW', attestation: { type: 'token' }, webhookUrl: `http://127.0.0.1:${port}/hook` });
    const quick = await srv.admin('POST', '/enrollments', { registrationId: 'SN-QUICK', attestation: { type: 'token' } });
    const est = `${srv.url}/.well-known/est/simpleenroll`;
    const common = ['--cacert', join(dir, 'ca.pem'), '-H', 'content-type: application/pkcs10'];
    const a = csr(dir, 'slow');
    const b = csr(dir, 'quick');
    const holding = curl(dir, [...common, '-u', `SN-SLOW:${slow.json.token}`, '--data-binary', `@${a.oneLine}`, est]);
    await hookCalled; // the only slot is now taken
    const deferred = await curl(dir, [...common, '-u', `SN-QUICK:${quick.json.token}`, '--data-binary', `@${b.oneLine}`, est]);
    assertEstError(deferred, 202, 'RATE_LIMITED');
    const after = Number(deferred.headers['retry-after']);
    assert.ok(after >= 3 && after < 6, `Retry-After ${deferred.headers['retry-after']}`);
    releaseHook();
    assert.equal((await holding).status, 200);
    const retried = await curl(dir, [...common, '-u', `SN-QUICK:${quick.json.token}`, '--data-binary', `@${b.oneLine}`, est]);
    assert.equal(retried.status, 200, retried.body);
  });
});
