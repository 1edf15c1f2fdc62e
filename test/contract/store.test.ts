/**
 * The Store contract (src/registry/store.ts), run on every backend. Each test works in its own fresh
 * tenants so tests do not depend on each other; only the audit chain is global by design.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { Worker } from 'node:worker_threads';
import { sql, type Kysely } from 'kysely';
import { FleetpassError } from '../../src/core/errors.js';
import { newId } from '../../src/core/ids.js';
import { AUDIT_GENESIS_HASH, auditEventHash } from '../../src/registry/audit-hash.js';
import { StoreConflictError } from '../../src/registry/store.js';
import { ConfigCache } from '../../src/registry/config-cache.js';
import type { Repos, Store } from '../../src/registry/store.js';
import type {
  ApiKey, AttemptRecord, Attestation, AuditEvent, CaRecord, CertificateRecord, Device, Enrollment, Page, PageRequest,
  Policy, Template, Tenant,
} from '../../src/registry/types.js';
import { migrateStore, openStore, type KyselyStore } from '../../src/storage/index.js';
import { describeEachBackend } from '../helpers/backends.js';
import { execRaw } from '../helpers/raw-sql.js';
import { holdWriteLock as holdLock } from '../helpers/write-lock.js';
import type { WorkerInput, WorkerOutput } from './store-worker.js';

// The transaction-misuse check is a development check; this file tests it (see StoreGuard).
process.env.FLEETPASS_DEV_CHECKS ??= '1';

// --- fixtures -----------------------------------------------------------------------------------

const now = (): string => new Date().toISOString();
const DAY = 86_400_000;
const iso = (offsetMs: number): string => new Date(Date.now() + offsetMs).toISOString();

function tenant(over: Partial<Tenant> = {}): Tenant {
  const id = newId('ten');
  return { id, name: `tenant ${id}`, idScope: `0ne${id.slice(4, 14)}${Math.random().toString(36).slice(2, 8)}`, createdAt: now(), ...over };
}

async function tenants(repos: Repos): Promise<[Tenant, Tenant]> {
  const a = tenant();
  const b = tenant();
  await repos.createTenant(a);
  await repos.createTenant(b);
  return [a, b];
}

function apiKey(tenantId: string, over: Partial<ApiKey> = {}): ApiKey {
  return { id: newId('key'), tenantId, name: 'ci', role: 'admin', tokenHash: newId('hash'), createdAt: now(), revokedAt: null, ...over };
}

function ca(tenantId: string | null, over: Partial<CaRecord> = {}): CaRecord {
  const id = newId('ca');
  return {
    id, tenantId, kind: tenantId === null ? 'issuing' : 'trusted', name: `ca ${id}`,
    certificatePem: '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n', subject: `CN=${id}`,
    fingerprint: newId('fp'), keyRef: tenantId === null ? `soft:${id}` : null, parentId: null, notBefore: iso(-DAY),
    notAfter: iso(365 * DAY), createdAt: now(), ...over,
  };
}

function template(tenantId: string, over: Partial<Template> = {}): Template {
  return {
    id: newId('tpl'), tenantId, name: newId('name'),
    body: { deviceName: '${model}-${registrationId}', attributes: { site: 'north' }, groups: ['g1'], configuration: { interval: 30, nested: { on: true } } },
    createdAt: now(), updatedAt: now(), ...over,
  };
}

function policy(tenantId: string, over: Partial<Policy> = {}): Policy {
  return {
    id: newId('pol'), tenantId, name: newId('name'),
    document: { publish: ['devices/${deviceId}/telemetry'], subscribe: ['devices/${deviceId}/config'], api: ['configuration:read'] },
    createdAt: now(), updatedAt: now(), ...over,
  };
}

function tokenAttestation(tokenHash = newId('tok')): Attestation {
  return { type: 'token', tokenHash, tokenExpiresAt: iso(DAY), usedAt: null, usedByKeyFingerprint: null, usedByDeviceId: null };
}

function enrollment(tenantId: string, over: Partial<Enrollment> = {}): Enrollment {
  return {
    id: newId('enr'), tenantId, kind: 'group', name: 'line 1', registrationId: null,
    attestation: { type: 'symmetric-key', sealedPrimaryKey: 'sealed-1', sealedSecondaryKey: null },
    templateId: null, template: null, reprovisionPolicy: 'reject', enabled: true, expiresAt: null, maxDevices: null,
    deviceCount: 0, webhookUrl: null, createdAt: now(), updatedAt: now(), ...over,
  };
}

function device(tenantId: string, enrollmentId: string, over: Partial<Device> = {}): Device {
  const registrationId = newId('reg');
  return {
    id: newId('dev'), tenantId, enrollmentId, registrationId, name: `sensor-${registrationId}`, model: 'sensor',
    firmwareVersion: '1.2.3', region: 'eu', status: 'active', publicKeyFingerprint: newId('fp'),
    attributes: { site: 'north' }, groups: ['g1'], policyName: null, configuration: { interval: 30 },
    configurationVersion: 1, createdAt: now(), updatedAt: now(), provisionedAt: now(), ...over,
  };
}

function certificate(tenantId: string | null, deviceId: string | null, issuerCaId: string, over: Partial<CertificateRecord> = {}): CertificateRecord {
  return {
    id: newId('crt'), tenantId, deviceId, serial: newId('s').slice(2).toLowerCase(), issuerCaId, subject: 'CN=dev',
    notBefore: iso(-DAY), notAfter: iso(30 * DAY), publicKeyFingerprint: newId('fp'), pem: '-----BEGIN CERTIFICATE-----\n…',
    status: 'active', revokedAt: null, revocationReason: null, createdAt: now(), ...over,
  };
}

function attempt(tenantId: string | null, over: Partial<AttemptRecord> = {}): AttemptRecord {
  return {
    id: newId('att'), tenantId, enrollmentId: null, registrationId: 'reg-1', protocol: 'https', sourceAddress: '10.0.0.1',
    outcome: 'success', reasonCode: null, message: null, deviceId: null, latencyMs: 12, createdAt: now(), ...over,
  };
}

function auditInput(tenantId: string | null, action = 'test.action', details: Record<string, unknown> = { n: 1 }) {
  return { id: newId('aud'), createdAt: now(), tenantId, actor: 'system', action, resourceType: 'test', resourceId: null, details };
}

/** Walks every page of a list; asserts ascending ids, no duplicates, and a null cursor at the end. */
async function collect<T extends { id: string }>(limit: number, list: (p: PageRequest) => Promise<Page<T>>): Promise<{ items: T[]; pages: number }> {
  const items: T[] = [];
  let cursor: string | null = null;
  let pages = 0;
  for (;;) {
    const page: Page<T> = await list({ limit, cursor });
    pages++;
    assert.ok(page.items.length <= limit, 'page larger than limit');
    items.push(...page.items);
    if (page.next === null) break;
    assert.equal(page.next, page.items[page.items.length - 1]?.id, 'cursor is the last id of the page');
    assert.ok(pages < 1000, 'pagination does not terminate');
    cursor = page.next;
  }
  const ids = items.map((i) => i.id);
  assert.equal(new Set(ids).size, ids.length, 'duplicate rows across pages');
  assert.deepEqual(ids, [...ids].sort(), 'rows not ordered by id ascending');
  return { items, pages };
}

async function verifyChain(store: Store, batchSize: number): Promise<AuditEvent[]> {
  const all: AuditEvent[] = [];
  for await (const batch of store.iterateAudit(batchSize)) {
    assert.ok(batch.length > 0 && batch.length <= batchSize);
    all.push(...batch);
  }
  let prev = AUDIT_GENESIS_HASH;
  all.forEach((ev, i) => {
    assert.equal(ev.seq, i + 1, 'seq must be gap-free from 1');
    assert.equal(ev.prevHash, prev, `event ${ev.seq} does not link to its predecessor (fork)`);
    const { hash, ...rest } = ev;
    assert.equal(hash, auditEventHash(rest), `event ${ev.seq} hash does not verify`);
    prev = hash;
  });
  return all;
}

