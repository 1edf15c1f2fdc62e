import { sql } from 'kysely';
import type { Kysely, Selectable } from 'kysely';
import { FleetpassError } from '../core/errors.js';
import { AUDIT_GENESIS_HASH, auditEventHash } from '../registry/audit-hash.js';
import { StoreConflictError } from '../registry/store.js';
import type {
  AttemptFilter, CertificateFilter, DeviceFilter, EnrollmentFilter, Repos, Store,
} from '../registry/store.js';
import type {
  ApiKey, AttemptRecord, AttestationType, AuditEvent, AuditEventInput, CaKind, CaRecord, CertificateRecord,
  CertificateStatus, Device, Enrollment, Page, PageRequest, Policy, Template, Tenant,
} from '../registry/types.js';
import { AUDIT_CHAIN_LOCK_ID } from './dialects/capabilities.js';
import type { DialectCapabilities } from './dialects/capabilities.js';
import type { StoreGuard } from './dialects/guard.js';
import {
  apiKeyFromRow, apiKeyToRow, attemptFromRow, attemptToRow, attestationColumns, auditFromRow, auditToRow, caFromRow,
  caToRow, certificateFromRow, certificateToRow, deviceFromRow, deviceToRow, enrollmentFromRow, enrollmentToRow,
  jsonRoundTrip, policyFromRow, policyToRow, templateFromRow, templateToRow, tenantFromRow, tenantToRow,
} from './mappers.js';
import type { Database, DevicesTable, EnrollmentsTable } from './schema.js';
import { PreparedInsert, PreparedStatement } from './prepared.js';

/** Upper bound for PageRequest.limit; larger requests get this many rows (and a cursor for the rest). */
export const MAX_PAGE_SIZE = 1000;
const DEFAULT_PAGE_SIZE = 100;

type Db = Kysely<Database>;

function pageLimit(p: PageRequest): number {
  const n = Math.floor(p.limit);
  if (!Number.isFinite(n)) return DEFAULT_PAGE_SIZE;
  return Math.min(MAX_PAGE_SIZE, Math.max(1, n));
}

/** Rows were fetched with limit + 1: the extra row only says whether there is a next page. */
function toPage<R, T>(rows: R[], limit: number, map: (r: R) => T, cursorOf: (t: T) => string): Page<T> {
  const items = rows.slice(0, limit).map(map);
  const last = items[items.length - 1];
  return { items, next: rows.length > limit && last !== undefined ? cursorOf(last) : null };
}

const byId = (x: { id: string }): string => x.id;

function affected(n: bigint | undefined): number {
  return n === undefined ? 0 : Number(n);
}

function seqCursor(cursor: string | null | undefined): number {
  if (cursor === undefined || cursor === null || cursor === '') return 0;
  if (!/^\d{1,15}$/.test(cursor)) throw new FleetpassError('VALIDATION_FAILED', 'Invalid audit cursor.');
  return Number(cursor);
}

/**
 * Runs fn inside a savepoint of the caller's transaction: on failure it is rolled back to the
 * savepoint and fn's error stands. If the rollback itself fails, the transaction is unusable (a lost
 * connection, or SQLite having rolled the whole transaction back), and that failure is thrown instead,
 * so that no caller carries on as if only its own statements had failed.
 */
async function inSavepoint<T>(db: Db, name: string, fn: () => Promise<T>): Promise<T> {
  const id = sql.raw(name);
  await sql`savepoint ${id}`.execute(db);
  let result: T;
  try {
    result = await fn();
  } catch (err) {
    await sql`rollback to savepoint ${id}`.execute(db);
    await sql`release savepoint ${id}`.execute(db);
    throw err;
  }
  await sql`release savepoint ${id}`.execute(db);
  return result;
}

// The statements every onboarding runs, built once (prepared.ts).
const HOT = {
  configVersion: new PreparedStatement<{ id: number }>((db, v) => db.selectFrom('config_version').select('version').where('id', '=', v('id'))),
  individualEnrollments: new PreparedStatement<{ registrationId: string }>((db, v) =>
    db.selectFrom('enrollments').selectAll().where('kind', '=', 'individual').where('registration_id', '=', v('registrationId')).orderBy('id')),
  enrollmentByTokenHash: new PreparedStatement<{ tokenHash: string }>((db, v) => db.selectFrom('enrollments').selectAll().where('token_hash', '=', v('tokenHash')).limit(1)),
  incrementDeviceCount: new PreparedStatement<{ id: string }>((db, v) =>
    db
      .updateTable('enrollments')
      .set((eb) => ({ device_count: eb('device_count', '+', 1) }))
      .where('id', '=', v('id'))
      .where((eb) => eb.or([eb('max_devices', 'is', null), eb('device_count', '<', eb.ref('max_devices'))]))),
  markTokenUsed: new PreparedStatement<{ id: string; usedAt: string; keyFingerprint: string; deviceId: string }>((db, v) =>
    db
      .updateTable('enrollments')
      .set({ token_used_at: v('usedAt'), token_used_by_key_fingerprint: v('keyFingerprint'), token_used_by_device_id: v('deviceId') })
      .where('id', '=', v('id'))
      .where('attestation_type', '=', 'token')
      .where('token_used_at', 'is', null)),
  deviceByRegistrationId: new PreparedStatement<{ tenantId: string; registrationId: string }>((db, v) =>
    db.selectFrom('devices').selectAll().where('tenant_id', '=', v('tenantId')).where('registration_id', '=', v('registrationId')).limit(1)),
  insertDevice: new PreparedInsert('devices'),
  insertDeviceIfAbsent: new PreparedInsert('devices', { ifAbsent: true }),
  insertDeviceGroup: new PreparedInsert('device_groups'),
  insertCertificate: new PreparedInsert('certificates'),
  insertAttempt: new PreparedInsert('attempts'),
};

