/** Admin API: tenant isolation, roles, strict validation, audit chain — on every storage backend. */
import { it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { describeEachBackend } from '../helpers/backends.js';
import { makeCa, makeCsr, makeLeaf, tempDir } from '../helpers/openssl.js';
import { startTestServer, type TestServer } from '../helpers/server.js';
import { execRaw } from '../helpers/raw-sql.js';

const CLI = new URL('../../src/cli/index.js', import.meta.url).pathname;

function auditVerify(databaseUrl: string): { code: number; out: string } {
  try {
    return { code: 0, out: execFileSync(process.execPath, [CLI, 'audit', 'verify', '--database-url', databaseUrl], { encoding: 'utf8', env: { ...process.env, FLEETPASS_KEY_PASSPHRASE: '' } }) };
  } catch (e) {
    const err = e as { status: number; stdout: string; stderr: string };
    return { code: err.status, out: err.stdout + err.stderr };
  }
}

describeEachBackend('admin API', (ctx) => {
  let srv: TestServer;
  let dir: string;
  let tokenB: string;

  before(async () => {
    srv = await startTestServer(ctx().url);
    dir = tempDir();
    const t = await srv.admin('POST', '/tenants', { name: 'tenant-b' });
    assert.equal(t.status, 201, t.text);
    tokenB = t.json.adminToken;
    assert.match(t.json.idScope, /^0fp[0-9A-F]{10}$/);
  });
  after(async () => {
    await srv?.close();
  });

  it('needs a valid bearer token and honours roles', async () => {
    assert.equal((await srv.request('GET', '/admin/v1/devices')).json.error.code, 'UNAUTHENTICATED');
    assert.equal((await srv.admin('GET', '/devices', undefined, 'fpk_wrong')).status, 401);
    const viewer = await srv.admin('POST', '/api-keys', { name: 'dash', role: 'viewer' });
    assert.equal(viewer.status, 201, viewer.text);
    assert.equal((await srv.admin('GET', '/devices', undefined, viewer.json.token)).status, 200);
    const denied = await srv.admin('POST', '/enrollments', { registrationId: 'v-1', attestation: { type: 'token' } }, viewer.json.token);
    assert.equal(denied.status, 403);
    assert.equal(denied.json.error.code, 'FORBIDDEN');
    assert.equal((await srv.admin('POST', '/tenants', { name: 'nope' }, tokenB)).status, 403, 'only platform admins create tenants');
    assert.equal((await srv.admin('DELETE', `/api-keys/${viewer.json.id}`)).status, 204);
    assert.equal((await srv.admin('GET', '/devices', undefined, viewer.json.token)).status, 401, 'revoked key');
  });

  it('rejects unknown and ill-typed fields with the field named', async () => {
    const typo = await srv.admin('POST', '/enrollment-groups', { name: 'g', attestation: { type: 'symmetric-key' }, maxDevice: 5 });
    assert.equal(typo.status, 400);
    assert.equal(typo.json.error.code, 'VALIDATION_FAILED');
    assert.match(typo.json.error.message, /maxDevice/);
    const nested = await srv.admin('POST', '/templates', { name: 't', template: { validation: { allowedRegion: ['eu'] } } });
    assert.equal(nested.status, 400);
    assert.match(nested.json.error.message, /allowedRegion/);
    const wrongType = await srv.admin('POST', '/enrollment-groups', { name: 'g', attestation: { type: 'symmetric-key' }, maxDevices: '5' });
    assert.equal(wrongType.json.error.code, 'VALIDATION_FAILED');
    const badAtt = await srv.admin('POST', '/enrollment-groups', { name: 'g', attestation: { type: 'x509-ca', caCertificatePem: 'garbage' } });
    assert.equal(badAtt.json.error.code, 'VALIDATION_FAILED');
    const leafAsCa = makeLeaf(dir, (makeCa(dir, 'x'), 'x'), 'notca', 'NOTCA');
    const notCa = await srv.admin('POST', '/cas', { name: 'leaf', certificatePem: leafAsCa.certPem });
    assert.equal(notCa.json.error.code, 'VALIDATION_FAILED');
    assert.match(notCa.json.error.message, /not a CA/);
    const badJson = await srv.request('POST', '/admin/v1/templates', { rawBody: '{', token: srv.adminToken });
    assert.equal(badJson.json.error.code, 'BAD_REQUEST');
    const badRegex = await srv.admin('POST', '/templates', { name: 't2', template: { validation: { parameterPatterns: { model: '(' } } } });
    assert.equal(badRegex.json.error.code, 'VALIDATION_FAILED');
    const list = await srv.admin('GET', '/templates');
    assert.equal(list.json.items.length, 0, 'nothing was created by the rejected requests');
  });

  it("keeps tenants apart: B cannot read or change A's resources (404) and lists only its own", async () => {
    const ca = makeCa(dir, 'iso');
    const g = await srv.admin('POST', '/enrollment-groups', { name: 'iso', attestation: { type: 'x509-ca', caCertificatePem: ca } });
    assert.equal(g.status, 201, g.text);
    const tpl = await srv.admin('POST', '/templates', { name: 'tpl-a', template: { deviceName: '${registrationId}' } });
    const pol = await srv.admin('POST', '/policies', { name: 'pol-a', document: { publish: ['devices/${deviceId}/telemetry'] } });
    const leaf = makeLeaf(dir, 'iso', 'iso-leaf', 'ISO-1');
    const csr = makeCsr(dir, 'iso-csr');
    const dev = await srv.request('POST', '/v1/provision', { body: { csr: csr.csrPem }, cert: leaf.certPem, key: leaf.keyPem });
    assert.equal(dev.status, 200, dev.text);
    const certs = await srv.admin('GET', `/certificates?deviceId=${dev.json.deviceId}`);
    const certId = certs.json.items[0].id;
    const caId = g.json.attestation.caId;

    const reads = [`/enrollment-groups/${g.json.id}`, `/templates/${tpl.json.id}`, `/policies/${pol.json.id}`, `/devices/${dev.json.deviceId}`, `/certificates/${certId}`, `/cas/${caId}`];
    for (const path of reads) {
      const r = await srv.admin('GET', path, undefined, tokenB);
      assert.equal(r.status, 404, `B reads ${path}`);
      assert.equal(r.json.error.code, 'NOT_FOUND');
      assert.equal((await srv.admin('GET', path)).status, 200, `A reads ${path}`);
    }
    const writes: Array<[string, string, unknown]> = [
      ['PATCH', `/enrollment-groups/${g.json.id}`, { enabled: false }],
      ['DELETE', `/enrollment-groups/${g.json.id}`, undefined],
      ['PATCH', `/templates/${tpl.json.id}`, { name: 'stolen' }],
      ['DELETE', `/policies/${pol.json.id}`, undefined],
      ['POST', `/devices/${dev.json.deviceId}/suspend`, undefined],
      ['POST', `/devices/${dev.json.deviceId}/revoke`, {}],
      ['DELETE', `/devices/${dev.json.deviceId}`, undefined],
      ['POST', `/certificates/${certId}/revoke`, {}],
      ['DELETE', `/cas/${caId}`, undefined],
    ];
    for (const [m, path, body] of writes) assert.equal((await srv.admin(m, path, body, tokenB)).status, 404, `B ${m} ${path}`);
    for (const path of ['/devices', '/enrollment-groups', '/templates', '/policies', '/certificates', '/attempts']) {
      const r = await srv.admin('GET', path, undefined, tokenB);
      assert.equal(r.status, 200);
      assert.equal(r.json.items.length, 0, `B lists ${path}`);
    }
    // A's things are unchanged.
    assert.equal((await srv.admin('GET', `/devices/${dev.json.deviceId}`)).json.status, 'active');
    assert.equal((await srv.admin('GET', `/enrollment-groups/${g.json.id}`)).json.enabled, true);
    // B's enrollment with the same CA is B's own: A's device is not visible through it.
    const gb = await srv.admin('POST', '/enrollment-groups', { name: 'b-group', attestation: { type: 'symmetric-key' } }, tokenB);
    assert.equal(gb.status, 201);
    assert.equal((await srv.admin('GET', `/enrollment-groups/${gb.json.id}`)).status, 404, 'A cannot read B either');
  });

  it('paginates devices with a cursor, no duplicates or gaps', async () => {
    const t = await srv.admin('POST', '/enrollment-groups', { name: 'pages', attestation: { type: 'symmetric-key' } });
    const { createHmac } = await import('node:crypto');
    const sign = (key: string, s: string) => createHmac('sha256', Buffer.from(key, 'base64')).update(s).digest('base64');
    const se = String(Math.floor(Date.now() / 1000) + 600);
    const ids: string[] = [];
    for (let i = 0; i < 7; i++) {
      const rid = `page-${i}`;
      const sr = encodeURIComponent(`${t.json.idScope}/registrations/${rid}`);
      const sig = encodeURIComponent(sign(sign(t.json.primaryKey, rid), `${sr}\n${se}`));
      const r = await srv.request('POST', '/v1/provision', { body: { registrationId: rid, csr: makeCsr(dir, `p${i}`).csrPem }, headers: { authorization: `SharedAccessSignature sr=${sr}&sig=${sig}&se=${se}&skn=registration` } });
      assert.equal(r.status, 200, r.text);
      ids.push(r.json.deviceId);
    }
    const seen: string[] = [];
    let cursor: string | null = null;
    do {
      const r = await srv.admin('GET', `/devices?enrollmentId=${t.json.id}&limit=3${cursor ? `&cursor=${cursor}` : ''}`);
      assert.equal(r.status, 200, r.text);
      assert.ok(r.json.items.length <= 3);
      seen.push(...r.json.items.map((d: { id: string }) => d.id));
      cursor = r.json.next;
    } while (cursor);
    assert.deepEqual([...seen].sort(), [...ids].sort());
  });

  it('shows attempts that failed before any tenant was known to platform admins only', async () => {
    makeCa(dir, 'nobody', '/O=Nobody/CN=nobody-ca');
    const stranger = makeLeaf(dir, 'nobody', 'stranger', 'STRANGER-1');
    const r = await srv.request('POST', '/v1/provision', { body: { csr: makeCsr(dir, 'stranger-csr').csrPem }, cert: stranger.certPem, key: stranger.keyPem });
    assert.equal(r.json.error.code, 'CERTIFICATE_UNTRUSTED');
    const own = await srv.admin('GET', '/attempts?registrationId=STRANGER-1');
    assert.equal(own.json.items.length, 0, 'no tenant owns it');
    const platform = await srv.admin('GET', '/attempts?unattributed=true&registrationId=STRANGER-1');
    assert.equal(platform.status, 200, platform.text);
    assert.equal(platform.json.items.length, 1);
    assert.equal(platform.json.items[0].reasonCode, 'CERTIFICATE_UNTRUSTED');
    assert.equal(platform.json.items[0].tenantId, null);
    const other = await srv.admin('GET', '/attempts?unattributed=true', undefined, tokenB);
    assert.equal(other.status, 403);
    assert.equal(other.json.error.code, 'FORBIDDEN');
  });

  it('serves an OpenAPI 3 document naming the admin paths', async () => {
    const r = await srv.request('GET', '/admin/v1/openapi.json');
    assert.equal(r.status, 200);
    assert.match(r.json.openapi, /^3\./);
    for (const p of ['/admin/v1/enrollment-groups', '/admin/v1/enrollments', '/admin/v1/devices', '/admin/v1/attempts', '/v1/provision']) assert.ok(r.json.paths[p], `${p} documented`);
    assert.equal(r.json.paths['/admin/v1/enrollment-groups'].post.requestBody.content['application/json'].schema.additionalProperties, false);
  });

  it('audit: every mutation is recorded; `fleetpass audit verify` detects an edited or deleted row', async () => {
    const events = await srv.admin('GET', '/audit-events?limit=1000');
    const actions = new Set(events.json.items.map((e: { action: string }) => e.action));
    for (const a of ['enrollment.create', 'ca.upload', 'template.create', 'policy.create', 'apikey.create', 'apikey.revoke']) assert.ok(actions.has(a), `audit has ${a}`);
    const url = ctx().url;
    const ok = auditVerify(url);
    assert.equal(ok.code, 0, ok.out);
    assert.match(ok.out, /intact/);
    await execRaw(url, "UPDATE audit_events SET action = 'tenant.nothing' WHERE seq = 3");
    const edited = auditVerify(url);
    assert.equal(edited.code, 1, edited.out);
    assert.match(edited.out, /BROKEN at event 3/);
    await execRaw(url, 'DELETE FROM audit_events WHERE seq = 3');
    const deleted = auditVerify(url);
    assert.equal(deleted.code, 1);
    assert.match(deleted.out, /event 3 is missing/);
  });
});
