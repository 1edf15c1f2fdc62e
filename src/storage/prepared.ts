/**
 * Statements built once. Kysely builds, freezes and compiles a query's operation tree on every call;
 * on the provisioning path the same handful of statements run for every device, and building them
 * cost about as much as SQLite spent running them. A prepared statement is built with named slots
 * where its values go, compiled once per dialect, and run with the values put into the slots.
 */
import type { Compilable, Kysely, QueryResult } from 'kysely';
import type { Database } from './schema.js';

type Db = Kysely<Database>;

/** Where a value goes; resolved by name each time the statement runs. */
class Slot {
  constructor(readonly name: string) {}
}

interface Compiled {
  sql: string;
  query: ReturnType<Compilable['compile']>['query'];
  queryId: ReturnType<Compilable['compile']>['queryId'];
  /** Per parameter: a slot name to look up, or a constant the query was built with. */
  params: Array<{ slot: string } | { constant: unknown }>;
}

/**
 * The SQL text of every statement built here: the ones each registration runs. The PostgreSQL driver
 * runs these as named (server-side prepared) statements, parsed and planned once per connection.
 */
export const preparedSqlTexts = new Set<string>();

export class PreparedStatement<V extends Record<string, unknown>> {
  readonly #compiled = new Map<string, Compiled>();

  /**
   * `build` gets `slot(name)`, to use wherever a value of `V` goes (and nowhere else: the SQL must
   * not depend on the values). Constants written into the query stay as they are.
   */
  constructor(private readonly build: (db: Db, slot: (name: keyof V & string) => never) => Compilable) {}

  #compile(db: Db, dialect: string): Compiled {
    let c = this.#compiled.get(dialect);
    if (!c) {
      const q = this.build(db, ((name: string) => new Slot(name)) as (name: keyof V & string) => never).compile();
      c = {
        sql: q.sql,
        query: q.query,
        queryId: q.queryId,
        params: q.parameters.map((p) => (p instanceof Slot ? { slot: p.name } : { constant: p })),
      };
      this.#compiled.set(dialect, c);
      preparedSqlTexts.add(c.sql);
    }
    return c;
  }

  /** Runs on `db` (the store's Kysely or a transaction's); `dialect` names the SQL flavour it compiles to. */
  execute<R = unknown>(db: Db, dialect: string, values: V): Promise<QueryResult<R>> {
    const c = this.#compile(db, dialect);
    const parameters = c.params.map((p) => ('slot' in p ? (values[p.slot] ?? null) : p.constant));
    return db.executeQuery<R>({ sql: c.sql, query: c.query, queryId: c.queryId, parameters });
  }
}

/**
 * An INSERT of one row, every column the row mapper wrote (compiled once per set of columns, so a
 * column added to a mapper is never dropped here).
 */
export class PreparedInsert<T extends keyof Database & string> {
  readonly #byColumns = new Map<string, PreparedStatement<Record<string, unknown>>>();

  /** ifAbsent: ON CONFLICT DO NOTHING, so a conflict inserts no row (numAffectedRows 0) instead of failing. */
  constructor(
    private readonly table: T,
    private readonly opts: { ifAbsent?: boolean } = {},
  ) {}

  execute(db: Db, dialect: string, row: object): Promise<QueryResult<unknown>> {
    const columns = Object.keys(row);
    const key = columns.join(',');
    let stmt = this.#byColumns.get(key);
    if (!stmt) {
      stmt = new PreparedStatement((d, slot) => {
        const insert = d.insertInto(this.table).values(Object.fromEntries(columns.map((c) => [c, slot(c)])) as never);
        return this.opts.ifAbsent ? insert.onConflict((oc) => oc.doNothing()) : insert;
      });
      this.#byColumns.set(key, stmt);
    }
    return stmt.execute(db, dialect, row as Record<string, unknown>);
  }
}