/**
 * Every repository, written once for both dialects over a Kysely instance — the store's own (each
 * method autocommits, multi-statement writes open their own transaction) or a transaction's (`inTx`).
 */
export class KyselyRepos implements Repos {
  constructor(
    protected readonly db: Db,
    protected readonly caps: DialectCapabilities,
    protected readonly inTx: boolean,
  ) {}

  // --- atomicity helpers ------------------------------------------------------------------------

  /** A multi-statement write: its own transaction, or a savepoint inside the caller's transaction. */
  protected async atomic<T>(fn: (db: Db) => Promise<T>): Promise<T> {
    if (!this.inTx) return this.db.transaction().execute((trx) => fn(trx));
    return this.savepoint(fn);
  }

  /**
   * A single write that may raise StoreConflictError. Inside a caller's transaction on a dialect where a
   * failed statement poisons the transaction (PostgreSQL) it runs in a savepoint, so the caller can catch
   * the conflict and carry on — the same behaviour as SQLite.
   */
  protected async write<T>(fn: (db: Db) => Promise<T>): Promise<T> {
    if (this.inTx && this.caps.statementErrorAbortsTransaction) return this.savepoint(fn);
    return fn(this.db);
  }

  /** Savepoints nest as a stack, so names by depth suffice; a fixed set of SQL texts stays prepared. */
  #savepointDepth = 0;

  private async savepoint<T>(fn: (db: Db) => Promise<T>): Promise<T> {
    this.#savepointDepth++;
    try {
      return await inSavepoint(this.db, `fleetpass_sp_${this.#savepointDepth}`, () => fn(this.db));
    } finally {
      this.#savepointDepth--;
    }
  }

  // --- tenants ----------------------------------------------------------------------------------

  async createTenant(t: Tenant): Promise<void> {
    await this.write((db) => db.insertInto('tenants').values(tenantToRow(t)).execute());
  }

  async getTenant(id: string): Promise<Tenant | undefined> {
    const r = await this.db.selectFrom('tenants').selectAll().where('id', '=', id).executeTakeFirst();
    return r && tenantFromRow(r);
  }

  async getTenantByIdScope(idScope: string): Promise<Tenant | undefined> {
    const r = await this.db.selectFrom('tenants').selectAll().where('id_scope', '=', idScope).executeTakeFirst();
    return r && tenantFromRow(r);
  }

  async listTenants(page: PageRequest): Promise<Page<Tenant>> {
    const limit = pageLimit(page);
    const cursor = page.cursor;
    const rows = await this.db
      .selectFrom('tenants')
      .selectAll()
      .$if(!!cursor, (q) => q.where('id', '>', cursor as string))
      .orderBy('id')
      .limit(limit + 1)
      .execute();
    return toPage(rows, limit, tenantFromRow, byId);
  }

  // --- API keys ---------------------------------------------------------------------------------

  async createApiKey(k: ApiKey): Promise<void> {
    await this.write((db) => db.insertInto('api_keys').values(apiKeyToRow(k)).execute());
  }

  async getApiKeyByTokenHash(tokenHash: string): Promise<ApiKey | undefined> {
    const r = await this.db.selectFrom('api_keys').selectAll().where('token_hash', '=', tokenHash).executeTakeFirst();
    return r && apiKeyFromRow(r);
  }

  async listApiKeys(tenantId: string, page: PageRequest): Promise<Page<ApiKey>> {
    const limit = pageLimit(page);
    const cursor = page.cursor;
    const rows = await this.db
      .selectFrom('api_keys')
      .selectAll()
      .where('tenant_id', '=', tenantId)
      .$if(!!cursor, (q) => q.where('id', '>', cursor as string))
      .orderBy('id')
      .limit(limit + 1)
      .execute();
    return toPage(rows, limit, apiKeyFromRow, byId);
  }

  /** Keeps the first revocation time if the key was revoked already. */
  async revokeApiKey(tenantId: string, id: string, at: string): Promise<boolean> {
    const r = await this.db
      .updateTable('api_keys')
      .set({ revoked_at: sql<string>`coalesce(revoked_at, ${at})` })
      .where('tenant_id', '=', tenantId)
      .where('id', '=', id)
      .executeTakeFirst();
    return affected(r.numUpdatedRows) > 0;
  }

  // --- CAs --------------------------------------------------------------------------------------

  async createCa(ca: CaRecord): Promise<void> {
    await this.write((db) => db.insertInto('cas').values(caToRow(ca)).execute());
  }

  /** tenantId null: platform CAs only; a tenant: platform CAs and its own. */
  async getCa(tenantId: string | null, id: string): Promise<CaRecord | undefined> {
    const r = await this.db
      .selectFrom('cas')
      .selectAll()
      .where('id', '=', id)
      .where((eb) => (tenantId === null ? eb('tenant_id', 'is', null) : eb.or([eb('tenant_id', 'is', null), eb('tenant_id', '=', tenantId)])))
      .executeTakeFirst();
    return r && caFromRow(r);
  }

  async listCas(tenantId: string | null, filter: { kind?: CaKind }, page: PageRequest): Promise<Page<CaRecord>> {
    const limit = pageLimit(page);
    const cursor = page.cursor;
    const kind = filter.kind;
    const rows = await this.db
      .selectFrom('cas')
      .selectAll()
      .where((eb) => (tenantId === null ? eb('tenant_id', 'is', null) : eb.or([eb('tenant_id', 'is', null), eb('tenant_id', '=', tenantId)])))
      .$if(kind !== undefined, (q) => q.where('kind', '=', kind as string))
      .$if(!!cursor, (q) => q.where('id', '>', cursor as string))
      .orderBy('id')
      .limit(limit + 1)
      .execute();
    return toPage(rows, limit, caFromRow, byId);
  }

