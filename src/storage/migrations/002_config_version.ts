import { sql } from 'kysely';
import type { Kysely } from 'kysely';
import type { DialectCapabilities } from '../dialects/capabilities.js';

/**
 * A version number of the configuration a device's request reads (tenants, CAs, templates, policies,
 * enrollments), bumped by triggers in the transaction of every change — whichever process or tool
 * makes it. Processes cache those reads and check this one row per request instead (ConfigCache).
 * Enrollment changes that are not configuration do not bump it: the device count (every
 * registration) and one-time-token use (every token onboarding).
 */
const TABLES = ['tenants', 'cas', 'templates', 'policies'] as const;
const ENROLLMENT_CONFIG_COLUMNS = [
  'id', 'tenant_id', 'kind', 'name', 'registration_id', 'attestation_type', 'attestation', 'ca_id', 'token_hash',
  'template_id', 'template', 'reprovision_policy', 'enabled', 'expires_at', 'max_devices', 'webhook_url', 'created_at', 'updated_at',
] as const;

const BUMP = 'update config_version set version = version + 1 where id = 1';

export async function up(db: Kysely<unknown>, caps: DialectCapabilities): Promise<void> {
  await db.schema
    .createTable('config_version')
    .addColumn('id', 'integer', (c) => c.primaryKey())
    .addColumn('version', 'bigint', (c) => c.notNull())
    .execute();
  await sql`insert into config_version (id, version) values (1, 0)`.execute(db);

  const targets: Array<{ table: string; updateOf?: readonly string[] }> = [...TABLES.map((table) => ({ table })), { table: 'enrollments', updateOf: ENROLLMENT_CONFIG_COLUMNS }];
  if (caps.name === 'postgres') {
    await sql.raw(`create function fleetpass_bump_config_version() returns trigger language plpgsql as $$ begin ${BUMP}; return null; end $$`).execute(db);
    for (const { table, updateOf } of targets) {
      const update = updateOf ? `update of ${updateOf.join(', ')}` : 'update';
      await sql.raw(`create trigger ${table}_config_version after insert or delete or ${update} on ${table} for each statement execute function fleetpass_bump_config_version()`).execute(db);
    }
    return;
  }
  for (const { table, updateOf } of targets) {
    for (const event of ['insert', 'delete', updateOf ? `update of ${updateOf.join(', ')}` : 'update']) {
      const name = `${table}_config_version_${event.split(' ')[0]}`;
      await sql.raw(`create trigger ${name} after ${event} on ${table} begin ${BUMP}; end`).execute(db);
    }
  }
}
