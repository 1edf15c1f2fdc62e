import { createHash } from 'node:crypto';
import pg from 'pg';
import { preparedSqlTexts } from '../prepared.js';
import { Kysely, PostgresDialect, sql } from 'kysely';
import type { Database } from '../schema.js';
import type { DialectCapabilities, ErrorClass } from './capabilities.js';
import { errorCode, errorMessage } from './capabilities.js';
import { StoreGuard } from './guard.js';
import type { OpenedDialect } from './guard.js';

const INT8_OID = 20;

/** SQLSTATEs (or classes, ending in '*') that mean "the database cannot serve us right now; retry later". */
const UNAVAILABLE_SQLSTATES = [
  '08*', // connection exception
  '28*', // invalid authorization
  '3D000', // database does not exist
  '53*', // insufficient resources (too many connections, disk full, out of memory)
  '57P01', '57P02', '57P03', // admin/crash shutdown, cannot connect now
  '40001', '40P01', // serialization failure, deadlock detected: transient, retry
  '55P03', // lock not available
];

const UNAVAILABLE_ERRNOS = new Set([
  'ECONNREFUSED', 'ECONNRESET', 'ENOTFOUND', 'EAI_AGAIN', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'EPIPE',
]);

const UNAVAILABLE_MESSAGES =
  /Connection terminated|timeout exceeded when trying to connect|connection error and is not queryable|Cannot use a pool after calling end|Connection ended unexpectedly/i;

function isUnavailable(err: unknown): boolean {
  const code = errorCode(err);
  if (code !== undefined) {
    if (UNAVAILABLE_ERRNOS.has(code)) return true;
    if (UNAVAILABLE_SQLSTATES.some((s) => (s.endsWith('*') ? code.startsWith(s.slice(0, -1)) && code.length === 5 : code === s))) return true;
  }
  if (err instanceof AggregateError && err.errors.some(isUnavailable)) return true;
  return UNAVAILABLE_MESSAGES.test(errorMessage(err));
}

export function classifyPostgresError(err: unknown): ErrorClass {
  if (errorCode(err) === '23505') {
    const constraint = (err as { constraint?: unknown }).constraint;
    return typeof constraint === 'string' ? { kind: 'conflict', constraint } : { kind: 'conflict' };
  }
  return isUnavailable(err) ? { kind: 'unavailable' } : undefined;
}

export const postgresCapabilities: DialectCapabilities = {
  name: 'postgres',
  // Ids and ISO timestamps must compare bytewise whatever the database's default collation is.
  keyTextType: sql`text collate "C"`,
  seqType: 'bigint',
  auditSerialisation: 'advisory-lock',
  statementErrorAbortsTransaction: true,
  groupCommit: false,
  classifyError: classifyPostgresError,
};

export interface PostgresOptions {
  /** postgres://user:pass@host:port/db?… (anything pg's connectionString accepts). */
  url: string;
  /** Pool size; default 10. */
  poolSize?: number;
  /** How long to wait for a connection (new or from the pool) before failing with STORE_UNAVAILABLE; default 10 s. */
  connectTimeoutMs?: number;
  /** Named (server-side prepared) statements for the registration path; default true (see namingPrepared). */
  preparedStatements?: boolean;
}

const named = new WeakSet<pg.PoolClient>();

/**
 * Makes the client run the statements of prepared.ts as named statements: PostgreSQL parses and plans
 * each once per connection instead of on every run (Kysely sends every query unnamed); +13 % token
 * registrations per second here. Not `select *`: a prepared plan's result columns are fixed, so a
 * column added by a newer version's migration would fail them ("cached plan must not change result
 * type") in the servers still running during a rolling upgrade.
 */
function namingPrepared(client: pg.PoolClient): pg.PoolClient {
  if (named.has(client)) return client;
  named.add(client);
  const query = client.query.bind(client) as (config: unknown, values?: unknown) => Promise<unknown>;
  (client as { query: unknown }).query = (text: unknown, values?: unknown[]) =>
    typeof text === 'string' && preparedSqlTexts.has(text) && !text.startsWith('select *') ? query({ name: statementName(text), text, values }) : query(text, values);
  return client;
}

const names = new Map<string, string>();
function statementName(text: string): string {
  let name = names.get(text);
  if (!name) {
    name = `fp_${createHash('sha256').update(text).digest('hex').slice(0, 24)}`;
    names.set(text, name);
  }
  return name;
}

export function createPostgresKysely(opts: PostgresOptions): OpenedDialect {
  const guard = new StoreGuard(postgresCapabilities);
  const pool = new pg.Pool({
    connectionString: opts.url,
    max: opts.poolSize ?? 10,
    connectionTimeoutMillis: opts.connectTimeoutMs ?? 10_000,
    application_name: 'fleetpass',
    // BIGINT (audit seq, count(*)) as a JS number instead of a string; per pool, not process-global.
    types: {
      getTypeParser: ((oid: number, format?: 'text' | 'binary') =>
        oid === INT8_OID && format !== 'binary' ? (v: string) => Number(v) : pg.types.getTypeParser(oid, format)) as typeof pg.types.getTypeParser,
    },
  });
  // An idle client losing its server connection must not crash the process; the next query fails and is
  // reported as STORE_UNAVAILABLE through the guard.
  pool.on('error', () => undefined);
  const connections = opts.preparedStatements === false ? pool : ({ connect: async () => namingPrepared(await pool.connect()), end: () => pool.end() } as unknown as pg.Pool);
  const db = new Kysely<Database>({ dialect: guard.wrapDialect(new PostgresDialect({ pool: connections })) });
  return { db, guard, capabilities: postgresCapabilities };
}