  async findTrustedCasBySubject(subject: string): Promise<CaRecord[]> {
    const rows = await this.db
      .selectFrom('cas')
      .selectAll()
      .where('kind', '=', 'trusted')
      .where('subject', '=', subject)
      .orderBy('id')
      .execute();
    return rows.map(caFromRow);
  }

  /** Only the tenant's own CAs; platform CAs cannot be deleted through a tenant. */
  async deleteCa(tenantId: string, id: string): Promise<boolean> {
    const r = await this.db.deleteFrom('cas').where('tenant_id', '=', tenantId).where('id', '=', id).executeTakeFirst();
    return affected(r.numDeletedRows) > 0;
  }

  // --- templates --------------------------------------------------------------------------------

  async createTemplate(t: Template): Promise<void> {
    await this.write((db) => db.insertInto('templates').values(templateToRow(t)).execute());
  }

  async getTemplate(tenantId: string, id: string): Promise<Template | undefined> {
    const r = await this.db.selectFrom('templates').selectAll().where('tenant_id', '=', tenantId).where('id', '=', id).executeTakeFirst();
    return r && templateFromRow(r);
  }

  async getTemplateByName(tenantId: string, name: string): Promise<Template | undefined> {
    const r = await this.db.selectFrom('templates').selectAll().where('tenant_id', '=', tenantId).where('name', '=', name).executeTakeFirst();
    return r && templateFromRow(r);
  }

  async listTemplates(tenantId: string, page: PageRequest): Promise<Page<Template>> {
    const limit = pageLimit(page);
    const cursor = page.cursor;
    const rows = await this.db
      .selectFrom('templates')
      .selectAll()
      .where('tenant_id', '=', tenantId)
      .$if(!!cursor, (q) => q.where('id', '>', cursor as string))
      .orderBy('id')
      .limit(limit + 1)
      .execute();
    return toPage(rows, limit, templateFromRow, byId);
  }

  /** Replaces name, body and updatedAt; StoreConflictError if the new name is taken in the tenant. */
  async updateTemplate(t: Template): Promise<boolean> {
    const r = await this.write((db) =>
      db
        .updateTable('templates')
        .set({ name: t.name, body: templateToRow(t).body, updated_at: t.updatedAt })
        .where('tenant_id', '=', t.tenantId)
        .where('id', '=', t.id)
        .executeTakeFirst(),
    );
    return affected(r.numUpdatedRows) > 0;
  }

  async deleteTemplate(tenantId: string, id: string): Promise<boolean> {
    const r = await this.db.deleteFrom('templates').where('tenant_id', '=', tenantId).where('id', '=', id).executeTakeFirst();
    return affected(r.numDeletedRows) > 0;
  }

  // --- policies ---------------------------------------------------------------------------------

  async createPolicy(p: Policy): Promise<void> {
    await this.write((db) => db.insertInto('policies').values(policyToRow(p)).execute());
  }

  async getPolicy(tenantId: string, id: string): Promise<Policy | undefined> {
    const r = await this.db.selectFrom('policies').selectAll().where('tenant_id', '=', tenantId).where('id', '=', id).executeTakeFirst();
    return r && policyFromRow(r);
  }

  async getPolicyByName(tenantId: string, name: string): Promise<Policy | undefined> {
    const r = await this.db.selectFrom('policies').selectAll().where('tenant_id', '=', tenantId).where('name', '=', name).executeTakeFirst();
    return r && policyFromRow(r);
  }

  async listPolicies(tenantId: string, page: PageRequest): Promise<Page<Policy>> {
    const limit = pageLimit(page);
    const cursor = page.cursor;
    const rows = await this.db
      .selectFrom('policies')
      .selectAll()
      .where('tenant_id', '=', tenantId)
      .$if(!!cursor, (q) => q.where('id', '>', cursor as string))
      .orderBy('id')
      .limit(limit + 1)
      .execute();
    return toPage(rows, limit, policyFromRow, byId);
  }

  /** Replaces name, document and updatedAt; StoreConflictError if the new name is taken in the tenant. */
  async updatePolicy(p: Policy): Promise<boolean> {
    const r = await this.write((db) =>
      db
        .updateTable('policies')
        .set({ name: p.name, document: policyToRow(p).document, updated_at: p.updatedAt })
        .where('tenant_id', '=', p.tenantId)
        .where('id', '=', p.id)
        .executeTakeFirst(),
    );
    return affected(r.numUpdatedRows) > 0;
  }

  async deletePolicy(tenantId: string, id: string): Promise<boolean> {
    const r = await this.db.deleteFrom('policies').where('tenant_id', '=', tenantId).where('id', '=', id).executeTakeFirst();
    return affected(r.numDeletedRows) > 0;
  }

  // --- enrollments ------------------------------------------------------------------------------

  async createEnrollment(e: Enrollment): Promise<void> {
    await this.write((db) => db.insertInto('enrollments').values(enrollmentToRow(e)).execute());
  }

  async getEnrollment(tenantId: string, id: string): Promise<Enrollment | undefined> {
    const r = await this.db.selectFrom('enrollments').selectAll().where('tenant_id', '=', tenantId).where('id', '=', id).executeTakeFirst();
    return r && enrollmentFromRow(r);
  }

  async listEnrollments(tenantId: string, filter: EnrollmentFilter, page: PageRequest): Promise<Page<Enrollment>> {
    const limit = pageLimit(page);
    const cursor = page.cursor;
    const { kind, attestationType, registrationId } = filter;
    const rows = await this.db
      .selectFrom('enrollments')
      .selectAll()
      .where('tenant_id', '=', tenantId)
      .$if(kind !== undefined, (q) => q.where('kind', '=', kind as string))
      .$if(attestationType !== undefined, (q) => q.where('attestation_type', '=', attestationType as string))
      .$if(registrationId !== undefined, (q) => q.where('registration_id', '=', registrationId as string))
      .$if(!!cursor, (q) => q.where('id', '>', cursor as string))
      .orderBy('id')
      .limit(limit + 1)
      .execute();
    return toPage(rows, limit, enrollmentFromRow, byId);
  }

