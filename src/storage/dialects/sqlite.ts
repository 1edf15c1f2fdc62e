import { mkdirSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import BetterSqlite3 from 'better-sqlite3';
import { Kysely, SqliteAdapter, SqliteDialect } from 'kysely';
import type { CompiledQuery, DatabaseConnection, DialectAdapter, Driver, QueryResult } from 'kysely';
import { FleetpassError } from '../../core/errors.js';
import type { Database } from '../schema.js';
import { UNIQUE_KEYS } from '../schema.js';
import type { DialectCapabilities, ErrorClass } from './capabilities.js';
import { errorCode, errorMessage } from './capabilities.js';
import { StoreGuard } from './guard.js';
import { startCheckpointer, type Checkpointer } from './sqlite-checkpointer.js';
import type { OpenedDialect } from './guard.js';

/**
 * The one connection of this process, handed out first come, first served. (Kysely's own mutex wakes
 * every waiter on each release; with dozens of requests in flight that is dozens of wake-ups per
 * statement.)
 */
class ConnectionQueue {
  #held = false;
  readonly #waiters: Array<() => void> = [];

  lock(): Promise<void> {
    if (!this.#held) {
      this.#held = true;
      return Promise.resolve();
    }
    return new Promise((resolve) => this.#waiters.push(resolve));
  }

  unlock(): void {
    const next = this.#waiters.shift();
    if (next) next();
    else this.#held = false;
  }
}

/** Runs `attempt` with error stack traces off: a retried SQLITE_BUSY is expected, and capturing its stack is not free. */
function withoutStack<T>(attempt: () => T): T {
  const limit = Error.stackTraceLimit;
  Error.stackTraceLimit = 0;
  try {
    return attempt();
  } finally {
    Error.stackTraceLimit = limit;
  }
}

/**
 * How a statement waits for another process's lock: on a timer (~1 ms), until the busy timeout; then
 * the SQLITE_BUSY error stands. Not on the next turn of the event loop: when this process has nothing
 * else to do, that retries BEGIN in a busy loop (measured: ~14 failed tries per onboarding with two
 * workers), taking CPU from the process that holds the lock and must finish to release it. The
 * store's group commit makes the wait pay: whatever is asked for meanwhile commits with it.
 */
async function waitForLock(started: number, busyTimeoutMs: number, busy: unknown): Promise<void> {
  if (performance.now() - started >= busyTimeoutMs) throw busy;
  await new Promise((resolve) => setTimeout(resolve, 1));
}

class SqliteConnection implements DatabaseConnection {
  /** Set while this connection is inside BEGIN IMMEDIATE … COMMIT (it holds the write lock). */
  inTransaction = false;

  constructor(private readonly db: { prepare(sql: string): BetterSqlite3.Statement }, private readonly busyTimeoutMs: number) {}

  #run<R>(compiledQuery: CompiledQuery): QueryResult<R> {
    const stmt = this.db.prepare(compiledQuery.sql);
    const parameters = compiledQuery.parameters as unknown[];
    if (stmt.reader) return { rows: stmt.all(parameters) as R[] };
    const { changes, lastInsertRowid } = stmt.run(parameters);
    return { numAffectedRows: BigInt(changes), insertId: BigInt(lastInsertRowid), rows: [] };
  }

  async executeQuery<R>(compiledQuery: CompiledQuery): Promise<QueryResult<R>> {
    if (this.inTransaction) return this.#run<R>(compiledQuery);
    // Outside a transaction a write takes the write lock itself, and may find it taken; a read can
    // meet another process's WAL recovery. Either waits here without blocking the thread.
    const started = performance.now();
    for (let attempt = 0; ; attempt++) {
      try {
        return attempt === 0 ? this.#run<R>(compiledQuery) : withoutStack(() => this.#run<R>(compiledQuery));
      } catch (err) {
        if (errorCode(err) !== 'SQLITE_BUSY') throw err;
        await waitForLock(started, this.busyTimeoutMs, err);
      }
    }
  }

  // eslint-disable-next-line require-yield
  async *streamQuery<R>(): AsyncIterableIterator<QueryResult<R>> {
    throw new Error('streaming is not used by Fleetpass on SQLite');
  }
}

/**
 * Kysely's SqliteDriver starts transactions with a plain (deferred) BEGIN: the write lock is taken at
 * the first write, and two processes that both read first then write can deadlock on the lock upgrade
 * (SQLITE_BUSY without waiting for busy_timeout). BEGIN IMMEDIATE takes the write lock up front, so
 * a second process simply waits for the first to commit. Every store transaction — including
 * appendAudit's read-last-hash-then-insert — therefore runs under the database's single write lock,
 * which is what serialises the audit chain across processes on SQLite.
 *
 * The wait is asynchronous, and the connection is free while it lasts. better-sqlite3 is
 * synchronous and SQLite's own busy handler sleeps in the calling thread, so with several `--workers`
 * a worker waiting for another's lock would do nothing else — no TLS handshakes, no CSR checks, no
 * reads for other devices. Serving connections therefore run with busy_timeout 0 (set once: a
 * prepared `pragma busy_timeout` statement is compiled again on every run, which cost ~5% of a
 * worker's CPU when toggled around each BEGIN); while another process holds the lock (for well
 * under a millisecond: a group of registrations is a few dozen statements run back to back) the
 * connection goes back to the queue, so this process's reads go on, and BEGIN IMMEDIATE is
 * repeated as waitForLock says.
 */
class ImmediateSqliteDriver implements Driver {
  readonly #queue = new ConnectionQueue();
  readonly #connection: SqliteConnection;
  readonly #begin: BetterSqlite3.Statement;
  readonly #commit: BetterSqlite3.Statement;
  readonly #rollback: BetterSqlite3.Statement;

  constructor(private readonly database: ReturnType<typeof withStatementCache>, sqlite: BetterSqlite3.Database, private readonly busyTimeoutMs: number) {
    this.#connection = new SqliteConnection(database, busyTimeoutMs);
    this.#begin = sqlite.prepare('begin immediate');
    this.#commit = sqlite.prepare('commit');
    this.#rollback = sqlite.prepare('rollback');
  }

  async init(): Promise<void> {}

  async acquireConnection(): Promise<DatabaseConnection> {
    await this.#queue.lock();
    return this.#connection;
  }

  async releaseConnection(): Promise<void> {
    this.#queue.unlock();
  }

  async beginTransaction(): Promise<void> {
    const started = performance.now();
    for (;;) {
      try {
        withoutStack(() => this.#begin.run());
        this.#connection.inTransaction = true;
        return;
      } catch (err) {
        if (errorCode(err) !== 'SQLITE_BUSY') throw err;
        // While waiting, the connection serves this process's other statements.
        this.#queue.unlock();
        try {
          await waitForLock(started, this.busyTimeoutMs, err);
        } finally {
          await this.#queue.lock();
        }
      }
    }
  }

  async commitTransaction(): Promise<void> {
    this.#commit.run();
    this.#connection.inTransaction = false;
  }

  async rollbackTransaction(): Promise<void> {
    this.#connection.inTransaction = false;
    this.#rollback.run();
  }

  async destroy(): Promise<void> {
    await this.database.close();
  }
}

/**
 * SQLite supports transactional DDL; Kysely's adapter says it does not (and takes no migration lock,
 * assuming one process). Declaring it transactional makes the Migrator run inside one BEGIN IMMEDIATE
 * transaction, so processes starting at the same time migrate one after the other.
 */
class TransactionalDdlSqliteAdapter extends SqliteAdapter {
  override get supportsTransactionalDdl(): boolean {
    return true;
  }
}

class FleetpassSqliteDialect extends SqliteDialect {
  constructor(private readonly database: ReturnType<typeof withStatementCache>, private readonly sqlite: BetterSqlite3.Database, private readonly busyTimeoutMs: number) {
    super({ database });
  }

  override createDriver(): Driver {
    return new ImmediateSqliteDriver(this.database, this.sqlite, this.busyTimeoutMs);
  }

  override createAdapter(): DialectAdapter {
    return new TransactionalDdlSqliteAdapter();
  }
}

const UNAVAILABLE_PREFIXES = [
  'SQLITE_BUSY', 'SQLITE_LOCKED', 'SQLITE_CANTOPEN', 'SQLITE_IOERR', 'SQLITE_FULL', 'SQLITE_READONLY',
  'SQLITE_CORRUPT', 'SQLITE_NOTADB', 'SQLITE_PROTOCOL',
];

function sqliteConstraintName(message: string, primaryKey: boolean): string | undefined {
  // "UNIQUE constraint failed: devices.tenant_id, devices.registration_id"
  const m = /constraint failed: (.+)$/.exec(message);
  if (!m?.[1]) return undefined;
  const cols = m[1].split(',').map((s) => s.trim());
  const table = cols[0]?.split('.')[0];
  const names = cols.map((c) => c.slice(c.indexOf('.') + 1));
  if (primaryKey) return `${table}_pkey`;
  for (const [name, key] of Object.entries(UNIQUE_KEYS)) {
    if (key.table === table && key.columns.length === names.length && key.columns.every((c, i) => c === names[i])) return name;
  }
  return m[1];
}

export function classifySqliteError(err: unknown): ErrorClass {
  const code = errorCode(err);
  if (code === 'SQLITE_CONSTRAINT_UNIQUE' || code === 'SQLITE_CONSTRAINT_PRIMARYKEY') {
    const constraint = sqliteConstraintName(errorMessage(err), code === 'SQLITE_CONSTRAINT_PRIMARYKEY');
    return constraint === undefined ? { kind: 'conflict' } : { kind: 'conflict', constraint };
  }
  if (code && UNAVAILABLE_PREFIXES.some((p) => code.startsWith(p))) return { kind: 'unavailable' };
  // better-sqlite3 after close(), or an unopenable path.
  if (err instanceof TypeError && /database connection is not open|Cannot open database/i.test(err.message)) {
    return { kind: 'unavailable' };
  }
  return undefined;
}

export const sqliteCapabilities: DialectCapabilities = {
  name: 'sqlite',
  keyTextType: 'text',
  seqType: 'integer',
  auditSerialisation: 'write-lock',
  statementErrorAbortsTransaction: false,
  groupCommit: true,
  classifyError: classifySqliteError,
};

export interface SqliteOptions {
  /** File path, or ':memory:'. */
  path: string;
  /** busy_timeout in ms: how long a writer waits for another process's write lock. Default 5000. */
  busyTimeoutMs?: number;
  /**
   * Who checkpoints the WAL: 'background' (default for files) a thread of this process; 'elsewhere'
   * another process does (cluster workers: the primary's thread); 'inline' SQLite itself, inside the
   * COMMIT that crosses 1,000 pages (short-lived tools). The first two keep an automatic checkpoint
   * at 20,000 pages as a backstop.
   */
  checkpoints?: CheckpointMode;
  onCheckpointError?: (message: string) => void;
}

export type CheckpointMode = 'background' | 'elsewhere' | 'inline';

const busyTimeoutOf = (opts: SqliteOptions): number => Math.max(0, Math.floor(opts.busyTimeoutMs ?? 5000));

function openSqliteDatabase(opts: SqliteOptions): BetterSqlite3.Database {
  const memory = opts.path === ':memory:';
  if (!memory) mkdirSync(dirname(resolve(opts.path)), { recursive: true });
  const sqlite = new BetterSqlite3(opts.path);
  // busy_timeout first, so switching to WAL waits for another process instead of failing.
  sqlite.pragma(`busy_timeout = ${busyTimeoutOf(opts)}`);
  if (!memory) sqlite.pragma('journal_mode = WAL');
  sqlite.pragma('synchronous = NORMAL');
  sqlite.pragma('foreign_keys = ON');
  // A fleet's indexes (registration IDs, serials, token hashes) are looked up at random: with the
  // default 2 MiB page cache every lookup past ~10,000 devices is a read syscall. Memory-map the file
  // and keep a 64 MiB cache so the hot indexes stay in memory.
  sqlite.pragma('cache_size = -65536');
  if (!memory) sqlite.pragma('mmap_size = 1073741824');
  sqlite.pragma('temp_store = MEMORY');
  if (!memory && (opts.checkpoints ?? 'background') !== 'inline') {
    // Checkpoints run on a thread of their own (sqlite-checkpointer.ts); this is only the backstop.
    sqlite.pragma('wal_autocheckpoint = 20000');
    // Once checkpointed, the WAL file is cut back to this size instead of keeping its peak.
    sqlite.pragma(`journal_size_limit = ${64 * 1024 * 1024}`);
  }
  // From here on nothing waits inside SQLite: the driver waits for locks on the event loop.
  sqlite.pragma('busy_timeout = 0');
  return sqlite;
}

/**
 * A Kysely instance over one better-sqlite3 connection. better-sqlite3 is synchronous; waits for
 * another process's lock happen between statements, on the event loop (ImmediateSqliteDriver).
 */
export function createSqliteKysely(opts: SqliteOptions): OpenedDialect {
  const guard = new StoreGuard(sqliteCapabilities);
  let sqlite: BetterSqlite3.Database;
  try {
    sqlite = openSqliteDatabase(opts);
  } catch (err) {
    const mapped = guard.mapError(err);
    if (mapped instanceof FleetpassError) throw mapped;
    throw new FleetpassError('STORE_UNAVAILABLE', `cannot open SQLite database ${opts.path}: ${errorMessage(err)}`, { cause: err });
  }
  const checkpointer = opts.path !== ':memory:' && (opts.checkpoints ?? 'background') === 'background' ? startCheckpointer({ path: opts.path, ...(opts.onCheckpointError ? { onError: opts.onCheckpointError } : {}) }) : undefined;
  const db = new Kysely<Database>({ dialect: guard.wrapDialect(new FleetpassSqliteDialect(withStatementCache(sqlite, checkpointer), sqlite, busyTimeoutOf(opts))) });
  return { db, guard, capabilities: sqliteCapabilities };
}

/**
 * Kysely prepares every query anew; on the provisioning path the same dozen statements run for every
 * device, and preparing them cost more than running them. Statements are reused by SQL text (queries
 * are parameterised, so the set is small; bounded anyway). Safe because the driver runs one
 * statement at a time on this connection and never keeps an iterator open across calls.
 */
function withStatementCache(sqlite: BetterSqlite3.Database, checkpointer: Checkpointer | undefined): { close(): Promise<void>; prepare(sql: string): BetterSqlite3.Statement } {
  const cache = new Map<string, BetterSqlite3.Statement>();
  const MAX = 500;
  return {
    // Kysely's destroy() waits for this: the checkpoint thread's last checkpoint and close (which
    // removes the WAL) are done when the store says it is closed.
    async close() {
      sqlite.close();
      await checkpointer?.stop();
    },
    prepare(sql: string) {
      let stmt = cache.get(sql);
      if (!stmt) {
        stmt = sqlite.prepare(sql);
        if (cache.size >= MAX) cache.delete(cache.keys().next().value as string);
        cache.set(sql, stmt);
      }
      return stmt;
    },
  };
}
