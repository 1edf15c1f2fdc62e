import type { Store } from '../registry/store.js';
import type { OpenedDialect } from './dialects/guard.js';
import { createPostgresKysely } from './dialects/postgres.js';
import { createSqliteKysely } from './dialects/sqlite.js';
import { KyselyStore } from './kysely-store.js';
import { migrateToLatest } from './migrations/index.js';

export { KyselyStore } from './kysely-store.js';
export { MIGRATIONS } from './migrations/index.js';

export interface OpenStoreOptions {
  /** `sqlite:<path>`, `sqlite::memory:`, or `postgres://…` / `postgresql://…`. */
  url: string;
  /** PostgreSQL pool size; default 10. Ignored for SQLite (one connection). */
  poolSize?: number;
  /** Apply pending migrations before returning; default true. */
  migrate?: boolean;
}

/** The URL with any password replaced, for messages and logs. */
export function redactStoreUrl(url: string): string {
  return url.replace(/^([a-z][a-z0-9+.-]*:\/\/[^:/@]*:)[^@]*@/i, '$1***@');
}

function openDialect(url: string, poolSize?: number): OpenedDialect {
  if (/^postgres(ql)?:\/\//i.test(url)) return createPostgresKysely({ url, ...(poolSize === undefined ? {} : { poolSize }) });
  if (url.startsWith('sqlite:')) {
    let path = url.slice('sqlite:'.length);
    if (path.startsWith('//')) path = path.slice(2); // sqlite:///abs/path → /abs/path
    if (path === '') throw new Error(`Store URL has no SQLite path: ${url}`);
    return createSqliteKysely({ path });
  }
  throw new Error(`Unsupported store URL ${redactStoreUrl(url)}: expected sqlite:<path>, sqlite::memory: or postgres://…`);
}

/** Opens the store for a URL and (by default) migrates it to the latest schema. */
export async function openStore(opts: OpenStoreOptions): Promise<Store> {
  const opened = openDialect(opts.url, opts.poolSize);
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
  const opened = openDialect(url, 1);
  try {
    return await migrateToLatest(opened.db, opened.capabilities);
  } finally {
    await opened.db.destroy();
  }
}