  /**
   * Replaces name, attestation, templateId/template, reprovisionPolicy, maxDevices, enabled, expiresAt,
   * webhookUrl and updatedAt. Not kind, registrationId or deviceCount (incrementDeviceCount owns it).
   *
   * One-time-token guard: when the token hash is unchanged and the stored token is already used, the stored
   * usage (usedAt, usedByKeyFingerprint, usedByDeviceId) is kept, so an update built from a stale read can
   * never make a used token usable again. A new token hash takes the usage fields given.
   */
  async updateEnrollment(e: Enrollment): Promise<boolean> {
    const a = attestationColumns(e.attestation);
    const keepUsage = sql<boolean>`token_used_at is not null and token_hash = ${a.token_hash}`;
    const r = await this.write((db) =>
      db
        .updateTable('enrollments')
        .set({
          name: e.name,
          attestation_type: a.attestation_type,
          attestation: a.attestation,
          ca_id: a.ca_id,
          token_hash: a.token_hash,
          token_used_at: sql<string | null>`case when ${keepUsage} then token_used_at else ${a.token_used_at} end`,
          token_used_by_key_fingerprint: sql<string | null>`case when ${keepUsage} then token_used_by_key_fingerprint else ${a.token_used_by_key_fingerprint} end`,
          token_used_by_device_id: sql<string | null>`case when ${keepUsage} then token_used_by_device_id else ${a.token_used_by_device_id} end`,
          template_id: e.templateId,
          template: enrollmentToRow(e).template ?? null,
          reprovision_policy: e.reprovisionPolicy,
          enabled: e.enabled ? 1 : 0,
          expires_at: e.expiresAt,
          max_devices: e.maxDevices,
          webhook_url: e.webhookUrl,
          updated_at: e.updatedAt,
        })
        .where('tenant_id', '=', e.tenantId)
        .where('id', '=', e.id)
        .executeTakeFirst(),
    );
    return affected(r.numUpdatedRows) > 0;
  }

  async deleteEnrollment(tenantId: string, id: string): Promise<boolean> {
    const r = await this.db.deleteFrom('enrollments').where('tenant_id', '=', tenantId).where('id', '=', id).executeTakeFirst();
    return affected(r.numDeletedRows) > 0;
  }

  async findIndividualEnrollments(tenantId: string | null, registrationId: string): Promise<Enrollment[]> {
    // The tenant is filtered here, not in SQL: given tenant_id too, SQLite's planner (no statistics)
    // walks the (tenant_id, id) index for the ORDER BY — every enrollment of the tenant, per lookup,
    // which made bulk enrollment creation quadratic. A registration ID has a handful of rows at most.
    const { rows } = await HOT.individualEnrollments.execute<Selectable<EnrollmentsTable>>(this.db, this.caps.name, { registrationId });
    return (tenantId === null ? rows : rows.filter((r) => r.tenant_id === tenantId)).map(enrollmentFromRow);
  }

  async findGroupEnrollments(tenantId: string, attestationType: AttestationType): Promise<Enrollment[]> {
    const rows = await this.db
      .selectFrom('enrollments')
      .selectAll()
      .where('tenant_id', '=', tenantId)
      .where('kind', '=', 'group')
      .where('attestation_type', '=', attestationType)
      .orderBy('id')
      .execute();
    return rows.map(enrollmentFromRow);
  }

  async findGroupEnrollmentsByName(name: string, attestationType: AttestationType): Promise<Enrollment[]> {
    const rows = await this.db
      .selectFrom('enrollments')
      .selectAll()
      .where('kind', '=', 'group')
      .where('name', '=', name)
      .where('attestation_type', '=', attestationType)
      .orderBy('id')
      .execute();
    return rows.map(enrollmentFromRow);
  }

  async findEnrollmentsByCaIds(caIds: string[]): Promise<Enrollment[]> {
    if (caIds.length === 0) return [];
    const rows = await this.db
      .selectFrom('enrollments')
      .selectAll()
      .where('attestation_type', '=', 'x509-ca')
      .where('ca_id', 'in', [...new Set(caIds)])
      .orderBy('id')
      .execute();
    return rows.map(enrollmentFromRow);
  }

  async findEnrollmentByTokenHash(tokenHash: string): Promise<Enrollment | undefined> {
    const r = (await HOT.enrollmentByTokenHash.execute<Selectable<EnrollmentsTable>>(this.db, this.caps.name, { tokenHash })).rows[0];
    return r && enrollmentFromRow(r);
  }

  /** One conditional UPDATE: the row lock (PostgreSQL) / write lock (SQLite) makes check-and-increment atomic. */
  async incrementDeviceCount(id: string): Promise<boolean> {
    const r = await HOT.incrementDeviceCount.execute(this.db, this.caps.name, { id });
    return affected(r.numAffectedRows) > 0;
  }

  async decrementDeviceCount(id: string): Promise<void> {
    await this.db
      .updateTable('enrollments')
      .set((eb) => ({ device_count: eb('device_count', '-', 1) }))
      .where('id', '=', id)
      .where('device_count', '>', 0)
      .execute();
  }

  async markTokenUsed(id: string, usedAt: string, keyFingerprint: string, deviceId: string): Promise<boolean> {
    const r = await HOT.markTokenUsed.execute(this.db, this.caps.name, { id, usedAt, keyFingerprint, deviceId });
    return affected(r.numAffectedRows) > 0;
  }

  // --- devices ----------------------------------------------------------------------------------

