import type { Store } from '../registry/store.js';
import type { OpenedDialect } from './dialects/guard.js';
import { createPostgresKysely, type PostgresOptions } from './dialects/postgres.js';
import { createSqliteKysely, type CheckpointMode, type SqliteOptions } from './dialects/sqlite.js';
import { sqlitePathOf } from './wal-checkpointer.js';
import { KyselyStore } from './kysely-store.js';
import { migrateToLatest } from './migrations/index.js';

export { KyselyStore } from './kysely-store.js';
export { MIGRATIONS } from './migrations/index.js';
export type { Checkpointer } from './dialects/sqlite-checkpointer.js';
export { startWalCheckpointer } from './wal-checkpointer.js';

export interface OpenStoreOptions {
  /** `sqlite:<path>`, `sqlite::memory:`, or `postgres://…` / `postgresql://…`. */
  url: string;
  /** PostgreSQL pool size; default 10. Ignored for SQLite (one connection). */
  poolSize?: number;
  /** PostgreSQL: named prepared statements on the registration path; default true. */
  preparedStatements?: boolean;
  /** Apply pending migrations before returning; default true. */
  migrate?: boolean;
  /**
   * SQLite: who checkpoints the WAL (see SqliteOptions.checkpoints). Default 'background', a thread
   * of this process; cluster workers pass 'elsewhere': the primary runs the one checkpointer
   * (startWalCheckpointer).
   */
  sqliteCheckpoints?: CheckpointMode;
  /** SQLite: a background checkpoint failed (logged; the backstop automatic checkpoint remains). */
  onCheckpointError?: (message: string) => void;
  /** SQLite: how long a transaction waits for another process's write lock (default 5000 ms). */
  sqliteBusyTimeoutMs?: number;
}

/** The URL with any password replaced, for messages and logs. */
export function redactStoreUrl(url: string): string {
  return url.replace(/^([a-z][a-z0-9+.-]*:\/\/[^:/@]*:)[^@]*@/i, '$1***@');
}

function openDialect(url: string, pgOpts: Omit<PostgresOptions, 'url'>, sqliteOpts: Omit<SqliteOptions, 'path'> = {}): OpenedDialect {
  if (/^postgres(ql)?:\/\//i.test(url)) return createPostgresKysely({ url, ...pgOpts });
  const path = sqlitePathOf(url);
  if (path !== undefined) return createSqliteKysely({ path, ...sqliteOpts });
  throw new Error(`Unsupported store URL ${redactStoreUrl(url)}: expected sqlite:<path>, sqlite::memory: or postgres://…`);
}

/** Opens the store for a URL and (by default) migrates it to the latest schema. */
export async function openStore(opts: OpenStoreOptions): Promise<Store> {
  const pgOpts = { ...(opts.poolSize === undefined ? {} : { poolSize: opts.poolSize }), ...(opts.preparedStatements === undefined ? {} : { preparedStatements: opts.preparedStatements }) };
  const opened = openDialect(opts.url, pgOpts, {
    ...(opts.sqliteCheckpoints === undefined ? {} : { checkpoints: opts.sqliteCheckpoints }),
    ...(opts.onCheckpointError ? { onCheckpointError: opts.onCheckpointError } : {}),
    ...(opts.sqliteBusyTimeoutMs === undefined ? {} : { busyTimeoutMs: opts.sqliteBusyTimeoutMs }),
  });
  try {
    if (opts.migrate ?? true) await migrateToLatest(opened.db, opened.capabilities);
  } catch (err) {
    await opened.db.destroy().catch(() => undefined);
    throw err;
  }
  return new KyselyStore(opened);
}

/** Migrates the store at `url` to the latest schema; returns the migration names applied now. */
export async function migrateStore(url: string): Promise<string[]> {
  const opened = openDialect(url, { poolSize: 1 }, { checkpoints: 'inline' });
  try {
    return await migrateToLatest(opened.db, opened.capabilities);
  } finally {
    await opened.db.destroy();
  }
}
