/**
 * The deployment's one WAL checkpointer for a shared SQLite file, for the cluster primary. Kept apart
 * from the store (no Kysely, no drivers) so that the primary loads none of the serving code.
 */
import { startCheckpointer, type Checkpointer } from './dialects/sqlite-checkpointer.js';

/** The file path of a sqlite: URL (':memory:' included); undefined for other URLs. */
export function sqlitePathOf(url: string): string | undefined {
  if (!url.startsWith('sqlite:')) return undefined;
  let path = url.slice('sqlite:'.length);
  if (path.startsWith('//')) path = path.slice(2); // sqlite:///abs/path → /abs/path
  if (path === '') throw new Error(`Store URL has no SQLite path: ${url}`);
  return path;
}

/**
 * The one WAL checkpointer for a SQLite file shared by several processes (cluster workers open their
 * stores with sqliteCheckpoints: 'elsewhere'). Undefined for PostgreSQL and in-memory databases.
 */
export function startWalCheckpointer(url: string, onError?: (message: string) => void): Checkpointer | undefined {
  const path = sqlitePathOf(url);
  if (path === undefined || path === ':memory:') return undefined;
  return startCheckpointer({ path, ...(onError ? { onError } : {}) });
}