  private deviceQuery(db: Db, tenantId: string, filter: DeviceFilter) {
    const { registrationId, status, enrollmentId, model, group } = filter;
    return db
      .selectFrom('devices')
      .where('tenant_id', '=', tenantId)
      .$if(registrationId !== undefined, (q) => q.where('registration_id', '=', registrationId as string))
      .$if(status !== undefined, (q) => q.where('status', '=', status as string))
      .$if(enrollmentId !== undefined, (q) => q.where('enrollment_id', '=', enrollmentId as string))
      .$if(model !== undefined, (q) => q.where('model', '=', model as string))
      .$if(group !== undefined, (q) =>
        q.where('id', 'in', db.selectFrom('device_groups').select('device_id').where('tenant_id', '=', tenantId).where('group_name', '=', group as string)),
      );
  }

  private async insertDeviceGroups(db: Db, d: Device): Promise<void> {
    for (const g of new Set(d.groups ?? [])) {
      await HOT.insertDeviceGroup.execute(db, this.caps.name, { device_id: d.id, tenant_id: d.tenantId, group_name: g });
    }
  }

  async createDevice(d: Device): Promise<void> {
    if (this.inTx && this.caps.statementErrorAbortsTransaction) {
      // PostgreSQL, in the caller's transaction (every registration): a conflict must not abort it,
      // and ON CONFLICT DO NOTHING tells of one without the savepoint atomic() would take (two round
      // trips in a transaction that may hold a group enrollment's row lock). The groups cannot
      // conflict: the device ID is new and they are deduplicated.
      const r = await HOT.insertDeviceIfAbsent.execute(this.db, this.caps.name, deviceToRow(d));
      if (affected(r.numAffectedRows) === 0) {
        const sameId = await this.db.selectFrom('devices').select('id').where('id', '=', d.id).executeTakeFirst();
        throw new StoreConflictError(`duplicate key: a device with ${sameId ? 'this id' : 'this registration ID in this tenant'} exists`, sameId ? 'devices_pkey' : 'devices_tenant_registration_id_key');
      }
      await this.insertDeviceGroups(this.db, d);
      return;
    }
    await this.atomic(async (db) => {
      await HOT.insertDevice.execute(db, this.caps.name, deviceToRow(d));
      await this.insertDeviceGroups(db, d);
    });
  }

  async getDevice(tenantId: string, id: string): Promise<Device | undefined> {
    const r = await this.db.selectFrom('devices').selectAll().where('tenant_id', '=', tenantId).where('id', '=', id).executeTakeFirst();
    return r && deviceFromRow(r);
  }

  async getDeviceByRegistrationId(tenantId: string, registrationId: string): Promise<Device | undefined> {
    const r = (await HOT.deviceByRegistrationId.execute<Selectable<DevicesTable>>(this.db, this.caps.name, { tenantId, registrationId })).rows[0];
    return r && deviceFromRow(r);
  }

  async listDevices(tenantId: string, filter: DeviceFilter, page: PageRequest): Promise<Page<Device>> {
    const limit = pageLimit(page);
    const cursor = page.cursor;
    const rows = await this.deviceQuery(this.db, tenantId, filter)
      .selectAll()
      .$if(!!cursor, (q) => q.where('id', '>', cursor as string))
      .orderBy('id')
      .limit(limit + 1)
      .execute();
    return toPage(rows, limit, deviceFromRow, byId);
  }

  /** Replaces every field except id, tenantId, registrationId and createdAt (and re-indexes groups). */
  async updateDevice(d: Device): Promise<boolean> {
    return this.atomic(async (db) => {
      const row = deviceToRow(d);
      const r = await db
        .updateTable('devices')
        .set({
          enrollment_id: row.enrollment_id,
          name: row.name,
          model: row.model,
          firmware_version: row.firmware_version,
          region: row.region,
          status: row.status,
          public_key_fingerprint: row.public_key_fingerprint,
          attributes: row.attributes,
          groups: row.groups,
          policy_name: row.policy_name,
          configuration: row.configuration,
          configuration_version: row.configuration_version,
          updated_at: row.updated_at,
          provisioned_at: row.provisioned_at,
        })
        .where('tenant_id', '=', d.tenantId)
        .where('id', '=', d.id)
        .executeTakeFirst();
      if (affected(r.numUpdatedRows) === 0) return false;
      await db.deleteFrom('device_groups').where('device_id', '=', d.id).execute();
      await this.insertDeviceGroups(db, d);
      return true;
    });
  }

  /** Group rows go with the device (ON DELETE CASCADE); certificates stay (CRLs still need them). */
  async deleteDevice(tenantId: string, id: string): Promise<boolean> {
    const r = await this.db.deleteFrom('devices').where('tenant_id', '=', tenantId).where('id', '=', id).executeTakeFirst();
    return affected(r.numDeletedRows) > 0;
  }

  async countDevices(tenantId: string, filter: DeviceFilter): Promise<number> {
    const r = await this.deviceQuery(this.db, tenantId, filter)
      .select((eb) => eb.fn.countAll().as('n'))
      .executeTakeFirstOrThrow();
    return Number(r.n);
  }

  // --- certificates -----------------------------------------------------------------------------

  async createCertificate(c: CertificateRecord): Promise<void> {
    // No savepoint on PostgreSQL (see recordAttempt): the one unique key besides
    // the random ID is the random serial.
    await HOT.insertCertificate.execute(this.db, this.caps.name, certificateToRow(c));
  }

  async getCertificate(tenantId: string | null, id: string): Promise<CertificateRecord | undefined> {
    const r = await this.db
      .selectFrom('certificates')
      .selectAll()
      .where('id', '=', id)
      .$if(tenantId !== null, (q) => q.where('tenant_id', '=', tenantId as string))
      .executeTakeFirst();
    return r && certificateFromRow(r);
  }

