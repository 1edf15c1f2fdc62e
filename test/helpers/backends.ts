/**
 * The storage backends every contract suite runs on: SQLite (a fresh file in a temp dir) and PostgreSQL
 * (a fresh database per open(), dropped on cleanup). PostgreSQL comes from FLEETPASS_TEST_PG_URL or
 * postgres://postgres@127.0.0.1:5432/postgres. When it is unreachable the postgres suites are skipped —
 * unless CI or FLEETPASS_REQUIRE_PG is set, in which case they fail loudly.
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import type { Store } from '../../src/registry/store.js';
import { openStore, redactStoreUrl } from '../../src/storage/index.js';

export const PG_TEST_URL = process.env.FLEETPASS_TEST_PG_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
export const PG_REQUIRED = Boolean(process.env.CI || process.env.FLEETPASS_REQUIRE_PG);

export interface OpenedBackend {
  store: Store;
  url: string;
  cleanup(): Promise<void>;
}

export interface Backend {
  name: 'sqlite' | 'postgres';
  open(): Promise<OpenedBackend>;
}

async function withAdminClient<T>(fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: PG_TEST_URL, connectionTimeoutMillis: 3000 });
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end();
  }
}

/** undefined when PostgreSQL answers, else the reason to skip (or fail). */
async function probePostgres(): Promise<string | undefined> {
  try {
    await withAdminClient((c) => c.query('select 1'));
    return undefined;
  } catch (err) {
    const detail = err instanceof Error && err.message ? ` (${err.message})` : '';
    return `PostgreSQL not reachable at ${redactStoreUrl(PG_TEST_URL)}${detail}`;
  }
}

/** Probed once per test process, at import, so suites can be declared skipped synchronously. */
export const postgresUnavailable: string | undefined = await probePostgres();

const sqliteBackend: Backend = {
  name: 'sqlite',
  async open() {
    const dir = await mkdtemp(join(tmpdir(), 'fleetpass-store-'));
    const url = `sqlite:${join(dir, 'fleetpass.db')}`;
    const store = await openStore({ url });
    return {
      store,
      url,
      async cleanup() {
        await store.close();
        await rm(dir, { recursive: true, force: true });
      },
    };
  },
};

const postgresBackend: Backend = {
  name: 'postgres',
  async open() {
    const database = `fleetpass_test_${process.pid}_${randomBytes(4).toString('hex')}`;
    await withAdminClient((c) => c.query(`create database "${database}"`));
    const u = new URL(PG_TEST_URL);
    u.pathname = `/${database}`;
    const url = u.toString();
    let store: Store;
    try {
      store = await openStore({ url });
    } catch (err) {
      await withAdminClient((c) => c.query(`drop database if exists "${database}" with (force)`));
      throw err;
    }
    return {
      store,
      url,
      async cleanup() {
        await store.close();
        await withAdminClient((c) => c.query(`drop database if exists "${database}" with (force)`));
      },
    };
  },
};

export const backends: Backend[] = [sqliteBackend, postgresBackend];

export interface BackendContext {
  store: Store;
  url: string;
  backend: Backend['name'];
}

/**
 * Declares `title [<backend>]` once per backend: the store is opened before the suite's tests and
 * cleaned up after them. `fn` receives a getter (the store exists only once `before` has run).
 */
export function describeEachBackend(title: string, fn: (ctx: () => BackendContext) => void): void {
  for (const backend of backends) {
    const name = `${title} [${backend.name}]`;
    const unavailable = backend.name === 'postgres' ? postgresUnavailable : undefined;
    if (unavailable !== undefined && PG_REQUIRED) {
      describe(name, () => {
        it('PostgreSQL is reachable (required because CI or FLEETPASS_REQUIRE_PG is set)', () => {
          throw new Error(unavailable);
        });
      });
      continue;
    }
    if (unavailable !== undefined) {
      describe(name, { skip: unavailable }, () => undefined);
      continue;
    }
    describe(name, () => {
      let opened: OpenedBackend | undefined;
      before(async () => {
        opened = await backend.open();
      });
      after(async () => {
        await opened?.cleanup();
      });
      fn(() => {
        if (!opened) throw new Error(`${backend.name} backend is not open (did its before() hook fail?)`);
        return { store: opened.store, url: opened.url, backend: backend.name };
      });
    });
  }
}