function isConflict(constraint?: string) {
  return (err: unknown): boolean => {
    assert.ok(err instanceof StoreConflictError, `expected StoreConflictError, got ${String(err)}`);
    if (constraint !== undefined) assert.equal(err.constraint, constraint);
    return true;
  };
}

function runWorker(input: WorkerInput): Promise<WorkerOutput> {
  return new Promise((resolve, reject) => {
    const w = new Worker(new URL('./store-worker.js', import.meta.url), { workerData: input });
    w.once('message', (m: WorkerOutput) => resolve(m));
    w.once('error', reject);
    w.once('exit', (code) => (code === 0 ? undefined : reject(new Error(`worker exited with ${code}`))));
  });
}

// --- the contract ---------------------------------------------------------------------------------

describeEachBackend('Store contract', (ctx) => {
  it('reports its dialect and answers ping', async () => {
    const { store, backend } = ctx();
    assert.equal(store.dialect, backend);
    await store.ping();
  });

  describe('tenants', () => {
    it('creates, reads by id and idScope, lists, and rejects duplicates', async () => {
      const { store } = ctx();
      const t = tenant();
      await store.createTenant(t);
      assert.deepEqual(await store.getTenant(t.id), t);
      assert.deepEqual(await store.getTenantByIdScope(t.idScope), t);
      assert.equal(await store.getTenant(newId('ten')), undefined);
      await assert.rejects(store.createTenant({ ...t, id: newId('ten') }), isConflict('tenants_id_scope_key'));
      await assert.rejects(store.createTenant({ ...t, idScope: 'other-scope-' + t.id }), isConflict('tenants_pkey'));
      const { items } = await collect(2, (p) => store.listTenants(p));
      assert.ok(items.some((x) => x.id === t.id));
    });
  });

  describe('API keys', () => {
    it('CRUD, tenant scoping, unique token hash, revoke', async () => {
      const { store } = ctx();
      const [a, b] = await tenants(store);
      const k = apiKey(a.id);
      await store.createApiKey(k);
      assert.deepEqual(await store.getApiKeyByTokenHash(k.tokenHash), k);
      await assert.rejects(store.createApiKey(apiKey(b.id, { tokenHash: k.tokenHash })), isConflict('api_keys_token_hash_key'));
      assert.deepEqual((await store.listApiKeys(a.id, { limit: 10 })).items, [k]);
      assert.deepEqual((await store.listApiKeys(b.id, { limit: 10 })).items, []);
      assert.equal(await store.revokeApiKey(b.id, k.id, now()), false, 'tenant B revoked tenant A key');
      const at = now();
      assert.equal(await store.revokeApiKey(a.id, k.id, at), true);
      assert.equal((await store.getApiKeyByTokenHash(k.tokenHash))?.revokedAt, at);
      assert.equal(await store.revokeApiKey(a.id, k.id, iso(DAY)), true);
      assert.equal((await store.getApiKeyByTokenHash(k.tokenHash))?.revokedAt, at, 'first revocation time is kept');
    });
  });

  describe('CAs', () => {
    it('platform CAs are visible to every tenant, tenant CAs only to their owner', async () => {
      const { store } = ctx();
      const [a, b] = await tenants(store);
      const platform = ca(null, { kind: 'root' });
      const mine = ca(a.id, { subject: `CN=Shared Manufacturer CA ${a.id}` });
      const theirs = ca(b.id, { subject: mine.subject });
      for (const c of [platform, mine, theirs]) await store.createCa(c);
      await assert.rejects(store.createCa(mine), isConflict('cas_pkey'));

      assert.deepEqual(await store.getCa(a.id, mine.id), mine);
      assert.deepEqual(await store.getCa(a.id, platform.id), platform);
      assert.deepEqual(await store.getCa(b.id, platform.id), platform);
      assert.equal(await store.getCa(b.id, mine.id), undefined);
      assert.deepEqual(await store.getCa(null, platform.id), platform);
      assert.equal(await store.getCa(null, mine.id), undefined);

      const listA = await collect(1, (p) => store.listCas(a.id, {}, p));
      assert.ok(listA.items.some((c) => c.id === mine.id) && listA.items.some((c) => c.id === platform.id));
      assert.ok(!listA.items.some((c) => c.id === theirs.id));
      assert.ok(listA.items.every((c) => c.tenantId === null || c.tenantId === a.id));
      const trustedA = await store.listCas(a.id, { kind: 'trusted' }, { limit: 100 });
      assert.deepEqual(trustedA.items, [mine]);
      const platformOnly = await collect(50, (p) => store.listCas(null, {}, p));
      assert.ok(platformOnly.items.every((c) => c.tenantId === null));

      const bySubject = await store.findTrustedCasBySubject(mine.subject);
      assert.deepEqual(bySubject.map((c) => c.id).sort(), [mine.id, theirs.id].sort());

      assert.equal(await store.deleteCa(b.id, mine.id), false, 'tenant B deleted tenant A CA');
      assert.equal(await store.deleteCa(a.id, platform.id), false, 'a tenant deleted a platform CA');
      assert.equal(await store.deleteCa(a.id, mine.id), true);
      assert.equal(await store.getCa(a.id, mine.id), undefined);
    });
  });

  describe('templates', () => {
    it('CRUD with tenant scoping and unique name per tenant', async () => {
      const { store } = ctx();
      const [a, b] = await tenants(store);
      const t = template(a.id, { name: 'default' });
      await store.createTemplate(t);
      assert.deepEqual(await store.getTemplate(a.id, t.id), t);
      assert.deepEqual(await store.getTemplateByName(a.id, 'default'), t);
      assert.equal(await store.getTemplate(b.id, t.id), undefined);
      assert.equal(await store.getTemplateByName(b.id, 'default'), undefined);

      await assert.rejects(store.createTemplate(template(a.id, { name: 'default' })), isConflict('templates_tenant_name_key'));
      const other = template(b.id, { name: 'default' });
      await store.createTemplate(other); // same name, other tenant: fine

      const updated: Template = { ...t, body: { ...t.body, groups: ['g2'] }, updatedAt: iso(1000) };
      assert.equal(await store.updateTemplate({ ...updated, tenantId: b.id }), false, 'tenant B updated tenant A template');
      assert.equal(await store.updateTemplate(updated), true);
      assert.deepEqual(await store.getTemplate(a.id, t.id), updated);
      const second = template(a.id, { name: 'second' });
      await store.createTemplate(second);
      await assert.rejects(store.updateTemplate({ ...second, name: 'default' }), isConflict('templates_tenant_name_key'));

      assert.deepEqual((await collect(1, (p) => store.listTemplates(a.id, p))).items.map((x) => x.id).sort(), [t.id, second.id].sort());
      assert.deepEqual((await store.listTemplates(b.id, { limit: 10 })).items, [other]);

      assert.equal(await store.deleteTemplate(b.id, t.id), false, 'tenant B deleted tenant A template');
      assert.equal(await store.deleteTemplate(a.id, t.id), true);
      assert.equal(await store.getTemplate(a.id, t.id), undefined);
      assert.equal(await store.deleteTemplate(a.id, t.id), false);
    });
  });

  describe('policies', () => {
    it('CRUD with tenant scoping and unique name per tenant', async () => {
      const { store } = ctx();
      const [a, b] = await tenants(store);
      const p = policy(a.id, { name: 'sensors' });
      await store.createPolicy(p);
      assert.deepEqual(await store.getPolicy(a.id, p.id), p);
      assert.deepEqual(await store.getPolicyByName(a.id, 'sensors'), p);
      assert.equal(await store.getPolicy(b.id, p.id), undefined);
      assert.equal(await store.getPolicyByName(b.id, 'sensors'), undefined);
      await assert.rejects(store.createPolicy(policy(a.id, { name: 'sensors' })), isConflict('policies_tenant_name_key'));
      await store.createPolicy(policy(b.id, { name: 'sensors' }));

      const updated: Policy = { ...p, document: { publish: [] }, updatedAt: iso(1000) };
      assert.equal(await store.updatePolicy({ ...updated, tenantId: b.id }), false);
      assert.equal(await store.updatePolicy(updated), true);
      assert.deepEqual(await store.getPolicy(a.id, p.id), updated);
      assert.deepEqual((await store.listPolicies(a.id, { limit: 10 })).items, [updated]);

      assert.equal(await store.deletePolicy(b.id, p.id), false);
      assert.equal(await store.deletePolicy(a.id, p.id), true);
      assert.equal(await store.getPolicy(a.id, p.id), undefined);
    });
  });

  describe('enrollments', () => {
    it('CRUD, filters and tenant scoping', async () => {
      const { store } = ctx();
      const [a, b] = await tenants(store);
      const trusted = ca(a.id);
      await store.createCa(trusted);
      const group = enrollment(a.id, {
        attestation: { type: 'x509-ca', caId: trusted.id, requireRegistrationIdMatch: true },
        template: { groups: ['inline'], configuration: { x: [1, 2, { y: null }] } }, maxDevices: 10, expiresAt: iso(DAY),
        webhookUrl: 'https://hooks.example/pre',
      });
      const individual = enrollment(a.id, {
        kind: 'individual', registrationId: 'reg-ind-1',
        attestation: { type: 'x509-leaf', certificateFingerprint: 'ab'.repeat(32), certificatePem: 'PEM' },
      });
      const sym = enrollment(a.id);
      const foreignInd = enrollment(b.id, { kind: 'individual', registrationId: 'reg-ind-1', attestation: tokenAttestation() });
      for (const e of [group, individual, sym, foreignInd]) await store.createEnrollment(e);
      await assert.rejects(store.createEnrollment(group), isConflict('enrollments_pkey'));

      assert.deepEqual(await store.getEnrollment(a.id, group.id), group);
      assert.deepEqual(await store.getEnrollment(a.id, individual.id), individual);
      assert.equal(await store.getEnrollment(b.id, group.id), undefined);

      assert.deepEqual((await store.listEnrollments(a.id, {}, { limit: 10 })).items.map((e) => e.id), [group.id, individual.id, sym.id].sort());
      assert.deepEqual((await store.listEnrollments(a.id, { kind: 'individual' }, { limit: 10 })).items, [individual]);
      assert.deepEqual((await store.listEnrollments(a.id, { attestationType: 'x509-ca' }, { limit: 10 })).items, [group]);
      assert.deepEqual((await store.listEnrollments(a.id, { registrationId: 'reg-ind-1' }, { limit: 10 })).items, [individual]);
      assert.deepEqual((await store.listEnrollments(b.id, {}, { limit: 10 })).items, [foreignInd]);

      assert.deepEqual((await store.findIndividualEnrollments(a.id, 'reg-ind-1')).map((e) => e.id), [individual.id]);
      assert.deepEqual((await store.findIndividualEnrollments(null, 'reg-ind-1')).map((e) => e.id).sort(), [individual.id, foreignInd.id].sort());
      assert.deepEqual((await store.findGroupEnrollments(a.id, 'x509-ca')).map((e) => e.id), [group.id]);
      assert.deepEqual((await store.findGroupEnrollments(a.id, 'symmetric-key')).map((e) => e.id), [sym.id]);
      assert.deepEqual((await store.findGroupEnrollments(b.id, 'x509-ca')), []);
      assert.deepEqual((await store.findEnrollmentsByCaIds([trusted.id, 'ca_unknown'])).map((e) => e.id), [group.id]);
      assert.deepEqual(await store.findEnrollmentsByCaIds([]), []);

      const updated: Enrollment = {
        ...sym, name: 'renamed', enabled: false, maxDevices: 3, expiresAt: iso(2 * DAY), templateId: 'tpl_x', template: null,
        reprovisionPolicy: 'replace-key', webhookUrl: null, attestation: { type: 'symmetric-key', sealedPrimaryKey: 'p2', sealedSecondaryKey: 's2' },
        updatedAt: iso(1000),
      };
      assert.equal(await store.updateEnrollment({ ...updated, tenantId: b.id }), false, 'tenant B updated tenant A enrollment');
      assert.equal(await store.updateEnrollment(updated), true);
      assert.deepEqual(await store.getEnrollment(a.id, sym.id), updated);
      // attestation type changes move the enrollment between query columns
      const toCa: Enrollment = { ...updated, attestation: { type: 'x509-ca', caId: trusted.id, requireRegistrationIdMatch: false } };
      assert.equal(await store.updateEnrollment(toCa), true);
      assert.deepEqual((await store.findEnrollmentsByCaIds([trusted.id])).map((e) => e.id), [group.id, sym.id].sort());

      assert.equal(await store.deleteEnrollment(b.id, sym.id), false, 'tenant B deleted tenant A enrollment');
      assert.equal(await store.deleteEnrollment(a.id, sym.id), true);
      assert.equal(await store.getEnrollment(a.id, sym.id), undefined);
    });

    it('token hash is unique and findable; markTokenUsed succeeds exactly once under concurrency', async () => {
      const { store } = ctx();
      const [a, b] = await tenants(store);
      const e = enrollment(a.id, { kind: 'individual', registrationId: 'tok-dev', attestation: tokenAttestation() });
      await store.createEnrollment(e);
      const hash = (e.attestation as Extract<Attestation, { type: 'token' }>).tokenHash;
      await assert.rejects(store.createEnrollment(enrollment(b.id, { attestation: tokenAttestation(hash) })), isConflict('enrollments_token_hash_key'));
      // non-token enrollments have no token hash: many may coexist
      await store.createEnrollment(enrollment(a.id));
      await store.createEnrollment(enrollment(a.id));
      assert.deepEqual(await store.findEnrollmentByTokenHash(hash), e);
      assert.equal(await store.findEnrollmentByTokenHash('nope'), undefined);

      const racers = Array.from({ length: 12 }, (_, i) => ({ fp: `fp-${i}`, dev: `dev-${i}` }));
      const usedAt = now();
      const results = await Promise.all(racers.map((r) => store.markTokenUsed(e.id, usedAt, r.fp, r.dev)));
      assert.equal(results.filter(Boolean).length, 1, 'exactly one markTokenUsed wins');
      const winner = racers[results.indexOf(true)]!;
      const after = await store.getEnrollment(a.id, e.id);
      assert.deepEqual(after?.attestation, { ...e.attestation, usedAt, usedByKeyFingerprint: winner.fp, usedByDeviceId: winner.dev });
      assert.equal(await store.markTokenUsed(e.id, now(), 'fp-late', 'dev-late'), false);

      // an update built from a stale read (usedAt null, same hash) cannot make the token usable again
      assert.equal(await store.updateEnrollment({ ...e, name: 'renamed', updatedAt: iso(1000) }), true);
      const renamed = await store.getEnrollment(a.id, e.id);
      assert.equal(renamed?.name, 'renamed');
      assert.equal(renamed?.attestation.type === 'token' && renamed.attestation.usedByDeviceId, winner.dev);
      // a new token (new hash) resets usage
      const fresh = tokenAttestation();
      assert.equal(await store.updateEnrollment({ ...e, attestation: fresh, updatedAt: iso(2000) }), true);
      assert.deepEqual((await store.getEnrollment(a.id, e.id))?.attestation, fresh);
      assert.equal(await store.findEnrollmentByTokenHash(hash), undefined);
      assert.equal(await store.markTokenUsed(e.id, now(), 'fp-new', 'dev-new'), true);

      const notToken = enrollment(a.id);
      await store.createEnrollment(notToken);
      assert.equal(await store.markTokenUsed(notToken.id, now(), 'fp', 'dev'), false, 'only token enrollments can be marked used');
    });

    it('incrementDeviceCount stops at maxDevices under 20 concurrent calls; decrement stops at 0', async () => {
      const { store } = ctx();
      const [a] = await tenants(store);
      const limited = enrollment(a.id, { maxDevices: 5 });
      const unlimited = enrollment(a.id, { maxDevices: null });
      await store.createEnrollment(limited);
      await store.createEnrollment(unlimited);

      const results = await Promise.all(Array.from({ length: 20 }, () => store.incrementDeviceCount(limited.id)));
      assert.equal(results.filter(Boolean).length, 5);
      assert.equal((await store.getEnrollment(a.id, limited.id))?.deviceCount, 5);
      assert.equal(await store.incrementDeviceCount(limited.id), false);

      const many = await Promise.all(Array.from({ length: 20 }, () => store.incrementDeviceCount(unlimited.id)));
      assert.ok(many.every(Boolean));
      assert.equal((await store.getEnrollment(a.id, unlimited.id))?.deviceCount, 20);
      assert.equal(await store.incrementDeviceCount('enr_missing'), false);

      await store.decrementDeviceCount(limited.id);
      assert.equal((await store.getEnrollment(a.id, limited.id))?.deviceCount, 4);
      assert.equal(await store.incrementDeviceCount(limited.id), true);
      await Promise.all(Array.from({ length: 8 }, () => store.decrementDeviceCount(limited.id)));
      assert.equal((await store.getEnrollment(a.id, limited.id))?.deviceCount, 0);

      // updateEnrollment leaves the counter alone
      const current = (await store.getEnrollment(a.id, unlimited.id))!;
      assert.equal(await store.updateEnrollment({ ...current, deviceCount: 0, name: 'x' }), true);
      assert.equal((await store.getEnrollment(a.id, unlimited.id))?.deviceCount, 20);
    });
  });

  describe('devices', () => {
    it('CRUD, filters, counts and tenant scoping', async () => {
      const { store } = ctx();
      const [a, b] = await tenants(store);
      const e = enrollment(a.id);
      await store.createEnrollment(e);
      const d1 = device(a.id, e.id, { groups: ['north', 'sensors', 'north'], model: 'm1' });
      const d2 = device(a.id, e.id, { groups: ['sensors'], model: 'm2', status: 'suspended' });
      const d3 = device(a.id, 'enr_other', { groups: [], model: 'm1' });
      for (const d of [d1, d2, d3]) await store.createDevice(d);

      assert.deepEqual(await store.getDevice(a.id, d1.id), d1, 'groups array is returned as written');
      assert.deepEqual(await store.getDeviceByRegistrationId(a.id, d2.registrationId), d2);
      assert.equal(await store.getDevice(b.id, d1.id), undefined);
      assert.equal(await store.getDeviceByRegistrationId(b.id, d1.registrationId), undefined);

      const ids = async (f: Parameters<Store['listDevices']>[1]): Promise<string[]> =>
        (await collect(2, (p) => store.listDevices(a.id, f, p))).items.map((d) => d.id);
      assert.deepEqual(await ids({}), [d1.id, d2.id, d3.id].sort());
      assert.deepEqual(await ids({ group: 'sensors' }), [d1.id, d2.id].sort());
      assert.deepEqual(await ids({ group: 'north' }), [d1.id]);
      assert.deepEqual(await ids({ status: 'suspended' }), [d2.id]);
      assert.deepEqual(await ids({ enrollmentId: e.id }), [d1.id, d2.id].sort());
      assert.deepEqual(await ids({ model: 'm1' }), [d1.id, d3.id].sort());
      assert.deepEqual(await ids({ model: 'm1', group: 'sensors' }), [d1.id]);
      assert.deepEqual(await ids({ registrationId: d3.registrationId }), [d3.id]);
      assert.equal(await store.countDevices(a.id, {}), 3);
      assert.equal(await store.countDevices(a.id, { group: 'sensors' }), 2);
      assert.equal(await store.countDevices(a.id, { group: 'sensors', status: 'active' }), 1);
      assert.equal(await store.countDevices(b.id, {}), 0);
      assert.deepEqual((await store.listDevices(b.id, {}, { limit: 10 })).items, []);

      const updated: Device = {
        ...d1, name: 'renamed', groups: ['south'], status: 'revoked', attributes: { a: 'b' }, configuration: { c: { d: 1 } },
        configurationVersion: 2, firmwareVersion: '2.0.0', region: null, policyName: 'p', publicKeyFingerprint: 'fp-new',
        updatedAt: iso(1000), provisionedAt: iso(1000),
      };
      assert.equal(await store.updateDevice({ ...updated, tenantId: b.id }), false, 'tenant B updated tenant A device');
      assert.deepEqual(await ids({ group: 'north' }), [d1.id], 'failed update left groups alone');
      assert.equal(await store.updateDevice(updated), true);
      assert.deepEqual(await store.getDevice(a.id, d1.id), updated);
      assert.deepEqual(await ids({ group: 'north' }), []);
      assert.deepEqual(await ids({ group: 'south' }), [d1.id]);

      assert.equal(await store.deleteDevice(b.id, d1.id), false, 'tenant B deleted tenant A device');
      assert.equal(await store.deleteDevice(a.id, d1.id), true);
      assert.equal(await store.getDevice(a.id, d1.id), undefined);
      assert.deepEqual(await ids({ group: 'south' }), []);
      // the registration ID is free again, and its group rows went with the device
      await store.createDevice({ ...d1, id: newId('dev'), groups: ['south'] });
      assert.equal(await store.countDevices(a.id, { group: 'south' }), 1);
    });

    it('registration ID is unique per tenant', async () => {
      const { store } = ctx();
      const [a, b] = await tenants(store);
      const d = device(a.id, 'enr_x', { registrationId: 'SN-0001' });
      await store.createDevice(d);
      await assert.rejects(store.createDevice(device(a.id, 'enr_x', { registrationId: 'SN-0001' })), isConflict('devices_tenant_registration_id_key'));
      await store.createDevice(device(b.id, 'enr_y', { registrationId: 'SN-0001' }));
      await assert.rejects(store.createDevice({ ...d, registrationId: 'SN-0002' }), isConflict('devices_pkey'));
      assert.equal(await store.getDeviceByRegistrationId(a.id, 'SN-0002'), undefined, 'failed create left nothing behind');
    });
  });

  describe('cursor pagination', () => {
    for (const [count, limit] of [[25, 7], [21, 7], [3, 10], [0, 5], [5, 1]] as const) {
      it(`${count} rows in pages of ${limit}: no duplicates, no gaps`, async () => {
        const { store } = ctx();
        const [a, b] = await tenants(store);
        const created: string[] = [];
        for (let i = 0; i < count; i++) {
          const d = device(a.id, 'enr_p');
          created.push(d.id);
          await store.createDevice(d);
        }
        await store.createDevice(device(b.id, 'enr_p')); // another tenant's row must not appear
        const { items, pages } = await collect(limit, (p) => store.listDevices(a.id, {}, p));
        assert.deepEqual(items.map((d) => d.id), [...created].sort());
        assert.equal(pages, Math.max(1, Math.ceil(count / limit)), 'no empty trailing page');
      });
    }
  });

  describe('certificates', () => {
    it('create, unique serial, scoped reads, status changes, active lookup and CRL entries', async () => {
      const { store } = ctx();
      const [a, b] = await tenants(store);
      const issuer = ca(null);
      await store.createCa(issuer);
      const d = device(a.id, 'enr_c');
      await store.createDevice(d);
      const c1 = certificate(a.id, d.id, issuer.id, { publicKeyFingerprint: 'fp-1', createdAt: iso(-2000) });
      const c2 = certificate(a.id, d.id, issuer.id, { publicKeyFingerprint: 'fp-1', createdAt: iso(-1000) });
      const c3 = certificate(a.id, d.id, issuer.id, { publicKeyFingerprint: 'fp-2' });
      const platformCert = certificate(null, null, issuer.id);
      for (const c of [c1, c2, c3, platformCert]) await store.createCertificate(c);
      await assert.rejects(store.createCertificate(certificate(b.id, null, issuer.id, { serial: c1.serial })), isConflict('certificates_serial_key'));

      assert.deepEqual(await store.getCertificate(a.id, c1.id), c1);
      assert.deepEqual(await store.getCertificate(null, c1.id), c1);
      assert.equal(await store.getCertificate(b.id, c1.id), undefined, 'tenant B read tenant A certificate');
      assert.deepEqual(await store.getCertificate(null, platformCert.id), platformCert);
      assert.deepEqual(await store.getCertificateBySerial(c2.serial), c2);
      assert.equal(await store.getCertificateBySerial('00'), undefined);

      assert.deepEqual((await collect(2, (p) => store.listCertificates(a.id, {}, p))).items.map((c) => c.id), [c1.id, c2.id, c3.id].sort());
      assert.deepEqual((await store.listCertificates(b.id, {}, { limit: 10 })).items, []);
      assert.deepEqual((await store.listCertificates(a.id, { serial: c3.serial }, { limit: 10 })).items, [c3]);
      assert.deepEqual((await store.listCertificates(a.id, { deviceId: d.id, status: 'active' }, { limit: 10 })).items.length, 3);

      assert.equal((await store.findActiveCertificate(d.id, 'fp-1'))?.id, c2.id, 'newest active certificate for the key');
      assert.equal(await store.findActiveCertificate(d.id, 'fp-none'), undefined);

      assert.equal(await store.setCertificateStatus(c2.id, 'superseded', null, null), true);
      assert.equal((await store.findActiveCertificate(d.id, 'fp-1'))?.id, c1.id);
      assert.equal(await store.setCertificateStatus('crt_missing', 'revoked', now(), 'x'), false);
      const revokedAt = now();
      assert.equal(await store.setCertificateStatus(c1.id, 'revoked', revokedAt, 'keyCompromise'), true);
      assert.deepEqual(await store.getCertificate(a.id, c1.id), { ...c1, status: 'revoked', revokedAt, revocationReason: 'keyCompromise' });
      assert.equal(await store.findActiveCertificate(d.id, 'fp-1'), undefined);

      assert.equal(await store.setDeviceCertificatesStatus(d.id, 'active', 'revoked', revokedAt, 'cessationOfOperation'), 1);
      assert.equal(await store.setDeviceCertificatesStatus(d.id, 'active', 'revoked', revokedAt, 'cessationOfOperation'), 0);
      assert.equal((await store.getCertificate(a.id, c3.id))?.revocationReason, 'cessationOfOperation');
      assert.equal((await store.getCertificate(a.id, c2.id))?.status, 'superseded', 'only certificates in fromStatus change');

      // CRL entries: revoked, this issuer, not expired before the cut-off
      const expired = certificate(a.id, d.id, issuer.id, { notAfter: iso(-10 * DAY), status: 'revoked', revokedAt, revocationReason: 'x' });
      const otherIssuer = ca(null);
      await store.createCa(otherIssuer);
      const foreign = certificate(a.id, d.id, otherIssuer.id, { status: 'revoked', revokedAt, revocationReason: 'x' });
      await store.createCertificate(expired);
      await store.createCertificate(foreign);
      assert.deepEqual((await store.listRevokedCertificates(issuer.id, iso(-DAY))).map((c) => c.id), [c1.id, c3.id].sort());
      assert.deepEqual((await store.listRevokedCertificates(issuer.id, iso(-30 * DAY))).map((c) => c.id), [c1.id, c3.id, expired.id].sort());
      assert.deepEqual((await store.listRevokedCertificates(otherIssuer.id, iso(-DAY))).map((c) => c.id), [foreign.id]);
    });
  });

  describe('attempts', () => {
    it('records and lists attempts per tenant with filters', async () => {
      const { store } = ctx();
      const [a, b] = await tenants(store);
      const t0 = iso(-3000);
      const t1 = iso(-2000);
      const t2 = iso(-1000);
      const ok = attempt(a.id, { createdAt: t0, enrollmentId: 'enr_1', deviceId: 'dev_1' });
      const bad = attempt(a.id, { createdAt: t1, outcome: 'failure', reasonCode: 'CSR_INVALID', registrationId: 'reg-2', message: 'bad csr', latencyMs: 3.6 });
      const bad2 = attempt(a.id, { createdAt: t2, outcome: 'failure', reasonCode: 'RATE_LIMITED', sourceAddress: null });
      const unknownTenant = attempt(null, { outcome: 'failure', reasonCode: 'ENROLLMENT_NOT_FOUND' });
      const foreign = attempt(b.id);
      for (const x of [ok, bad, bad2, unknownTenant, foreign]) await store.recordAttempt(x);
      await assert.rejects(store.recordAttempt(ok), isConflict('attempts_pkey'));

      const list = async (f: Parameters<Store['listAttempts']>[1]): Promise<AttemptRecord[]> =>
        (await collect(2, (p) => store.listAttempts(a.id, f, p))).items;
      assert.deepEqual(await list({}), [ok, { ...bad, latencyMs: 4 }, bad2].sort((x, y) => (x.id < y.id ? -1 : 1)));
      assert.deepEqual((await list({ reasonCode: 'CSR_INVALID' })).map((x) => x.id), [bad.id]);
      assert.deepEqual((await list({ outcome: 'failure' })).map((x) => x.id), [bad.id, bad2.id].sort());
      assert.deepEqual((await list({ registrationId: 'reg-2' })).map((x) => x.id), [bad.id]);
      assert.deepEqual((await list({ enrollmentId: 'enr_1' })).map((x) => x.id), [ok.id]);
      assert.deepEqual((await list({ since: t1 })).map((x) => x.id), [bad.id, bad2.id].sort());
      assert.deepEqual((await list({ since: t0, until: t2 })).map((x) => x.id), [ok.id, bad.id].sort());
      assert.deepEqual((await store.listAttempts(b.id, {}, { limit: 10 })).items, [foreign]);
    });
  });

  describe('transactions', () => {
    it('commits everything done through tx', async () => {
      const { store } = ctx();
      const t = tenant();
      const result = await store.transaction(async (tx) => {
        await tx.createTenant(t);
        const e = enrollment(t.id, { maxDevices: 1 });
        await tx.createEnrollment(e);
        assert.equal(await tx.incrementDeviceCount(e.id), true);
        const d = device(t.id, e.id);
        await tx.createDevice(d);
        await tx.appendAudit(auditInput(t.id, 'device.create'));
        assert.deepEqual(await tx.getDevice(t.id, d.id), d, 'reads inside the transaction see its writes');
        return { e, d };
      });
      assert.deepEqual(await store.getTenant(t.id), t);
      assert.deepEqual(await store.getDevice(t.id, result.d.id), result.d);
      assert.equal((await store.getEnrollment(t.id, result.e.id))?.deviceCount, 1);
      assert.equal((await store.listAudit(t.id, { limit: 10 })).items.length, 1);
    });

    it('a conflicting write inside tx can be caught and the transaction carries on, again and again', async () => {
      const { store } = ctx();
      const t = tenant();
      await store.createTenant(t);
      const e = enrollment(t.id);
      await store.createEnrollment(e);
      const taken = device(t.id, e.id, { groups: ['g1'] });
      await store.createDevice(taken);
      const fresh = Array.from({ length: 3 }, () => device(t.id, e.id, { groups: ['g1', 'g2'] }));
      const conflicts = await store.transaction(async (tx) => {
        let n = 0;
        for (const d of fresh) {
          // The same registration ID again, then the same ID: each fails alone, the transaction goes on.
          await tx.createDevice({ ...d, id: `${d.id}-dup`, registrationId: taken.registrationId }).catch((err: unknown) => {
            if (err instanceof StoreConflictError && err.constraint === 'devices_tenant_registration_id_key') n++;
            else throw err;
          });
          await tx.createDevice({ ...d, id: taken.id, registrationId: `${d.registrationId}-other` }).catch((err: unknown) => {
            if (err instanceof StoreConflictError && err.constraint === 'devices_pkey') n++;
            else throw err;
          });
          await tx.createDevice(d);
        }
        return n;
      });
      assert.equal(conflicts, 6);
      for (const d of fresh) assert.deepEqual(await store.getDevice(t.id, d.id), d);
      assert.equal(await store.getDevice(t.id, `${fresh[0]!.id}-dup`), undefined);
      assert.equal(await store.countDevices(t.id, { group: 'g2' }), 3);
    });

    it('transactions started together: one that throws rolls back alone, the rest commit and see each other in turn', async () => {
      const { store } = ctx();
      const t = tenant();
      await store.createTenant(t);
      const e = enrollment(t.id, { maxDevices: 3 });
      await store.createEnrollment(e);
      const boom = new Error('boom');
      const devices = Array.from({ length: 6 }, () => device(t.id, e.id));
      // Six at once (SQLite groups them into one database transaction): the second throws after
      // writing; four of the other five find room under maxDevices 3 only if each sees the others.
      const results = await Promise.allSettled(
        devices.map((d, i) =>
          store.transaction(async (tx) => {
            await tx.createDevice(d);
            if (i === 1) throw boom;
            if (!(await tx.incrementDeviceCount(e.id))) throw new Error(`full at ${i}`);
            return i;
          }),
        ),
      );
      assert.deepEqual(results[1], { status: 'rejected', reason: boom });
      const ok = results.filter((r) => r.status === 'fulfilled');
      const full = results.filter((r) => r.status === 'rejected' && /^full at/.test(String((r.reason as Error).message)));
      assert.equal(ok.length, 3, JSON.stringify(results));
      assert.equal(full.length, 2);
      assert.equal((await store.getEnrollment(t.id, e.id))?.deviceCount, 3);
      for (const [i, r] of results.entries()) {
        assert.equal((await store.getDevice(t.id, devices[i]!.id)) !== undefined, r.status === 'fulfilled', `device ${i}`);
      }
      assert.equal(await store.countDevices(t.id, { group: 'g1' }), 3, 'device groups of the rolled-back ones are gone too');
    });

    it('a transaction that makes the database roll back everything fails alone: those started with it still commit', async () => {
      const { store, url, backend } = ctx();
      const t = tenant();
      await store.createTenant(t);
      const poison = `poison-${t.id}`;
      // A trigger that aborts the whole database transaction, not just its statement: on SQLite,
      // RAISE(ROLLBACK) also removes the savepoint the group commit gave that member.
      await execRaw(
        url,
        backend === 'sqlite'
          ? `create trigger poison_settings before insert on settings when new.key like 'poison-%' begin select raise(rollback, 'poisoned setting'); end`
          : `create function poison_settings() returns trigger language plpgsql as $$ begin raise exception 'poisoned setting'; end $$;
             create trigger poison_settings before insert on settings for each row when (new.key like 'poison-%') execute function poison_settings()`,
      );
      try {
        const before = store.transactionStats();
        const made = Array.from({ length: 6 }, () => tenant());
        // Started in one turn of the event loop: on SQLite one group, with the poisoned one in the middle.
        const results = await Promise.allSettled(
          made.map((m, i) =>
            store.transaction(async (tx) => {
              await tx.createTenant(m);
              await tx.putSettingIfAbsent(i === 2 ? poison : `ok-${m.id}`, 'x');
              return i;
            }),
          ),
        );
        assert.equal(results[2]!.status, 'rejected');
        assert.match(String((results[2] as PromiseRejectedResult).reason), /poisoned setting/, 'the failing one sees its own error');
        for (const [i, r] of results.entries()) {
          if (i === 2) continue;
          assert.deepEqual(r, { status: 'fulfilled', value: i });
          assert.deepEqual(await store.getTenant(made[i]!.id), made[i]);
          assert.equal(await store.getSetting(`ok-${made[i]!.id}`), 'x');
        }
        assert.equal(await store.getTenant(made[2]!.id), undefined, 'nothing of the failed one is kept');
        assert.equal(await store.getSetting(poison), undefined);
        const after = store.transactionStats();
        assert.equal(after.transactions - before.transactions, 6, 'each store transaction counted once');
        if (backend === 'sqlite') assert.equal(after.databaseTransactions - before.databaseTransactions, 7, 'the lost group, then each alone');
        // Alone (a group of one on SQLite), too, it fails with its own error, not the failed ROLLBACK's.
        await assert.rejects(store.transaction((tx) => tx.putSettingIfAbsent(`${poison}-alone`, 'x')), /poisoned setting/);
      } finally {
        await execRaw(url, backend === 'sqlite' ? 'drop trigger poison_settings' : 'drop trigger poison_settings on settings; drop function poison_settings()');
      }
    });

    it('a duplicate certificate serial inside a transaction fails it as a conflict, and nothing of it is kept', async () => {
      const { store } = ctx();
      const t = tenant();
      await store.createTenant(t);
      const issuer = ca(null);
      await store.createCa(issuer);
      const first = certificate(t.id, null, issuer.id);
      await store.createCertificate(first);
      const e = enrollment(t.id);
      await assert.rejects(
        store.transaction(async (tx) => {
          await tx.createEnrollment(e);
          await tx.recordAttempt(attempt(t.id));
          await tx.createCertificate(certificate(t.id, null, issuer.id, { serial: first.serial }));
        }),
        isConflict('certificates_serial_key'),
      );
      assert.equal(await store.getEnrollment(t.id, e.id), undefined);
    });

    it('rolls back everything when fn throws, and rethrows the error', async () => {
      const { store } = ctx();
      const t = tenant();
      const e = enrollment(t.id);
      await store.createEnrollment(e);
      const d = device(t.id, e.id);
      const before = (await store.iterateAudit(1_000_000)[Symbol.asyncIterator]().next()).value as AuditEvent[] | undefined;
      const boom = new Error('boom');
      await assert.rejects(
        store.transaction(async (tx) => {
          await tx.createTenant(t);
          await tx.createDevice(d);
          await tx.incrementDeviceCount(e.id);
          await tx.putSettingIfAbsent(`rollback-${t.id}`, 'x');
          await tx.appendAudit(auditInput(t.id));
          throw boom;
        }),
        (err) => err === boom,
      );
      assert.equal(await store.getTenant(t.id), undefined);
      assert.equal(await store.getDevice(t.id, d.id), undefined);
      assert.equal(await store.countDevices(t.id, { group: 'g1' }), 0);
      assert.equal((await store.getEnrollment(t.id, e.id))?.deviceCount, 0);
      assert.equal(await store.getSetting(`rollback-${t.id}`), undefined);
      assert.equal((await store.listAudit(t.id, { limit: 10 })).items.length, 0);
      const afterAudit = (await store.iterateAudit(1_000_000)[Symbol.asyncIterator]().next()).value as AuditEvent[] | undefined;
      assert.equal(afterAudit?.length ?? 0, before?.length ?? 0);
    });

    it('a conflict inside a transaction is catchable and the transaction can go on and commit', async () => {
      const { store } = ctx();
      const [a] = await tenants(store);
      const existing = device(a.id, 'enr_t', { registrationId: 'SN-TX' });
      await store.createDevice(existing);
      const other = device(a.id, 'enr_t');
      const found = await store.transaction(async (tx) => {
        await assert.rejects(tx.createDevice(device(a.id, 'enr_t', { registrationId: 'SN-TX' })), isConflict('devices_tenant_registration_id_key'));
        await tx.createDevice(other);
        return tx.getDeviceByRegistrationId(a.id, 'SN-TX');
      });
      assert.deepEqual(found, existing);
      assert.deepEqual(await store.getDevice(a.id, other.id), other);
    });

    it('concurrent calls on one tx are safe (serialised on its connection)', async () => {
      const { store } = ctx();
      const [a] = await tenants(store);
      const dup = device(a.id, 'enr_t');
      await store.createDevice(dup);
      const fresh = Array.from({ length: 5 }, () => device(a.id, 'enr_t'));
      const outcomes = await store.transaction((tx) =>
        Promise.allSettled([tx.createDevice(dup), ...fresh.map((d) => tx.createDevice(d)), tx.recordAttempt(attempt(a.id))]),
      );
      assert.equal(outcomes[0]?.status, 'rejected');
      assert.ok(outcomes.slice(1).every((o) => o.status === 'fulfilled'));
      assert.equal(await store.countDevices(a.id, {}), 6);
      assert.equal((await store.listAttempts(a.id, {}, { limit: 10 })).items.length, 1);
    });

    // A development check (FLEETPASS_DEV_CHECKS=1, which scripts/run-tests.mjs and the top of this file set).
    it('using the store itself inside store.transaction fails fast instead of deadlocking', async () => {
      const { store } = ctx();
      const t = tenant();
      await assert.rejects(
        store.transaction(async (tx) => {
          await tx.createTenant(t);
          await store.getTenant(t.id);
        }),
        /use the `tx` argument/,
      );
      assert.equal(await store.getTenant(t.id), undefined, 'rolled back');
      await store.ping(); // the store is still usable afterwards
    });
  });

  describe('audit chain', () => {
    it('appends a valid chain, 50 concurrent appends included (no forks, seq gap-free)', async () => {
      const { store } = ctx();
      const [a, b] = await tenants(store);
      const first = await store.appendAudit(auditInput(a.id, 'tenant.create', { nested: { z: 1, a: [1, 'two', null] }, skip: undefined }));
      assert.equal(first.action, 'tenant.create');
      assert.deepEqual(first.details, { nested: { z: 1, a: [1, 'two', null] } });
      const concurrent = await Promise.all(Array.from({ length: 50 }, (_, i) => store.appendAudit(auditInput(i % 2 ? a.id : b.id, 'x', { i }))));
      const seqs = concurrent.map((e) => e.seq).sort((x, y) => x - y);
      assert.equal(new Set(seqs).size, 50);
      assert.equal(seqs[49]! - seqs[0]!, 49, 'concurrent appends got consecutive seqs');
      const all = await verifyChain(store, 7);
      const stored = all.find((e) => e.id === first.id);
      assert.deepEqual(stored, first, 'appendAudit returns the stored event');
      for (const ev of concurrent) assert.deepEqual(all[ev.seq - 1], ev);
      await assert.rejects(store.appendAudit({ ...auditInput(null), id: first.id }), isConflict('audit_events_id_key'));
      await verifyChain(store, 1000);
    });

    it('lists a tenant\'s events in seq order with a cursor', async () => {
      const { store } = ctx();
      const [a, b] = await tenants(store);
      const mine: AuditEvent[] = [];
      for (let i = 0; i < 5; i++) {
        mine.push(await store.appendAudit(auditInput(a.id, 'mine', { i })));
        await store.appendAudit(auditInput(b.id, 'theirs', { i }));
      }
      const seen: AuditEvent[] = [];
      let cursor: string | null = null;
      for (;;) {
        const page: Page<AuditEvent> = await store.listAudit(a.id, { limit: 2, cursor });
        seen.push(...page.items);
        if (page.next === null) break;
        cursor = page.next;
      }
      assert.deepEqual(seen, mine);
      await assert.rejects(store.listAudit(a.id, { limit: 2, cursor: 'not-a-seq' }), (err) => err instanceof FleetpassError && err.code === 'VALIDATION_FAILED');
    });
  });

  describe('configuration version and ConfigCache', () => {
    it('changes with every configuration change, in the changing transaction; not with device counts or token use', async () => {
      const { store } = ctx();
      const changed = async (what: string, fn: () => Promise<unknown>, expected = true) => {
        const before = await store.getConfigVersion();
        await fn();
        const after = await store.getConfigVersion();
        assert.equal(after !== before, expected, `${what}: version ${before} → ${after}`);
      };
      const t = tenant();
      await changed('tenant created', () => store.createTenant(t));
      const c = ca(t.id);
      await changed('CA uploaded', () => store.createCa(c));
      const tpl = template(t.id);
      await changed('template created', () => store.createTemplate(tpl));
      await changed('template updated', () => store.updateTemplate({ ...tpl, body: { deviceName: 'x-${registrationId}' }, updatedAt: now() }));
      await changed('policy created', () => store.createPolicy(policy(t.id)));
      const e = enrollment(t.id, { attestation: tokenAttestation(), kind: 'individual', registrationId: newId('reg') });
      await changed('enrollment created', () => store.createEnrollment(e));
      await changed('enrollment disabled', () => store.updateEnrollment({ ...e, enabled: false, updatedAt: now() }));
      await changed('device counted', () => store.incrementDeviceCount(e.id), false);
      await changed('token used', () => store.markTokenUsed(e.id, now(), newId('fp'), newId('dev')), false);
      await changed('a rolled-back change', () => store.transaction(async (tx) => {
        await tx.createTenant(tenant());
        throw new Error('roll back');
      }).catch(() => undefined), false);
      await changed('CA deleted', () => store.deleteCa(t.id, c.id));
      await changed('enrollment deleted', () => store.deleteEnrollment(t.id, e.id));
    });

    it('a cache in one process sees another process\'s change at its next request, and serves lookups from memory until then', async () => {
      const { store, url } = ctx();
      const other = await openStore({ url });
      try {
        const [a] = await tenants(store);
        const c = ca(null, { kind: 'trusted', tenantId: a.id, subject: `CN=factory-${newId('s')}` });
        await store.createCa(c);
        const g = enrollment(a.id, { attestation: { type: 'x509-ca', caId: c.id, requireRegistrationIdMatch: false } });
        await store.createEnrollment(g);

        let reads = 0;
        const counting = new Proxy(store, {
          get(target, prop, receiver) {
            const v = Reflect.get(target, prop, receiver) as unknown;
            if (typeof v !== 'function') return v;
            return (...args: unknown[]) => {
              if (prop !== 'getConfigVersion') reads++;
              return (v as (...a: unknown[]) => unknown).apply(target, args);
            };
          },
        });
        const cache = new ConfigCache(counting);
        await cache.refresh();
        assert.deepEqual((await cache.store.findEnrollmentsByCaIds([c.id])).map((x) => x.enabled), [true]);
        assert.equal((await cache.store.getTenant(a.id))?.id, a.id);
        const afterFirst = reads;
        await cache.refresh();
        assert.deepEqual((await cache.store.findEnrollmentsByCaIds([c.id])).map((x) => x.enabled), [true]);
        assert.equal((await cache.store.findTrustedCasBySubject(c.subject)).length, 1);
        assert.equal((await cache.store.findTrustedCasBySubject(c.subject)).length, 1);
        assert.equal(reads, afterFirst + 1, 'repeated lookups are answered from memory');

        // Another process disables the group: the next request sees it.
        await other.updateEnrollment({ ...g, enabled: false, updatedAt: now() });
        await cache.refresh();
        assert.deepEqual((await cache.store.findEnrollmentsByCaIds([c.id])).map((x) => x.enabled), [false]);
        // Cached entries are shared and frozen: a caller cannot change what the next request sees.
        const [cached] = await cache.store.findEnrollmentsByCaIds([c.id]);
        assert.throws(() => {
          (cached as { enabled: boolean }).enabled = true;
        }, TypeError);
      } finally {
        await other.close();
      }
    });
  });

  describe('settings', () => {
    it('putSettingIfAbsent: first writer wins; setSetting overwrites', async () => {
      const { store } = ctx();
      const key = newId('setting');
      assert.equal(await store.getSetting(key), undefined);
      const results = await Promise.all(Array.from({ length: 10 }, (_, i) => store.putSettingIfAbsent(key, `v${i}`)));
      assert.equal(results.filter(Boolean).length, 1);
      assert.equal(await store.getSetting(key), `v${results.indexOf(true)}`);
      assert.equal(await store.putSettingIfAbsent(key, 'late'), false);
      await store.setSetting(key, 'override');
      assert.equal(await store.getSetting(key), 'override');
      await store.setSetting(`${key}-new`, 'created');
      assert.equal(await store.getSetting(`${key}-new`), 'created');
      assert.equal(await store.deleteSetting(key), true);
      assert.equal(await store.getSetting(key), undefined);
      assert.equal(await store.deleteSetting(key), false, 'nothing left to delete');
      assert.equal(await store.getSetting(`${key}-new`), 'created', 'only that key');
      assert.equal(await store.putSettingIfAbsent(key, 'again'), true, 'a deleted key can be written anew');
    });
  });

  describe('migrations', () => {
    it('are idempotent: opening the same database again applies nothing and sees the data', async () => {
      const { store, url } = ctx();
      const t = tenant();
      await store.createTenant(t);
      assert.deepEqual(await migrateStore(url), []);
      const again = await openStore({ url });
      try {
        assert.deepEqual(await again.getTenant(t.id), t);
      } finally {
        await again.close();
      }
    });
  });

  const holdWriteLock = (store: Store) => holdLock(store, (tx) => tx.createTenant(tenant()));

  describe('several processes on one database', () => {
    it('a transaction waiting for another connection\'s write lock leaves the event loop free, then proceeds', async () => {
      const { store, url } = ctx();
      const other = await openStore({ url });
      try {
        const { release, first } = await holdWriteLock(store);
        const t = tenant();
        let secondDone = false;
        const second = other.transaction((tx) => tx.createTenant(t)).then(() => (secondDone = true));
        // While the second transaction waits, timers still run in this process: it is not blocked
        // inside SQLite's busy handler (which would also keep the first from ever committing).
        await new Promise((r) => setTimeout(r, 30));
        release();
        await first;
        await second;
        assert.equal(secondDone, true);
        assert.deepEqual(await store.getTenant(t.id), t);
      } finally {
        await other.close();
      }
    });

    it('while a transaction waits for another connection\'s write lock, the waiting store still answers reads', async () => {
      const { store, url } = ctx();
      const known = tenant();
      await store.createTenant(known);
      const other = await openStore({ url });
      try {
        const { release, first } = await holdWriteLock(store);
        const late = tenant();
        const waiting = other.transaction((tx) => tx.createTenant(late));
        await new Promise((r) => setTimeout(r, 10));
        // On SQLite the waiting transaction has given this process's one connection back meanwhile;
        // a read that had to queue behind it would not answer before release().
        const read = await Promise.race([other.getTenant(known.id), new Promise((r) => setTimeout(() => r('timed out'), 2000))]);
        assert.deepEqual(read, known);
        release();
        await first;
        await waiting;
        assert.deepEqual(await store.getTenant(late.id), late);
      } finally {
        await other.close();
      }
    });

    it('transactions asked for while another connection holds the write lock commit together once it is free', async () => {
      const { store, url, backend } = ctx();
      const other = (await openStore({ url })) as KyselyStore;
      try {
        const { release, first } = await holdWriteLock(store);
        const before = other.transactionStats();
        const made = Array.from({ length: 5 }, () => tenant());
        const waiting = [other.transaction((tx) => tx.createTenant(made[0]!))];
        await new Promise((r) => setTimeout(r, 20));
        waiting.push(...made.slice(1).map((t) => other.transaction((tx) => tx.createTenant(t))));
        await new Promise((r) => setTimeout(r, 20));
        const settledEarly = await Promise.race([Promise.all(waiting).then(() => true), new Promise((r) => setTimeout(() => r(false), 10))]);
        release();
        await first;
        await Promise.all(waiting);
        for (const t of made) assert.deepEqual(await store.getTenant(t.id), t);
        const after = other.transactionStats();
        assert.equal(after.transactions - before.transactions, 5);
        if (backend === 'sqlite') {
          // One write lock for the whole database: all five waited, then ran as one group (one BEGIN
          // IMMEDIATE), including the four asked for while the first was already waiting.
          assert.equal(settledEarly, false);
          assert.equal(after.databaseTransactions - before.databaseTransactions, 1);
        } else {
          // No group commit: several writers at once, each a transaction of its own.
          assert.equal(after.databaseTransactions - before.databaseTransactions, 5);
        }
      } finally {
        await other.close();
      }
    });

    it('a column added by another process (a newer version migrating during a rolling upgrade) breaks no statement of a running store', async () => {
      const { store, url, backend } = ctx();
      const t = tenant();
      await store.createTenant(t);
      const e = enrollment(t.id);
      await store.createEnrollment(e);
      const issuer = ca(null);
      await store.createCa(issuer);
      // Every statement of a registration, in a transaction as the pipeline runs them.
      const register = () =>
        store.transaction(async (tx) => {
          const d = device(t.id, e.id);
          assert.equal(await tx.getDeviceByRegistrationId(t.id, d.registrationId), undefined);
          await tx.createDevice(d);
          await tx.createCertificate(certificate(t.id, d.id, issuer.id));
          await tx.recordAttempt(attempt(t.id));
          assert.equal(await tx.incrementDeviceCount(e.id), true);
          assert.match(await tx.getConfigVersion(), /^\d+$/);
          assert.deepEqual(await tx.getDeviceByRegistrationId(t.id, d.registrationId), d);
          if (backend !== 'postgres') return [];
          const db = (tx as unknown as { db: Kysely<unknown> }).db;
          return (await sql<{ statement: string }>`select statement from pg_prepared_statements`.execute(db)).rows.map((r) => r.statement);
        });
      for (let i = 0; i < 3; i++) await register();
      const tables = ['devices', 'certificates', 'attempts', 'enrollments', 'config_version'];
      try {
        for (const table of tables) await execRaw(url, `alter table ${table} add column upgrade_probe text`);
        let prepared: string[] = [];
        for (let i = 0; i < 3; i++) prepared = await register();
        assert.equal((await store.getEnrollment(t.id, e.id))?.deviceCount, 6);
        if (backend === 'postgres') {
          // Parsed once per connection: the inserts, the count and the version; never a `select *`.
          for (const table of ['devices', 'certificates', 'attempts']) assert.ok(prepared.some((p) => p.startsWith(`insert into "${table}"`)), `${table}: ${prepared.join(' | ')}`);
          assert.ok(prepared.some((p) => p.startsWith('update "enrollments" set "device_count"')));
          assert.ok(prepared.some((p) => p.startsWith('select "version" from "config_version"')));
          assert.equal(prepared.filter((p) => p.startsWith('select *')).length, 0);
          const unprepared = await openStore({ url, migrate: false, preparedStatements: false });
          try {
            const none = await unprepared.transaction(async (tx) => {
              await tx.getConfigVersion();
              const db = (tx as unknown as { db: Kysely<unknown> }).db;
              return (await sql`select statement from pg_prepared_statements`.execute(db)).rows;
            });
            assert.deepEqual(none, [], 'FLEETPASS_DB_PREPARED_STATEMENTS=false');
          } finally {
            await unprepared.close();
          }
        }
      } finally {
        // (SQLite has no DROP COLUMN IF EXISTS; a table the ALTER did not reach has nothing to drop.)
        for (const table of tables) await execRaw(url, `alter table ${table} drop column upgrade_probe`).catch(() => undefined);
      }
    });

    it('audit chain, device limit and first-writer-wins settings hold across 4 workers', async () => {
      const { store, url } = ctx();
      const [a] = await tenants(store);
      const e = enrollment(a.id, { maxDevices: 25 });
      await store.createEnrollment(e);
      const outputs = await Promise.all(
        Array.from({ length: 4 }, (_, i) => runWorker({ url, label: `w${i}-${e.id}`, enrollmentId: e.id, appends: 50, increments: 10 })),
      );
      for (const o of outputs) assert.equal(o.error, undefined, o.error);
      assert.equal(outputs.reduce((n, o) => n + (o.wins ?? 0), 0), 25);
      assert.equal((await store.getEnrollment(a.id, e.id))?.deviceCount, 25);
      assert.ok(outputs.filter((o) => o.settingWon).length <= 1);
      const all = await verifyChain(store, 100);
      assert.equal(all.filter((ev) => ev.action === 'test.worker' && ev.resourceId?.endsWith(e.id)).length, 200);
    });
  });
});