  async getCertificateBySerial(serial: string): Promise<CertificateRecord | undefined> {
    const r = await this.db.selectFrom('certificates').selectAll().where('serial', '=', serial).executeTakeFirst();
    return r && certificateFromRow(r);
  }

  async listCertificates(tenantId: string, filter: CertificateFilter, page: PageRequest): Promise<Page<CertificateRecord>> {
    const limit = pageLimit(page);
    const cursor = page.cursor;
    const { deviceId, status, serial } = filter;
    const rows = await this.db
      .selectFrom('certificates')
      .selectAll()
      .where('tenant_id', '=', tenantId)
      .$if(deviceId !== undefined, (q) => q.where('device_id', '=', deviceId as string))
      .$if(status !== undefined, (q) => q.where('status', '=', status as string))
      .$if(serial !== undefined, (q) => q.where('serial', '=', serial as string))
      .$if(!!cursor, (q) => q.where('id', '>', cursor as string))
      .orderBy('id')
      .limit(limit + 1)
      .execute();
    return toPage(rows, limit, certificateFromRow, byId);
  }

  /** The newest active certificate of the device for that key. */
  async findActiveCertificate(deviceId: string, publicKeyFingerprint: string): Promise<CertificateRecord | undefined> {
    const r = await this.db
      .selectFrom('certificates')
      .selectAll()
      .where('device_id', '=', deviceId)
      .where('public_key_fingerprint', '=', publicKeyFingerprint)
      .where('status', '=', 'active')
      .orderBy('created_at', 'desc')
      .orderBy('id', 'desc')
      .limit(1)
      .executeTakeFirst();
    return r && certificateFromRow(r);
  }

  async setCertificateStatus(id: string, status: CertificateStatus, revokedAt: string | null, reason: string | null, onlyIfStatus?: CertificateStatus): Promise<boolean> {
    const r = await this.db
      .updateTable('certificates')
      .set({ status, revoked_at: revokedAt, revocation_reason: reason })
      .where('id', '=', id)
      .$if(onlyIfStatus !== undefined, (q) => q.where('status', '=', onlyIfStatus as string))
      .executeTakeFirst();
    return affected(r.numUpdatedRows) > 0;
  }

  async setDeviceCertificatesStatus(
    deviceId: string,
    fromStatus: CertificateStatus,
    toStatus: CertificateStatus,
    revokedAt: string | null,
    reason: string | null,
  ): Promise<number> {
    const r = await this.db
      .updateTable('certificates')
      .set({ status: toStatus, revoked_at: revokedAt, revocation_reason: reason })
      .where('device_id', '=', deviceId)
      .where('status', '=', fromStatus)
      .executeTakeFirst();
    return affected(r.numUpdatedRows);
  }

  /** Revoked certificates of the issuer with notAfter >= notAfterSince, by id. */
  async listRevokedCertificates(issuerCaId: string, notAfterSince: string): Promise<CertificateRecord[]> {
    const rows = await this.db
      .selectFrom('certificates')
      .selectAll()
      .where('issuer_ca_id', '=', issuerCaId)
      .where('status', '=', 'revoked')
      .where('not_after', '>=', notAfterSince)
      .orderBy('id')
      .execute();
    return rows.map(certificateFromRow);
  }

  // --- attempts ---------------------------------------------------------------------------------

  async recordAttempt(a: AttemptRecord): Promise<void> {
    // Inside a transaction on PostgreSQL, conflict-prone writes run in a savepoint (write()) so that
    // the caller can catch a conflict and go on. Attempts and certificates have only random unique keys:
    // a conflict would be a broken random source, and aborting the whole transaction (which callers
    // then retry as a whole) is the right answer. The savepoint cost two round trips per row.
    await HOT.insertAttempt.execute(this.db, this.caps.name, attemptToRow(a));
  }

  /** `since` is inclusive, `until` exclusive (createdAt). */
  async listAttempts(tenantId: string | null, filter: AttemptFilter, page: PageRequest): Promise<Page<AttemptRecord>> {
    const limit = pageLimit(page);
    const cursor = page.cursor;
    const { reasonCode, registrationId, enrollmentId, outcome, since, until } = filter;
    const rows = await this.db
      .selectFrom('attempts')
      .selectAll()
      .$if(tenantId !== null, (q) => q.where('tenant_id', '=', tenantId as string))
      .$if(tenantId === null, (q) => q.where('tenant_id', 'is', null))
      .$if(reasonCode !== undefined, (q) => q.where('reason_code', '=', reasonCode as string))
      .$if(registrationId !== undefined, (q) => q.where('registration_id', '=', registrationId as string))
      .$if(enrollmentId !== undefined, (q) => q.where('enrollment_id', '=', enrollmentId as string))
      .$if(outcome !== undefined, (q) => q.where('outcome', '=', outcome as string))
      .$if(since !== undefined, (q) => q.where('created_at', '>=', since as string))
      .$if(until !== undefined, (q) => q.where('created_at', '<', until as string))
      .$if(!!cursor, (q) => q.where('id', '>', cursor as string))
      .orderBy('id')
      .limit(limit + 1)
      .execute();
    return toPage(rows, limit, attemptFromRow, byId);
  }

  // --- audit ------------------------------------------------------------------------------------

