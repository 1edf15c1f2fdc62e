import type { Kysely } from 'kysely';
import type { DialectCapabilities } from '../dialects/capabilities.js';
import { UNIQUE_KEYS } from '../schema.js';
import type { UniqueKeyName } from '../schema.js';

/**
 * The initial schema. Portable DDL through Kysely's schema builder; the only dialect differences
 * (bytewise-sorting key text, the audit seq integer type) come from the capability flags.
 */
export async function up(db: Kysely<unknown>, caps: DialectCapabilities): Promise<void> {
  const key = caps.keyTextType;
  const s = db.schema;

  const uniqueIndex = async (name: UniqueKeyName, where?: 'not-null'): Promise<void> => {
    const { table, columns } = UNIQUE_KEYS[name];
    let b = s.createIndex(name).unique().on(table).columns([...columns]);
    if (where === 'not-null') b = b.where(columns[0], 'is not', null);
    await b.execute();
  };
  const index = async (table: string, columns: string[]): Promise<void> => {
    await s.createIndex(`${table}_${columns.join('_')}_idx`).on(table).columns(columns).execute();
  };

  await s
    .createTable('tenants')
    .addColumn('id', key, (c) => c.primaryKey())
    .addColumn('name', 'text', (c) => c.notNull())
    .addColumn('id_scope', key, (c) => c.notNull())
    .addColumn('created_at', key, (c) => c.notNull())
    .execute();
  await uniqueIndex('tenants_id_scope_key');

  await s
    .createTable('api_keys')
    .addColumn('id', key, (c) => c.primaryKey())
    .addColumn('tenant_id', key, (c) => c.notNull())
    .addColumn('name', 'text', (c) => c.notNull())
    .addColumn('role', 'text', (c) => c.notNull())
    .addColumn('token_hash', key, (c) => c.notNull())
    .addColumn('created_at', key, (c) => c.notNull())
    .addColumn('revoked_at', key)
    .execute();
  await uniqueIndex('api_keys_token_hash_key');
  await index('api_keys', ['tenant_id', 'id']);

  await s
    .createTable('cas')
    .addColumn('id', key, (c) => c.primaryKey())
    .addColumn('tenant_id', key)
    .addColumn('kind', 'text', (c) => c.notNull())
    .addColumn('name', 'text', (c) => c.notNull())
    .addColumn('certificate_pem', 'text', (c) => c.notNull())
    .addColumn('subject', 'text', (c) => c.notNull())
    .addColumn('fingerprint', key, (c) => c.notNull())
    .addColumn('key_ref', 'text')
    .addColumn('parent_id', key)
    .addColumn('not_before', key, (c) => c.notNull())
    .addColumn('not_after', key, (c) => c.notNull())
    .addColumn('created_at', key, (c) => c.notNull())
    .execute();
  await index('cas', ['tenant_id', 'id']);
  await index('cas', ['subject']);

  await s
    .createTable('templates')
    .addColumn('id', key, (c) => c.primaryKey())
    .addColumn('tenant_id', key, (c) => c.notNull())
    .addColumn('name', key, (c) => c.notNull())
    .addColumn('body', 'text', (c) => c.notNull())
    .addColumn('created_at', key, (c) => c.notNull())
    .addColumn('updated_at', key, (c) => c.notNull())
    .execute();
  await uniqueIndex('templates_tenant_name_key');
  await index('templates', ['tenant_id', 'id']);

  await s
    .createTable('policies')
    .addColumn('id', key, (c) => c.primaryKey())
    .addColumn('tenant_id', key, (c) => c.notNull())
    .addColumn('name', key, (c) => c.notNull())
    .addColumn('document', 'text', (c) => c.notNull())
    .addColumn('created_at', key, (c) => c.notNull())
    .addColumn('updated_at', key, (c) => c.notNull())
    .execute();
  await uniqueIndex('policies_tenant_name_key');
  await index('policies', ['tenant_id', 'id']);

  await s
    .createTable('enrollments')
    .addColumn('id', key, (c) => c.primaryKey())
    .addColumn('tenant_id', key, (c) => c.notNull())
    .addColumn('kind', 'text', (c) => c.notNull())
    .addColumn('name', 'text', (c) => c.notNull())
    .addColumn('registration_id', key)
    .addColumn('attestation_type', 'text', (c) => c.notNull())
    .addColumn('attestation', 'text', (c) => c.notNull())
    .addColumn('ca_id', key)
    .addColumn('token_hash', key)
    .addColumn('token_used_at', key)
    .addColumn('token_used_by_key_fingerprint', key)
    .addColumn('token_used_by_device_id', key)
    .addColumn('template_id', key)
    .addColumn('template', 'text')
    .addColumn('reprovision_policy', 'text', (c) => c.notNull())
    .addColumn('enabled', 'integer', (c) => c.notNull())
    .addColumn('expires_at', key)
    .addColumn('max_devices', 'integer')
    .addColumn('device_count', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('webhook_url', 'text')
    .addColumn('created_at', key, (c) => c.notNull())
    .addColumn('updated_at', key, (c) => c.notNull())
    .execute();
  await uniqueIndex('enrollments_token_hash_key', 'not-null');
  await index('enrollments', ['tenant_id', 'id']);
  await index('enrollments', ['tenant_id', 'attestation_type']);
  await index('enrollments', ['registration_id']);
  await index('enrollments', ['ca_id']);

  await s
    .createTable('devices')
    .addColumn('id', key, (c) => c.primaryKey())
    .addColumn('tenant_id', key, (c) => c.notNull())
    .addColumn('enrollment_id', key, (c) => c.notNull())
    .addColumn('registration_id', key, (c) => c.notNull())
    .addColumn('name', 'text', (c) => c.notNull())
    .addColumn('model', 'text')
    .addColumn('firmware_version', 'text')
    .addColumn('region', 'text')
    .addColumn('status', 'text', (c) => c.notNull())
    .addColumn('public_key_fingerprint', key, (c) => c.notNull())
    .addColumn('attributes', 'text', (c) => c.notNull())
    .addColumn('groups', 'text', (c) => c.notNull())
    .addColumn('policy_name', 'text')
    .addColumn('configuration', 'text', (c) => c.notNull())
    .addColumn('configuration_version', 'integer', (c) => c.notNull())
    .addColumn('created_at', key, (c) => c.notNull())
    .addColumn('updated_at', key, (c) => c.notNull())
    .addColumn('provisioned_at', key, (c) => c.notNull())
    .execute();
  await uniqueIndex('devices_tenant_registration_id_key');
  await index('devices', ['tenant_id', 'id']);
  await index('devices', ['enrollment_id']);

  await s
    .createTable('device_groups')
    .addColumn('device_id', key, (c) => c.notNull().references('devices.id').onDelete('cascade'))
    .addColumn('tenant_id', key, (c) => c.notNull())
    .addColumn('group_name', key, (c) => c.notNull())
    .addPrimaryKeyConstraint('device_groups_pkey', ['device_id', 'group_name'])
    .execute();
  await index('device_groups', ['tenant_id', 'group_name', 'device_id']);

  await s
    .createTable('certificates')
    .addColumn('id', key, (c) => c.primaryKey())
    .addColumn('tenant_id', key)
    .addColumn('device_id', key)
    .addColumn('serial', key, (c) => c.notNull())
    .addColumn('issuer_ca_id', key, (c) => c.notNull())
    .addColumn('subject', 'text', (c) => c.notNull())
    .addColumn('not_before', key, (c) => c.notNull())
    .addColumn('not_after', key, (c) => c.notNull())
    .addColumn('public_key_fingerprint', key, (c) => c.notNull())
    .addColumn('pem', 'text', (c) => c.notNull())
    .addColumn('status', 'text', (c) => c.notNull())
    .addColumn('revoked_at', key)
    .addColumn('revocation_reason', 'text')
    .addColumn('created_at', key, (c) => c.notNull())
    .execute();
  await uniqueIndex('certificates_serial_key');
  await index('certificates', ['device_id', 'public_key_fingerprint', 'status']);
  await index('certificates', ['issuer_ca_id', 'status']);
  await index('certificates', ['tenant_id', 'id']);

  await s
    .createTable('attempts')
    .addColumn('id', key, (c) => c.primaryKey())
    .addColumn('tenant_id', key)
    .addColumn('enrollment_id', key)
    .addColumn('registration_id', key)
    .addColumn('protocol', 'text', (c) => c.notNull())
    .addColumn('source_address', 'text')
    .addColumn('outcome', 'text', (c) => c.notNull())
    .addColumn('reason_code', key)
    .addColumn('message', 'text')
    .addColumn('device_id', key)
    .addColumn('latency_ms', 'integer', (c) => c.notNull())
    .addColumn('created_at', key, (c) => c.notNull())
    .execute();
  await index('attempts', ['tenant_id', 'id']);
  await index('attempts', ['tenant_id', 'reason_code']);
  await index('attempts', ['tenant_id', 'registration_id']);

  await s
    .createTable('audit_events')
    .addColumn('seq', caps.seqType, (c) => c.primaryKey())
    .addColumn('id', key, (c) => c.notNull())
    .addColumn('tenant_id', key)
    .addColumn('actor', 'text', (c) => c.notNull())
    .addColumn('action', 'text', (c) => c.notNull())
    .addColumn('resource_type', 'text', (c) => c.notNull())
    .addColumn('resource_id', 'text')
    .addColumn('details', 'text', (c) => c.notNull())
    .addColumn('created_at', key, (c) => c.notNull())
    .addColumn('prev_hash', key, (c) => c.notNull())
    .addColumn('hash', key, (c) => c.notNull())
    .execute();
  await uniqueIndex('audit_events_id_key');
  await index('audit_events', ['tenant_id', 'seq']);

  await s
    .createTable('settings')
    .addColumn('key', key, (c) => c.primaryKey())
    .addColumn('value', 'text', (c) => c.notNull())
    .execute();
}

export async function down(db: Kysely<unknown>): Promise<void> {
  for (const table of [
    'settings', 'audit_events', 'attempts', 'certificates', 'device_groups', 'devices', 'enrollments', 'policies',
    'templates', 'cas', 'api_keys', 'tenants',
  ]) {
    await db.schema.dropTable(table).ifExists().execute();
  }
}