// --- error mapping that needs no running backend -------------------------------------------------------

describe('store errors', () => {
  it('an unreachable PostgreSQL is STORE_UNAVAILABLE', async () => {
    await assert.rejects(
      openStore({ url: 'postgres://postgres@127.0.0.1:1/fleetpass' }),
      (err) => err instanceof FleetpassError && err.code === 'STORE_UNAVAILABLE' && err.retryAfterSeconds !== undefined,
    );
  });

  it('an unopenable SQLite file is STORE_UNAVAILABLE', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'fleetpass-store-'));
    try {
      await assert.rejects(openStore({ url: `sqlite:${dir}` }), (err) => err instanceof FleetpassError && err.code === 'STORE_UNAVAILABLE');
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('rejects unknown URLs without echoing passwords', async () => {
    await assert.rejects(openStore({ url: 'mysql://u:secret@h/db' }), (err) => err instanceof Error && /Unsupported store URL/.test(err.message) && !err.message.includes('secret'));
  });

  it('works in memory (sqlite::memory:)', async () => {
    const store = await openStore({ url: 'sqlite::memory:' });
    try {
      const t = tenant();
      await store.createTenant(t);
      assert.deepEqual(await store.getTenant(t.id), t);
      await store.appendAudit(auditInput(null));
      await verifyChain(store, 10);
    } finally {
      await store.close();
    }
  });
});