  /**
   * Serialised across processes: PostgreSQL takes pg_advisory_xact_lock(AUDIT_CHAIN_LOCK_ID) inside the
   * transaction; on SQLite the transaction already holds the write lock (BEGIN IMMEDIATE). Inside a
   * caller's transaction the lock is held until that transaction ends, so append audit events last.
   * `details` is stored and hashed as its JSON round trip, so what is read back verifies.
   */
  async appendAudit(e: AuditEventInput & { id: string; createdAt: string }): Promise<AuditEvent> {
    const details = jsonRoundTrip(e.details ?? {});
    return this.atomic(async (db) => {
      if (this.caps.auditSerialisation === 'advisory-lock') {
        await sql`select pg_advisory_xact_lock(${sql.lit(AUDIT_CHAIN_LOCK_ID)})`.execute(db);
      }
      const last = await db.selectFrom('audit_events').select(['seq', 'hash']).orderBy('seq', 'desc').limit(1).executeTakeFirst();
      const unhashed: Omit<AuditEvent, 'hash'> = {
        seq: last ? Number(last.seq) + 1 : 1,
        id: e.id,
        tenantId: e.tenantId,
        actor: e.actor,
        action: e.action,
        resourceType: e.resourceType,
        resourceId: e.resourceId,
        details,
        createdAt: e.createdAt,
        prevHash: last ? last.hash : AUDIT_GENESIS_HASH,
      };
      const event: AuditEvent = { ...unhashed, hash: auditEventHash(unhashed) };
      await db.insertInto('audit_events').values(auditToRow(event)).execute();
      return event;
    });
  }

  /** A tenant's events in seq order; the cursor is the last seq of the page (ids are not chain-ordered). */
  async listAudit(tenantId: string, page: PageRequest): Promise<Page<AuditEvent>> {
    const limit = pageLimit(page);
    const after = seqCursor(page.cursor);
    const rows = await this.db
      .selectFrom('audit_events')
      .selectAll()
      .where('tenant_id', '=', tenantId)
      .where('seq', '>', after)
      .orderBy('seq')
      .limit(limit + 1)
      .execute();
    return toPage(rows, limit, auditFromRow, (ev) => String(ev.seq));
  }

  async *iterateAudit(batchSize: number): AsyncIterable<AuditEvent[]> {
    const size = Math.min(MAX_PAGE_SIZE * 10, Math.max(1, Math.floor(batchSize) || DEFAULT_PAGE_SIZE));
    let after = 0;
    for (;;) {
      const rows = await this.db.selectFrom('audit_events').selectAll().where('seq', '>', after).orderBy('seq').limit(size).execute();
      const batch = rows.map(auditFromRow);
      const last = batch[batch.length - 1];
      if (last === undefined) return;
      yield batch;
      if (batch.length < size) return;
      after = last.seq;
    }
  }

  // --- settings ---------------------------------------------------------------------------------

  async getConfigVersion(): Promise<string> {
    const r = (await HOT.configVersion.execute<{ version: unknown }>(this.db, this.caps.name, { id: 1 })).rows[0];
    return String(r?.version ?? 'missing');
  }

  async getSetting(key: string): Promise<string | undefined> {
    const r = await this.db.selectFrom('settings').select('value').where('key', '=', key).executeTakeFirst();
    return r?.value;
  }

  async putSettingIfAbsent(key: string, value: string): Promise<boolean> {
    const r = await this.db
      .insertInto('settings')
      .values({ key, value })
      .onConflict((oc) => oc.column('key').doNothing())
      .executeTakeFirst();
    return affected(r.numInsertedOrUpdatedRows) > 0;
  }

  async setSetting(key: string, value: string): Promise<void> {
    await this.db
      .insertInto('settings')
      .values({ key, value })
      .onConflict((oc) => oc.column('key').doUpdateSet({ value }))
      .execute();
  }

  async deleteSetting(key: string): Promise<boolean> {
    const r = await this.db.deleteFrom('settings').where('key', '=', key).executeTakeFirst();
    return affected(r.numDeletedRows) > 0;
  }
}

/**
 * Calls on one transaction's Repos run one at a time, in call order. A transaction is a single
 * connection, and the savepoints used by atomic()/write() must not interleave with other statements
 * (`Promise.all([tx.a(), tx.b()])` would otherwise release or roll back each other's savepoints).
 */
function serialised(repos: KyselyRepos): Repos {
  let tail: Promise<unknown> = Promise.resolve();
  return new Proxy(repos, {
    get(target, prop, receiver) {
      const value: unknown = Reflect.get(target, prop, receiver);
      if (typeof value !== 'function' || prop === 'iterateAudit') return value;
      const method = value as (...args: unknown[]) => unknown;
      return (...args: unknown[]): Promise<unknown> => {
        const run = tail.then(() => method.apply(target, args));
        tail = run.catch(() => undefined);
        return run;
      };
    },
  });
}

export interface KyselyStoreOptions {
  db: Kysely<Database>;
  capabilities: DialectCapabilities;
  /** The guard the Kysely instance's dialect was wrapped with (error mapping, tx misuse detection). */
  guard?: StoreGuard;
}

/** At most this many store transactions share one database transaction (group commit). */
const MAX_GROUP = 64;

interface QueuedTransaction {
  fn: (tx: Repos) => Promise<unknown>;
  resolve: (value: unknown) => void;
  reject: (error: unknown) => void;
}

/** The Store for every Kysely dialect: repos as above, plus transactions, ping and close. */
export class KyselyStore extends KyselyRepos implements Store {
  readonly dialect: 'sqlite' | 'postgres';
  readonly #guard: StoreGuard | undefined;
  #closed = false;

  constructor(opts: KyselyStoreOptions) {
    super(opts.db, opts.capabilities, false);
    this.dialect = opts.capabilities.name;
    this.#guard = opts.guard;
  }

