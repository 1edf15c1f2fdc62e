/**
 * The device side here is only openssl and curl: the acceptance path of the HTTPS device API.
 */
import { it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import { promisify } from 'node:util';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describeEachBackend } from '../helpers/backends.js';
import { makeCa, makeCsr, makeLeaf, openssl, tempDir } from '../helpers/openssl.js';
import { startTestServer, type TestServer } from '../helpers/server.js';

const execFileAsync = promisify(execFile);

/** curl runs as a child process; async, because the server under test shares this event loop. */
async function curl(args: string[]): Promise<{ status: number; body: string }> {
  const { stdout: out } = await execFileAsync('curl', ['-sS', '--max-time', '20', '-w', '\n%{http_code}', ...args], { encoding: 'utf8' });
  const i = out.lastIndexOf('\n');
  return { status: Number(out.slice(i + 1)), body: out.slice(0, i) };
}

/** base64(HMAC-SHA256(key, data)) computed by openssl, as a device script would. */
function opensslHmacB64(keyB64: string, data: string): string {
  const hexkey = Buffer.from(keyB64, 'base64').toString('hex');
  return execFileSync('sh', ['-c', `printf '%s' "$DATA" | openssl dgst -sha256 -mac HMAC -macopt hexkey:${hexkey} -binary | openssl base64 -A`], { encoding: 'utf8', env: { ...process.env, DATA: data } }).trim();
}

