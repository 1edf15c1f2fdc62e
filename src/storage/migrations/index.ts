import { Migrator } from 'kysely';
import type { Kysely, Migration, MigrationProvider } from 'kysely';
import { FleetpassError } from '../../core/errors.js';
import type { DialectCapabilities } from '../dialects/capabilities.js';
import type { Database } from '../schema.js';
import * as m001 from './001_initial.js';
import * as m002 from './002_config_version.js';

/** A migration module: up/down receive the dialect's capability flags next to the Kysely instance. */
export interface InCodeMigration {
  up(db: Kysely<unknown>, caps: DialectCapabilities): Promise<void>;
  down?(db: Kysely<unknown>, caps: DialectCapabilities): Promise<void>;
}

/** Every migration, in order. Names sort lexically; never rename or edit one that has shipped. */
export const MIGRATIONS: Readonly<Record<string, InCodeMigration>> = {
  '001_initial': m001,
  '002_config_version': m002,
};

/** Kysely MigrationProvider over the in-code modules above (no filesystem scan, works from dist/ and bundles). */
export class InCodeMigrationProvider implements MigrationProvider {
  constructor(private readonly caps: DialectCapabilities) {}

  async getMigrations(): Promise<Record<string, Migration>> {
    const out: Record<string, Migration> = {};
    for (const [name, m] of Object.entries(MIGRATIONS)) {
      const down = m.down;
      out[name] = {
        up: (db) => m.up(db, this.caps),
        ...(down ? { down: (db: Kysely<unknown>) => down(db, this.caps) } : {}),
      };
    }
    return out;
  }
}

/**
 * Brings the schema to the latest migration and returns the names applied now (empty when up to date).
 * Safe with several processes starting at once: PostgreSQL takes Kysely's advisory migration lock and
 * runs in one transaction; SQLite runs in one BEGIN IMMEDIATE transaction (see dialects/sqlite.ts).
 */
export async function migrateToLatest(db: Kysely<Database>, caps: DialectCapabilities): Promise<string[]> {
  const migrator = new Migrator({ db, provider: new InCodeMigrationProvider(caps) });
  const { error, results } = await migrator.migrateToLatest();
  if (error !== undefined) {
    if (error instanceof FleetpassError) throw error;
    const failed = results?.find((r) => r.status === 'Error')?.migrationName;
    const message = error instanceof Error ? error.message : String(error);
    throw new Error(`store migration ${failed ?? ''} failed: ${message}`.replace('  ', ' '), { cause: error });
  }
  return (results ?? []).filter((r) => r.status === 'Success').map((r) => r.migrationName);
}