  /**
   * Runs fn in one transaction (SQLite: BEGIN IMMEDIATE, holding the write lock until commit; PostgreSQL:
   * READ COMMITTED). Use only `tx` inside fn: calling the store itself there throws (see StoreGuard).
   *
   * Group commit where the database has one writer at a time (SQLite): transactions asked for in the
   * same turn of the event loop, or while the previous group was running or this one was waiting
   * for the write lock, run as one database transaction (the group is taken once the lock is held),
   * one after the other, each in a savepoint of its own. One that throws is rolled back to its
   * savepoint and rejects alone; every other one resolves only once the whole group has committed.
   * If the group's database transaction is lost instead (its COMMIT fails, or a member's failure
   * makes the database roll back everything), each member runs again alone: fn may run twice, so
   * it must act only through `tx` (see Store.transaction). Each behaves as if it ran alone, in
   * turn: it sees what the ones before it in the group wrote. What the group saves is the write lock taken once
   * instead of per transaction (with several worker processes, most of the cost was their
   * contending for it) and pages that several transactions change (the newest leaf of every
   * time-ordered index) written to the WAL once.
   */
  async transaction<T>(fn: (tx: Repos) => Promise<T>): Promise<T> {
    if (!this.caps.groupCommit) return this.#alone(fn);
    return new Promise<T>((resolve, reject) => {
      this.#queued.push({ fn: fn as (tx: Repos) => Promise<unknown>, resolve: resolve as (v: unknown) => void, reject });
      if (!this.#draining) {
        this.#draining = true;
        setImmediate(() => void this.#drain());
      }
    });
  }

  readonly #queued: QueuedTransaction[] = [];
  #draining = false;
  readonly #stats = { transactions: 0, databaseTransactions: 0 };

  /**
   * Calls fn with every SQL statement and its parameters before it runs, until called again with
   * undefined (the query-plan test records the device path with it).
   */
  observeQueries(fn: ((sql: string, parameters: readonly unknown[]) => void) | undefined): void {
    if (!this.#guard) throw new Error('this store was opened without a guard: nothing to observe');
    this.#guard.queryTap = fn ? (q) => fn(q.sql, q.parameters) : undefined;
  }

  transactionStats(): { transactions: number; databaseTransactions: number } {
    return { ...this.#stats };
  }

  async #alone<T>(fn: (tx: Repos) => Promise<T>): Promise<T> {
    this.#stats.transactions++;
    this.#stats.databaseTransactions++;
    let failed: { error: unknown } | undefined;
    try {
      return await this.db.transaction().execute((trx) =>
        this.#body(trx, fn).catch((error: unknown) => {
          failed = { error };
          throw error;
        }),
      );
    } catch (err) {
      // fn failed and then so did the ROLLBACK: the database had already rolled the transaction
      // back (SQLite does on some errors, "no transaction is active"), or the connection is gone and
      // the server aborts it. Nothing was committed either way; fn's error says why.
      throw failed ? failed.error : err;
    }
  }

  #body<T>(trx: Db, fn: (tx: Repos) => Promise<T>): Promise<T> {
    const tx = serialised(new KyselyRepos(trx, this.caps, true));
    return this.#guard ? this.#guard.inTransactionScope(() => fn(tx)) : fn(tx);
  }

  async #drain(): Promise<void> {
    try {
      while (this.#queued.length > 0) {
        let group: QueuedTransaction[] = [];
        let failedAlone: { error: unknown } | undefined;
        const waiting = Math.min(this.#queued.length, MAX_GROUP);
        let outcomes: Array<{ ok: true; value: unknown } | { ok: false; error: unknown }>;
        try {
          outcomes = await this.db.transaction().execute(async (trx) => {
            // Taken once the write lock is held: what was asked for while another process held it
            // joins this group, so the busier the lock, the fewer times it changes hands.
            group = this.#queued.splice(0, MAX_GROUP);
            this.#stats.transactions += group.length;
            this.#stats.databaseTransactions++;
            if (group.length === 1) {
              const value = await this.#body(trx, group[0]!.fn).catch((error: unknown) => {
                failedAlone = { error };
                throw error;
              });
              return [{ ok: true, value }];
            }
            const out: typeof outcomes = [];
            for (const job of group) {
              // fn's own failure is its outcome; a failed rollback (thrown by inSavepoint from outside
              // fn) ends the whole group.
              let failed: { error: unknown } | undefined;
              const value = await inSavepoint(trx, 'fleetpass_group', () =>
                this.#body(trx, job.fn).catch((error: unknown) => {
                  failed = { error };
                  throw error;
                }),
              ).catch((error: unknown) => {
                if (error !== failed?.error) throw error;
              });
              out.push(failed ? { ok: false, error: failed.error } : { ok: true, value });
            }
            return out;
          });
        } catch (err) {
          // A group of one: its own failure, rolled back (fn's error, even if the ROLLBACK failed too:
          // see #alone). None: BEGIN failed (the lock stayed taken past busy_timeout); it fails those
          // that waited.
          if (group.length <= 1) {
            if (group.length === 0) group = this.#queued.splice(0, waiting);
            for (const job of group) job.reject(failedAlone ? failedAlone.error : err);
            continue;
          }
          // Larger: the database transaction was lost as a whole (a failed COMMIT, or a member whose
          // failure made the database roll everything back, so that its savepoint was gone). Nothing
          // of the group is kept, so each member runs again alone, in order, and meets its own fate:
          // one bad transaction does not fail up to MAX_GROUP - 1 good ones with it.
          this.#stats.transactions -= group.length;
          for (const job of group) await this.#alone(job.fn).then(job.resolve, job.reject);
          continue;
        }
        outcomes.forEach((o, i) => (o.ok ? group[i]!.resolve(o.value) : group[i]!.reject(o.error)));
        // One turn of the event loop before the next group: the write lock is free meanwhile for
        // another process (which polls for it), and what arrives in that turn joins the next group.
        if (this.#queued.length > 0) await new Promise((resolve) => setImmediate(resolve));
      }
    } finally {
      this.#draining = false;
    }
  }

  async ping(): Promise<void> {
    await sql`select 1`.execute(this.db);
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.db.destroy();
  }
}
