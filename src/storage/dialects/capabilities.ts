import type { ColumnDataType, Expression } from 'kysely';

/** How a dialect classifies a driver error for the store (everything else is rethrown as is). */
export type ErrorClass = { kind: 'conflict'; constraint?: string } | { kind: 'unavailable' } | undefined;

/**
 * What differs between the dialects, as data. Migrations and the store branch on these flags, never on
 * the dialect name, so a third dialect only has to describe itself.
 */
export interface DialectCapabilities {
  readonly name: 'sqlite' | 'postgres';
  /** Column type for text keys compared with `<`/`>` (ids, cursors, timestamps): must sort bytewise. */
  readonly keyTextType: ColumnDataType | Expression<unknown>;
  /** Column type for the audit `seq` primary key (SQLite: INTEGER = rowid alias; PostgreSQL: BIGINT). */
  readonly seqType: ColumnDataType | Expression<unknown>;
  /**
   * How appendAudit serialises the chain across processes:
   * - 'advisory-lock': take `pg_advisory_xact_lock(AUDIT_CHAIN_LOCK_ID)` inside the transaction;
   * - 'write-lock': every transaction already holds the database's single write lock (SQLite BEGIN IMMEDIATE).
   */
  readonly auditSerialisation: 'advisory-lock' | 'write-lock';
  /**
   * A failed statement poisons the enclosing transaction (PostgreSQL). When true, conflict-prone single
   * statements inside a caller's transaction run in a savepoint so a StoreConflictError is recoverable.
   */
  readonly statementErrorAbortsTransaction: boolean;
  /**
   * One writer at a time for the whole database (SQLite): store transactions that arrive together run
   * as one database transaction, each in a savepoint of its own (see KyselyStore.transaction).
   */
  readonly groupCommit: boolean;
  /** Maps a raw driver error to a conflict (unique violation), unavailability, or nothing. */
  classifyError(err: unknown): ErrorClass;
}

/** Arbitrary constant shared by every Fleetpass process: the key of the audit chain's advisory lock. */
export const AUDIT_CHAIN_LOCK_ID = 0x466c7074n; // 'Flpt'

/** Reads a string `code` property from an unknown error value. */
export function errorCode(err: unknown): string | undefined {
  if (typeof err === 'object' && err !== null && 'code' in err) {
    const code = (err as { code: unknown }).code;
    return typeof code === 'string' ? code : undefined;
  }
  return undefined;
}

export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
