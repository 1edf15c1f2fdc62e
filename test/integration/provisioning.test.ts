/** Pipeline behaviour through the HTTPS device API, on every storage backend. */
import { it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { connect as tlsConnect } from 'node:tls';
import { join } from 'node:path';
import { describeEachBackend } from '../helpers/backends.js';
import { certWithValidity } from '../helpers/certs.js';
import { makeCa, makeCsr, makeLeaf, tempDir } from '../helpers/openssl.js';
import { startTestServer, type TestServer } from '../helpers/server.js';

describeEachBackend('provisioning pipeline over HTTPS', (ctx) => {
  let srv: TestServer;
  let dir: string;
  let caPem: string;
  let groupId: string;
  const factory = (cn: string) => makeLeaf(dir, 'mfg', `f-${cn}`, cn);
  const provision = (cert: { certPem: string; keyPem: string } | null, body: unknown, headers: Record<string, string> = {}) =>
    srv.request('POST', '/v1/provision', { body, headers, ...(cert ? { cert: cert.certPem, key: cert.keyPem } : {}) });
  const countDevices = async (registrationId: string) => (await srv.admin('GET', `/devices?registrationId=${registrationId}`)).json.items.length as number;

  before(async () => {
    srv = await startTestServer(ctx().url);
    dir = tempDir();
    caPem = makeCa(dir, 'mfg');
    const g = await srv.admin('POST', '/enrollment-groups', {
      name: 'factory',
      attestation: { type: 'x509-ca', caCertificatePem: caPem },
      template: {
        deviceName: '${model}-${registrationId}',
        groups: ['line-${region}'],
        policy: 'default',
        configuration: { interval: 30 },
        validation: { allowedRegions: ['eu', 'us'], minFirmware: { thermo: '2.0.0', '*': '1.0.0' } },
      },
    });
    assert.equal(g.status, 201, g.text);
    groupId = g.json.id;
  });
  after(async () => {
    await srv?.close();
  });

  it('answers a retry with the same device and the same certificate, never a second issuance', async () => {
    const f = factory('SN-IDEM');
    const csr = makeCsr(dir, 'idem');
    const body = { registrationId: 'SN-IDEM', csr: csr.csrPem, parameters: { model: 'thermo', firmwareVersion: '2.1.0', region: 'eu' } };
    const a = await provision(f, body);
    assert.equal(a.status, 200, a.text);
    const b = await provision(f, body);
    assert.equal(b.status, 200, b.text);
    assert.equal(b.json.deviceId, a.json.deviceId);
    assert.equal(b.json.certificateSerial, a.json.certificateSerial);
    const certs = await srv.admin('GET', `/certificates?deviceId=${a.json.deviceId}`);
    assert.equal(certs.json.items.length, 1);
    assert.deepEqual(a.json.configuration, { interval: 30 });
    const dev = await srv.admin('GET', `/devices/${a.json.deviceId}`);
    assert.deepEqual(dev.json.groups, ['line-eu']);
    assert.equal(dev.json.policyName, 'default');
    assert.equal(dev.json.name, 'thermo-SN-IDEM');
  });

  it('creates exactly one device and one certificate for 12 concurrent copies of a request', async () => {
    const f = factory('SN-RACE');
    const csr = makeCsr(dir, 'race');
    const body = { registrationId: 'SN-RACE', csr: csr.csrPem, parameters: { model: 'x', firmwareVersion: '1.0.0', region: 'us' } };
    const results = await Promise.all(Array.from({ length: 12 }, () => provision(f, body)));
    for (const r of results) assert.equal(r.status, 200, r.text);
    assert.equal(new Set(results.map((r) => r.json.certificateSerial)).size, 1);
    assert.equal(await countDevices('SN-RACE'), 1);
    const certs = await srv.admin('GET', `/certificates?deviceId=${results[0]!.json.deviceId}`);
    assert.equal(certs.json.items.length, 1);
  });

  it('rejects the same registration ID with a different key as a collision, and logs it', async () => {
    const f = factory('SN-DUP');
    const first = await provision(f, { registrationId: 'SN-DUP', csr: makeCsr(dir, 'dup1').csrPem, parameters: { model: 'x', firmwareVersion: '1.0.0', region: 'eu' } });
    assert.equal(first.status, 200, first.text);
    const second = await provision(f, { registrationId: 'SN-DUP', csr: makeCsr(dir, 'dup2').csrPem, parameters: { model: 'x', firmwareVersion: '1.0.0', region: 'eu' } });
    assert.equal(second.status, 409);
    assert.equal(second.json.error.code, 'REGISTRATION_ID_COLLISION');
    const attempts = await srv.admin('GET', '/attempts?reasonCode=REGISTRATION_ID_COLLISION&registrationId=SN-DUP');
    assert.equal(attempts.status, 200);
    assert.equal(attempts.json.items.length, 1);
    assert.equal(attempts.json.items[0].enrollmentId, groupId);
    assert.equal(attempts.json.items[0].deviceId, first.json.deviceId);
  });

  it('re-keys when the enrollment allows it: new certificate, old one superseded', async () => {
    const cap = makeCa(dir, 'mfg2', '/O=Other/CN=mfg2');
    const g = await srv.admin('POST', '/enrollment-groups', { name: 'rekeyable', attestation: { type: 'x509-ca', caCertificatePem: cap }, reprovisionPolicy: 'replace-key' });
    assert.equal(g.status, 201, g.text);
    const f = makeLeaf(dir, 'mfg2', 'f-rekey', 'SN-REKEY');
    const a = await provision(f, { csr: makeCsr(dir, 'rk1').csrPem });
    assert.equal(a.status, 200, a.text);
    assert.equal(a.json.registrationId, 'SN-REKEY', 'registration ID defaults to the certificate CN');
    const b = await provision(f, { csr: makeCsr(dir, 'rk2').csrPem });
    assert.equal(b.status, 200, b.text);
    assert.equal(b.json.deviceId, a.json.deviceId);
    assert.notEqual(b.json.certificateSerial, a.json.certificateSerial);
    const certs = await srv.admin('GET', `/certificates?deviceId=${a.json.deviceId}`);
    const byStatus = Object.fromEntries(certs.json.items.map((c: { serial: string; status: string }) => [c.serial, c.status]));
    assert.equal(byStatus[a.json.certificateSerial], 'superseded');
    assert.equal(byStatus[b.json.certificateSerial], 'active');
  });

  it('applies the template rules: region and minimum firmware per model', async () => {
    const f = factory('SN-RULES');
    const csr = makeCsr(dir, 'rules').csrPem;
    const region = await provision(f, { registrationId: 'SN-RULES', csr, parameters: { model: 'thermo', firmwareVersion: '2.0.0', region: 'apac' } });
    assert.equal(region.status, 422);
    assert.equal(region.json.error.code, 'REGION_MISMATCH');
    const fw = await provision(f, { registrationId: 'SN-RULES', csr, parameters: { model: 'thermo', firmwareVersion: '1.9.9', region: 'eu' } });
    assert.equal(fw.status, 422);
    assert.equal(fw.json.error.code, 'FIRMWARE_UNSUPPORTED');
    const fwDefault = await provision(f, { registrationId: 'SN-RULES', csr, parameters: { model: 'other', firmwareVersion: '0.9', region: 'eu' } });
    assert.equal(fwDefault.json.error.code, 'FIRMWARE_UNSUPPORTED');
    // Newer firmware with fields this server does not know: accepted, unknown fields ignored.
    const ok = await provision(f, { registrationId: 'SN-RULES', csr, parameters: { model: 'thermo', firmwareVersion: '2.10.0', region: 'eu' }, futureField: { x: 1 } });
    assert.equal(ok.status, 200, ok.text);
  });

  it('enforces enrollment limits: disabled, expired, exhausted', async () => {
    const capem = makeCa(dir, 'lim', '/O=Limits/CN=lim');
    const g = await srv.admin('POST', '/enrollment-groups', { name: 'limited', attestation: { type: 'x509-ca', caCertificatePem: capem }, maxDevices: 1 });
    assert.equal(g.status, 201, g.text);
    const one = await provision(makeLeaf(dir, 'lim', 'l1', 'LIM-1'), { csr: makeCsr(dir, 'l1c').csrPem });
    assert.equal(one.status, 200, one.text);
    const two = await provision(makeLeaf(dir, 'lim', 'l2', 'LIM-2'), { csr: makeCsr(dir, 'l2c').csrPem });
    assert.equal(two.status, 403);
    assert.equal(two.json.error.code, 'ENROLLMENT_EXHAUSTED');
    assert.equal(await countDevices('LIM-2'), 0);
    const patched = await srv.admin('PATCH', `/enrollment-groups/${g.json.id}`, { maxDevices: 10, expiresAt: '2000-01-01T00:00:00Z' });
    assert.equal(patched.status, 200, patched.text);
    const expired = await provision(makeLeaf(dir, 'lim', 'l3', 'LIM-3'), { csr: makeCsr(dir, 'l3c').csrPem });
    assert.equal(expired.json.error.code, 'ENROLLMENT_EXPIRED');
    await srv.admin('PATCH', `/enrollment-groups/${g.json.id}`, { expiresAt: null });
    const disabled = await srv.admin('POST', `/enrollment-groups/${g.json.id}/disable`);
    assert.equal(disabled.json.enabled, false);
    const off = await provision(makeLeaf(dir, 'lim', 'l4', 'LIM-4'), { csr: makeCsr(dir, 'l4c').csrPem });
    assert.equal(off.json.error.code, 'ENROLLMENT_DISABLED');
  });

  it('rejects bad input with coded errors and stores nothing but the attempt', async () => {
    const f = factory('SN-BAD');
    const good = makeCsr(dir, 'bad-good').csrPem;
    const cases: Array<[string, () => Promise<{ status: number; json: { error: { code: string } } }>, number, string]> = [
      ['malformed JSON', () => srv.request('POST', '/v1/provision', { rawBody: '{"registrationId": ', cert: f.certPem, key: f.keyPem }), 400, 'BAD_REQUEST'],
      ['garbage CSR', () => provision(f, { registrationId: 'SN-BAD', csr: 'not a csr' }), 400, 'CSR_INVALID'],
      ['truncated CSR', () => provision(f, { registrationId: 'SN-BAD', csr: good.slice(0, 200) + '\n-----END CERTIFICATE REQUEST-----' }), 400, 'CSR_INVALID'],
      ['missing CSR', () => provision(f, { registrationId: 'SN-BAD' }), 400, 'CSR_INVALID'],
      ['CSR signed by another key', () => provision(f, { registrationId: 'SN-BAD', csr: tamperCsrSignature(good) }), 400, 'CSR_SIGNATURE_INVALID'],
      ['RSA-1024 key', () => provision(f, { registrationId: 'SN-BAD', csr: makeCsr(dir, 'weak', 'rsa1024').csrPem }), 400, 'KEY_TOO_WEAK'],
      ['secp256k1 key', () => provision(f, { registrationId: 'SN-BAD', csr: makeCsr(dir, 'k1', 'secp256k1').csrPem }), 400, 'KEY_UNSUPPORTED'],
      ['bad registration ID', () => provision(f, { registrationId: 'SN BAD/../x', csr: good }), 400, 'REGISTRATION_ID_INVALID'],
      ['registration ID not in certificate', () => provision(f, { registrationId: 'SN-OTHER', csr: good }), 403, 'REGISTRATION_ID_MISMATCH'],
      ['no credential', () => provision(null, { registrationId: 'SN-BAD', csr: good }), 401, 'ATTESTATION_MISSING'],
      ['oversized body', () => srv.request('POST', '/v1/provision', { rawBody: JSON.stringify({ registrationId: 'SN-BAD', csr: 'A'.repeat(70_000) }), cert: f.certPem, key: f.keyPem }), 413, 'BODY_TOO_LARGE'],
      ['wrong content type', () => srv.request('POST', '/v1/provision', { rawBody: 'x', contentType: 'text/plain', cert: f.certPem, key: f.keyPem }), 415, 'UNSUPPORTED_MEDIA_TYPE'],
      ['unknown token', () => provision(null, { registrationId: 'SN-BAD', csr: good }, { authorization: 'Bearer fpt_nope' }), 401, 'TOKEN_INVALID'],
    ];
    for (const [name, call, status, code] of cases) {
      const r = await call();
      assert.equal(r.status, status, `${name}: ${JSON.stringify(r.json)}`);
      assert.equal(r.json.error.code, code, name);
    }
    assert.equal(await countDevices('SN-BAD'), 0);
    const attempts = await srv.admin('GET', '/attempts?registrationId=SN-BAD&outcome=failure');
    const codes = new Set(attempts.json.items.map((a: { reasonCode: string }) => a.reasonCode));
    for (const c of ['CSR_INVALID', 'CSR_SIGNATURE_INVALID', 'KEY_TOO_WEAK', 'KEY_UNSUPPORTED']) assert.ok(codes.has(c), `attempt with ${c} recorded`);
  });

  it('an oversized body gets its 413 after the client has sent it all, not a reset in the middle of sending', async () => {
    const total = 300_000;
    const socket = tlsConnect({ host: '127.0.0.1', port: srv.port, servername: 'localhost', ca: srv.caPem });
    await once(socket, 'secureConnect');
    let answer = '';
    let answeredAfter = -1; // bytes of the body sent when the first byte of the answer came
    let sent = 0;
    socket.on('data', (c: Buffer) => {
      if (answeredAfter < 0) answeredAfter = sent;
      answer += c.toString('latin1');
    });
    const socketError = new Promise<Error>((resolve) => socket.once('error', resolve));
    const write = (data: string) => new Promise<void>((resolve, reject) => socket.write(data, (err) => (err ? reject(err) : resolve())));
    await write(`POST /v1/provision HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: ${total}\r\n\r\n`);
    // In pieces, with pauses, as a device on a slow link would: the server knows the answer at once.
    for (let i = 0; i < 6; i++) {
      await new Promise((r) => setTimeout(r, 50));
      const piece = 'A'.repeat(total / 6);
      await Promise.race([write(piece), socketError.then((e) => Promise.reject(e))]);
      sent += piece.length;
    }
    await Promise.race([once(socket, 'end'), socketError.then((e) => Promise.reject(e))]);
    assert.equal(answeredAfter, total, 'answered only once the whole body was in');
    assert.match(answer, /^HTTP\/1\.1 413 /);
    assert.match(answer, /"code":"BODY_TOO_LARGE"/);
    socket.destroy();
  });

  it('rejects expired and wrong-CA factory certificates', async () => {
    const key = readFileSync(join(dir, 'mfg.key'), 'utf8');
    const expired = await certWithValidity(caPem, key, 'SN-OLD', new Date('2020-01-01'), new Date('2021-01-01'));
    const r1 = await provision(expired, { registrationId: 'SN-OLD', csr: makeCsr(dir, 'old').csrPem });
    assert.equal(r1.status, 401);
    assert.equal(r1.json.error.code, 'CERTIFICATE_EXPIRED');
    makeCa(dir, 'rogue', '/O=Acme Devices/CN=mfg');
    const rogue = makeLeaf(dir, 'rogue', 'rogue-leaf', 'SN-ROGUE');
    const r2 = await provision(rogue, { registrationId: 'SN-ROGUE', csr: makeCsr(dir, 'rg').csrPem });
    assert.equal(r2.status, 401);
    assert.equal(r2.json.error.code, 'CERTIFICATE_UNTRUSTED');
    makeCa(dir, 'unknown', '/O=Nobody/CN=unknown');
    const r3 = await provision(makeLeaf(dir, 'unknown', 'unk', 'SN-UNK'), { registrationId: 'SN-UNK', csr: makeCsr(dir, 'unk').csrPem });
    assert.equal(r3.json.error.code, 'CERTIFICATE_UNTRUSTED');
    assert.equal(await countDevices('SN-OLD') + (await countDevices('SN-ROGUE')), 0);
  });

  it('rejects an expired SAS and one for another registration ID', async () => {
    const g = await srv.admin('POST', '/enrollment-groups', { name: 'sas', attestation: { type: 'symmetric-key' } });
    const { createHmac } = await import('node:crypto');
    const sign = (key: string, s: string) => createHmac('sha256', Buffer.from(key, 'base64')).update(s).digest('base64');
    const devKey = sign(g.json.primaryKey, 'sas-1');
    const sr = encodeURIComponent(`${g.json.idScope}/registrations/sas-1`);
    const old = String(Math.floor(Date.now() / 1000) - 10);
    const r = await provision(null, { registrationId: 'sas-1', csr: makeCsr(dir, 'sas').csrPem }, { authorization: `SharedAccessSignature sr=${sr}&sig=${encodeURIComponent(sign(devKey, `${sr}\n${old}`))}&se=${old}&skn=registration` });
    assert.equal(r.json.error.code, 'SIGNATURE_EXPIRED');
    const se = String(Math.floor(Date.now() / 1000) + 600);
    const r2 = await provision(null, { registrationId: 'sas-2', csr: makeCsr(dir, 'sas2').csrPem }, { authorization: `SharedAccessSignature sr=${sr}&sig=${encodeURIComponent(sign(devKey, `${sr}\n${se}`))}&se=${se}&skn=registration` });
    assert.equal(r2.json.error.code, 'REGISTRATION_ID_MISMATCH');
  });

  it('revocation: a revoked device cannot use its certificate and the CRL lists it', async () => {
    const f = factory('SN-REV');
    const csr = makeCsr(dir, 'rev');
    const a = await provision(f, { registrationId: 'SN-REV', csr: csr.csrPem, parameters: { model: 'x', firmwareVersion: '1.0.0', region: 'eu' } });
    assert.equal(a.status, 200, a.text);
    const op = { cert: a.json.certificatePem as string, key: csr.keyPem };
    assert.equal((await srv.request('GET', '/v1/devices/self', op)).status, 200);
    const rv = await srv.admin('POST', `/devices/${a.json.deviceId}/revoke`, { reason: 'keyCompromise' });
    assert.equal(rv.status, 200, rv.text);
    assert.equal(rv.json.status, 'revoked');
    const self = await srv.request('GET', '/v1/devices/self', op);
    assert.equal(self.status, 401);
    assert.equal(self.json.error.code, 'CERTIFICATE_REVOKED');
    const again = await provision(f, { registrationId: 'SN-REV', csr: csr.csrPem, parameters: { model: 'x', firmwareVersion: '1.0.0', region: 'eu' } });
    assert.equal(again.json.error.code, 'DEVICE_REVOKED');
    const crl = await srv.request('GET', `/crl/${srv.fp.authority.issuing.id}.crl`);
    assert.equal(crl.status, 200);
    await import('reflect-metadata');
    const { X509Crl } = await import('@peculiar/x509');
    const parsed = new X509Crl(new Uint8Array(crl.raw));
    const serials = parsed.entries.map((e) => e.serialNumber.toLowerCase().replace(/^0+/, ''));
    assert.ok(serials.includes(String(a.json.certificateSerial).replace(/^0+/, '')), `CRL lists ${a.json.certificateSerial}: ${serials.join(',')}`);
  });
});

/** Flips one byte inside the CSR's signature: the structure stays valid, proof of possession fails. */
function tamperCsrSignature(pem: string): string {
  const der = Buffer.from(pem.replace(/-----[^-]+-----/g, '').replace(/\s+/g, ''), 'base64');
  der[der.length - 5] = der[der.length - 5]! ^ 0x01;
  return `-----BEGIN CERTIFICATE REQUEST-----\n${der.toString('base64')}\n-----END CERTIFICATE REQUEST-----\n`;
}