describeEachBackend('device API with openssl and curl', (ctx) => {
  let srv: TestServer;
  let dir: string;
  let caFile: string;

  before(async () => {
    srv = await startTestServer(ctx().url);
    dir = tempDir();
    caFile = join(dir, 'fleetpass-ca.pem');
    // The device fetches the CA bundle to pin (trust on first use here; in the factory it is flashed).
    const got = await execFileAsync('curl', ['-sS', '-k', `${srv.url}/ca.pem`], { encoding: 'utf8' });
    writeFileSync(caFile, got.stdout);
  });
  after(async () => {
    await srv?.close();
  });

  it('every connection is a full TLS handshake: a session openssl s_client saved is not resumed', async () => {
    const port = new URL(srv.url).port;
    const sess = join(dir, 'tls-session.pem');
    // s_client runs async (the server shares this event loop); its stdin stays open for half a second,
    // long enough to read the server's post-handshake messages (TLS 1.3 session tickets).
    const sClient = (extra: string[]) =>
      execFileAsync('sh', ['-c', `sleep 0.5 | openssl s_client -connect 127.0.0.1:${port} -servername localhost -CAfile ${caFile} ${extra.join(' ')} 2>&1`], { encoding: 'utf8', timeout: 20_000 });
    const first = await sClient(['-sess_out', sess]);
    assert.match(first.stdout, /^New, TLSv1\.[23]/m, first.stdout);
    const second = await sClient(['-sess_in', sess]);
    assert.match(second.stdout, /Verify return code: 0 \(ok\)/, second.stdout);
    assert.match(second.stdout, /^New, TLSv1\.[23]/m, 'the saved session was resumed');
  });

  it('onboards SN-0001 with a factory certificate; the chain passes openssl verify', async () => {
    const caPem = makeCa(dir, 'mfg-ca');
    const factory = makeLeaf(dir, 'mfg-ca', 'factory', 'SN-0001');
    const created = await srv.admin('POST', '/enrollment-groups', { name: 'acme-factory', attestation: { type: 'x509-ca', caCertificatePem: caPem }, template: { deviceName: '${model}-${registrationId}', groups: ['acme'], configuration: { telemetryIntervalSeconds: 60, site: '${region}' } } });
    assert.equal(created.status, 201, created.text);
    const csr = makeCsr(dir, 'op', 'p256', 'ignored-by-server');
    writeFileSync(join(dir, 'body.json'), JSON.stringify({ registrationId: 'SN-0001', csr: csr.csrPem, parameters: { model: 'thermo', firmwareVersion: '1.2.0', region: 'eu' } }));
    const res = await curl(['--cacert', caFile, '--cert', factory.certFile, '--key', factory.keyFile, '-H', 'content-type: application/json', '--data-binary', `@${join(dir, 'body.json')}`, `${srv.url}/v1/provision`]);
    assert.equal(res.status, 200, res.body);
    const body = JSON.parse(res.body);
    assert.match(body.deviceId, /^dev_/);
    assert.deepEqual(body.configuration, { telemetryIntervalSeconds: 60, site: 'eu' });
    writeFileSync(join(dir, 'leaf.pem'), body.certificatePem);
    const verified = openssl(['verify', '-CAfile', caFile, '-purpose', 'sslclient', join(dir, 'leaf.pem')]);
    assert.match(verified, /leaf\.pem: OK/);
    // The subject comes from the template (CN = device ID), not from the CSR.
    const subject = openssl(['x509', '-in', join(dir, 'leaf.pem'), '-noout', '-subject']);
    assert.match(subject, new RegExp(`CN ?= ?${body.deviceId}`));
    assert.doesNotMatch(subject, /ignored-by-server/);
    const text = openssl(['x509', '-in', join(dir, 'leaf.pem'), '-noout', '-text']);
    assert.match(text, /TLS Web Client Authentication/);
    assert.match(text, /Digital Signature/);
    assert.match(text, /X509v3 CRL Distribution Points/);

    // The device now uses its operational certificate.
    const self = await curl(['--cacert', caFile, '--cert', join(dir, 'leaf.pem'), '--key', csr.keyFile, `${srv.url}/v1/devices/self`]);
    assert.equal(self.status, 200, self.body);
    assert.equal(JSON.parse(self.body).registrationId, 'SN-0001');
    assert.equal(JSON.parse(self.body).name, 'thermo-SN-0001');
    const conf = await curl(['--cacert', caFile, '--cert', join(dir, 'leaf.pem'), '--key', csr.keyFile, `${srv.url}/v1/devices/self/configuration`]);
    assert.equal(conf.status, 200);
    assert.equal(JSON.parse(conf.body).configuration.telemetryIntervalSeconds, 60);

    // The CRL named in the certificate is served and signed by the issuing CA.
    const crlUrl = /CRL Distribution Points:[\s\S]*?URI:(\S+)/.exec(text)![1]!;
    await execFileAsync('curl', ['-sS', '--cacert', caFile, '-o', join(dir, 'ca.crl'), crlUrl]);
    // openssl reports "verify OK" on stderr
    const crl = execFileSync('sh', ['-c', `openssl crl -inform DER -in '${join(dir, 'ca.crl')}' -CAfile '${caFile}' -noout 2>&1`], { encoding: 'utf8' });
    assert.match(crl, /verify OK/);
  });

  it('onboards with a one-time token; the token cannot be replayed by another key', async () => {
    const created = await srv.admin('POST', '/enrollments', { registrationId: 'SN-TOKEN-1', attestation: { type: 'token' } });
    assert.equal(created.status, 201, created.text);
    const token: string = created.json.token;
    const csr = makeCsr(dir, 'tok', 'p384');
    writeFileSync(join(dir, 'tok.json'), JSON.stringify({ registrationId: 'SN-TOKEN-1', csr: csr.csrPem }));
    const args = ['--cacert', caFile, '-H', `Authorization: Bearer ${token}`, '-H', 'content-type: application/json', '--data-binary', `@${join(dir, 'tok.json')}`, `${srv.url}/v1/provision`];
    const first = await curl(args);
    assert.equal(first.status, 200, first.body);
    // A retry with the same key (the answer was lost) gets the same certificate.
    const again = await curl(args);
    assert.equal(again.status, 200, again.body);
    assert.equal(JSON.parse(again.body).certificatePem, JSON.parse(first.body).certificatePem);
    // Someone else with the token: rejected.
    const thief = makeCsr(dir, 'thief', 'p256');
    writeFileSync(join(dir, 'thief.json'), JSON.stringify({ registrationId: 'SN-TOKEN-1', csr: thief.csrPem }));
    const stolen = await curl(['--cacert', caFile, '-H', `Authorization: Bearer ${token}`, '-H', 'content-type: application/json', '--data-binary', `@${join(dir, 'thief.json')}`, `${srv.url}/v1/provision`]);
    assert.equal(stolen.status, 401, stolen.body);
    assert.equal(JSON.parse(stolen.body).error.code, 'TOKEN_REPLAYED');
    writeFileSync(join(dir, 'leaf-tok.pem'), JSON.parse(first.body).certificatePem);
    assert.match(openssl(['verify', '-CAfile', caFile, join(dir, 'leaf-tok.pem')]), /OK/);
  });

  it('onboards with an Azure-DPS-style symmetric-key SAS computed by openssl', async () => {
    const created = await srv.admin('POST', '/enrollment-groups', { name: 'sym-group', attestation: { type: 'symmetric-key' } });
    assert.equal(created.status, 201, created.text);
    const { primaryKey, idScope } = created.json as { primaryKey: string; idScope: string };
    assert.ok(primaryKey && idScope);
    const registrationId = 'sensor-0042';
    const deviceKey = opensslHmacB64(primaryKey, registrationId);
    const sr = encodeURIComponent(`${idScope}/registrations/${registrationId}`);
    const se = String(Math.floor(Date.now() / 1000) + 3600);
    const sig = encodeURIComponent(opensslHmacB64(deviceKey, `${sr}\n${se}`));
    const csr = makeCsr(dir, 'sym', 'p256');
    writeFileSync(join(dir, 'sym.json'), JSON.stringify({ registrationId, csr: csr.csrPem }));
    const auth = `SharedAccessSignature sr=${sr}&sig=${sig}&se=${se}&skn=registration`;
    const res = await curl(['--cacert', caFile, '-H', `Authorization: ${auth}`, '-H', 'content-type: application/json', '--data-binary', `@${join(dir, 'sym.json')}`, `${srv.url}/v1/provision`]);
    assert.equal(res.status, 200, res.body);
    writeFileSync(join(dir, 'leaf-sym.pem'), JSON.parse(res.body).certificatePem);
    assert.match(openssl(['verify', '-CAfile', caFile, join(dir, 'leaf-sym.pem')]), /OK/);
    // A signature made with the group key itself (not the derived key) is refused.
    const badSig = encodeURIComponent(opensslHmacB64(primaryKey, `${sr}\n${se}`));
    const bad = await curl(['--cacert', caFile, '-H', `Authorization: SharedAccessSignature sr=${sr}&sig=${badSig}&se=${se}&skn=registration`, '-H', 'content-type: application/json', '--data-binary', `@${join(dir, 'sym.json')}`, `${srv.url}/v1/provision`]);
    assert.equal(bad.status, 401);
    assert.equal(JSON.parse(bad.body).error.code, 'SIGNATURE_INVALID');
    const listed = await srv.admin('GET', `/devices?registrationId=${registrationId}`);
    assert.equal(listed.json.items.length, 1);
    assert.equal(listed.json.items[0].registrationId, registrationId);
    assert.equal(listed.json.items[0].status, 'active');
    assert.ok('next' in listed.json);
  });
});
