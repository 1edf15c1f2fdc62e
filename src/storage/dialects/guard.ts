import { AsyncLocalStorage } from 'node:async_hooks';
import type {
  CompiledQuery, DatabaseConnection, Dialect, Driver, QueryCompiler, QueryResult, TransactionSettings,
} from 'kysely';
import { FleetpassError } from '../../core/errors.js';
import { StoreConflictError } from '../../registry/store.js';
import type { Kysely } from 'kysely';
import type { Database } from '../schema.js';
import type { DialectCapabilities } from './capabilities.js';
import { errorMessage } from './capabilities.js';

/** What a dialect factory hands to the store. */
export interface OpenedDialect {
  db: Kysely<Database>;
  guard: StoreGuard;
  capabilities: DialectCapabilities;
}

interface TxMarker {
  active: boolean;
}

/**
 * Maps driver errors in one place (unique violations → StoreConflictError, connection failures →
 * FleetpassError('STORE_UNAVAILABLE')) by wrapping the dialect's driver, and catches a classic
 * deadlock: using the store itself (instead of the `tx` argument) inside `store.transaction(fn)`. On
 * SQLite there is one connection, held by the transaction, so that call would wait forever; on
 * PostgreSQL it would silently run outside the transaction. Both now fail fast with a clear error.
 */
export class StoreGuard {
  /**
   * The misuse check is a development check (FLEETPASS_DEV_CHECKS=1; the test runner sets it): in
   * Node 20 the first AsyncLocalStorage.run() turns on promise hooks for the whole process, which cost
   * ~3% of the server's CPU per onboarding, every request, for a mistake only new code can make.
   */
  readonly #scope: AsyncLocalStorage<TxMarker> | undefined;
  /** Sees every statement before it runs (KyselyStore.observeQueries). */
  queryTap: ((query: CompiledQuery) => void) | undefined;

  constructor(readonly capabilities: DialectCapabilities, checkTransactionScope = process.env.FLEETPASS_DEV_CHECKS === '1') {
    this.#scope = checkTransactionScope ? new AsyncLocalStorage<TxMarker>() : undefined;
  }

  mapError(err: unknown): unknown {
    if (err instanceof FleetpassError || err instanceof StoreConflictError) return err;
    const cls = this.capabilities.classifyError(err);
    if (cls?.kind === 'conflict') return new StoreConflictError(errorMessage(err), cls.constraint);
    if (cls?.kind === 'unavailable') {
      return new FleetpassError('STORE_UNAVAILABLE', `${this.capabilities.name} store unavailable: ${errorMessage(err)}`, {
        retryAfterSeconds: 1,
        cause: err,
      });
    }
    return err;
  }

  wrapDialect(inner: Dialect): Dialect {
    const dialect: Dialect = {
      createDriver: () => new GuardedDriver(inner.createDriver(), this),
      createQueryCompiler: () => inner.createQueryCompiler(),
      createAdapter: () => inner.createAdapter(),
      createIntrospector: (db) => inner.createIntrospector(db),
    };
    return dialect;
  }

  /** Runs fn marked as the body of a store transaction (see the class comment). */
  async inTransactionScope<T>(fn: () => Promise<T>): Promise<T> {
    if (!this.#scope) return fn();
    const marker: TxMarker = { active: true };
    try {
      return await this.#scope.run(marker, fn);
    } finally {
      marker.active = false;
    }
  }

  assertNotInTransactionScope(): void {
    if (this.#scope?.getStore()?.active) {
      throw new Error(
        'Store used directly inside store.transaction(fn): use the `tx` argument instead ' +
          '(the transaction holds the connection; on SQLite this call would wait forever).',
      );
    }
  }
}

class GuardedConnection implements DatabaseConnection {
  constructor(readonly inner: DatabaseConnection, private readonly guard: StoreGuard) {}

  async executeQuery<R>(compiledQuery: CompiledQuery): Promise<QueryResult<R>> {
    this.guard.queryTap?.(compiledQuery);
    try {
      return await this.inner.executeQuery<R>(compiledQuery);
    } catch (err) {
      throw this.guard.mapError(err);
    }
  }

  async *streamQuery<R>(compiledQuery: CompiledQuery, chunkSize?: number): AsyncIterableIterator<QueryResult<R>> {
    try {
      yield* this.inner.streamQuery<R>(compiledQuery, chunkSize);
    } catch (err) {
      throw this.guard.mapError(err);
    }
  }
}

function unwrap(connection: DatabaseConnection): DatabaseConnection {
  return connection instanceof GuardedConnection ? connection.inner : connection;
}

class GuardedDriver implements Driver {
  constructor(private readonly inner: Driver, private readonly guard: StoreGuard) {}

  private async call<T>(fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      throw this.guard.mapError(err);
    }
  }

  init(): Promise<void> {
    return this.call(() => this.inner.init());
  }

  async acquireConnection(): Promise<DatabaseConnection> {
    this.guard.assertNotInTransactionScope();
    const connection = await this.call(() => this.inner.acquireConnection());
    return new GuardedConnection(connection, this.guard);
  }

  beginTransaction(connection: DatabaseConnection, settings: TransactionSettings): Promise<void> {
    return this.call(() => this.inner.beginTransaction(unwrap(connection), settings));
  }

  commitTransaction(connection: DatabaseConnection): Promise<void> {
    return this.call(() => this.inner.commitTransaction(unwrap(connection)));
  }

  rollbackTransaction(connection: DatabaseConnection): Promise<void> {
    return this.call(() => this.inner.rollbackTransaction(unwrap(connection)));
  }

  async savepoint(connection: DatabaseConnection, name: string, compileQuery: QueryCompiler['compileQuery']): Promise<void> {
    const fn = this.inner.savepoint?.bind(this.inner);
    if (!fn) throw new Error('savepoints are not supported by this driver');
    return this.call(() => fn(unwrap(connection), name, compileQuery));
  }

  async rollbackToSavepoint(connection: DatabaseConnection, name: string, compileQuery: QueryCompiler['compileQuery']): Promise<void> {
    const fn = this.inner.rollbackToSavepoint?.bind(this.inner);
    if (!fn) throw new Error('savepoints are not supported by this driver');
    return this.call(() => fn(unwrap(connection), name, compileQuery));
  }

  async releaseSavepoint(connection: DatabaseConnection, name: string, compileQuery: QueryCompiler['compileQuery']): Promise<void> {
    const fn = this.inner.releaseSavepoint?.bind(this.inner);
    if (!fn) throw new Error('savepoints are not supported by this driver');
    return this.call(() => fn(unwrap(connection), name, compileQuery));
  }

  releaseConnection(connection: DatabaseConnection): Promise<void> {
    return this.inner.releaseConnection(unwrap(connection));
  }

  destroy(): Promise<void> {
    return this.inner.destroy();
  }
}
