/**
 * The device path reaches every table that grows with the fleet through an index. A missing index
 * does not show with the 100 devices of a test, only with 100,000, as each onboarding reading the
 * whole table: so this test records the statements of real onboardings and asks each database for
 * its plan. SQLite: EXPLAIN QUERY PLAN must not say "SCAN <table>" (with or without an index: that
 * reads all of it). PostgreSQL, whose planner scans small tables even where an index would serve:
 * with sequential scans priced out (enable_seqscan off), the plan must hold no "Seq Scan" of a
 * fleet-sized table, which it still chooses when no index fits, and no index scan without an index
 * condition (the whole index, walked for its order).
 */
import { it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import Database from 'better-sqlite3';
import pg from 'pg';
import { describeEachBackend } from '../helpers/backends.js';
import { makeCa, makeCsr, makeLeaf, tempDir } from '../helpers/openssl.js';
import { startTestServer, type TestServer } from '../helpers/server.js';
import type { KyselyStore } from '../../src/storage/index.js';

/** Tables whose rows grow with devices, onboardings or time. The others hold configuration. */
const FLEET_TABLES = ['devices', 'certificates', 'enrollments', 'attempts', 'audit_events'];

interface PgPlanNode {
  'Node Type': string;
  'Relation Name'?: string;
  'Index Cond'?: string;
  Plans?: PgPlanNode[];
}

interface Statement {
  sql: string;
  parameters: readonly unknown[];
}

/** Full scans of fleet-sized tables in the plan of each statement, as "table: SQL". */
async function fullScans(url: string, statements: Statement[]): Promise<string[]> {
  const found: string[] = [];
  const report = (table: string, sql: string) => {
    if (FLEET_TABLES.includes(table)) found.push(`${table}: ${sql}`);
  };
  if (url.startsWith('sqlite:')) {
    const db = new Database(url.slice('sqlite:'.length), { readonly: true });
    try {
      for (const s of statements) {
        const plan = db.prepare(`EXPLAIN QUERY PLAN ${s.sql}`).all(...(s.parameters as unknown[])) as Array<{ detail: string }>;
        for (const { detail } of plan) {
          // "SCAN t" reads every row; so does "SCAN t USING [COVERING] INDEX i" (the whole index). "SEARCH" is a lookup.
          const m = /^SCAN (\w+)/.exec(detail);
          if (m) report(m[1]!, s.sql);
        }
      }
    } finally {
      db.close();
    }
    return found;
  }
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    await client.query('SET enable_seqscan = off');
    for (const s of statements) {
      const plan = await client.query<{ 'QUERY PLAN': Array<{ Plan: PgPlanNode }> }>(`EXPLAIN (FORMAT JSON) ${s.sql}`, s.parameters as unknown[]);
      const visit = (node: PgPlanNode) => {
        // A sequential scan, or an index scan with no condition on the index (the whole index, in its order).
        const whole = node['Node Type'] === 'Seq Scan' || (/^Index (Only )?Scan$/.test(node['Node Type']) && node['Index Cond'] === undefined);
        if (whole && node['Relation Name']) report(node['Relation Name'], s.sql);
        for (const child of node.Plans ?? []) visit(child);
      };
      for (const row of plan.rows) for (const p of row['QUERY PLAN']) visit(p.Plan);
    }
  } finally {
    await client.end();
  }
  return found;
}

describeEachBackend('query plans of the device path', (ctx) => {
  let srv: TestServer;
  let dir: string;
  before(async () => {
    srv = await startTestServer(ctx().url);
    dir = tempDir();
  });
  after(async () => {
    await srv?.close();
  });

  it('finds the rows of every fleet-sized table through an index, for x509 and token onboardings and their retries', async () => {
    const ca = makeCa(dir, 'mfg');
    const g = await srv.admin('POST', '/enrollment-groups', { name: 'factory', attestation: { type: 'x509-ca', caCertificatePem: ca } });
    assert.equal(g.status, 201, g.text);
    const tokens: string[] = [];
    for (let i = 0; i < 2; i++) {
      const e = await srv.admin('POST', '/enrollments', { registrationId: `TOK-${i}`, attestation: { type: 'token' } });
      assert.equal(e.status, 201, e.text);
      tokens.push(e.json.token as string);
    }
    const factory = [makeLeaf(dir, 'mfg', 'f0', 'SN-0'), makeLeaf(dir, 'mfg', 'f1', 'SN-1')];
    const csrs = [0, 1, 2, 3].map((i) => makeCsr(dir, `k${i}`).csrPem);

    const statements = new Map<string, Statement>();
    const store = srv.fp.store as KyselyStore;
    store.observeQueries((sql, parameters) => {
      if (!/^\s*(insert|begin|commit|rollback|savepoint|release|pragma|set)\b/i.test(sql)) statements.set(sql, { sql, parameters });
    });
    try {
      for (let round = 0; round < 2; round++) {
        // The second round repeats each request: a retry whose answer was lost finds the device and its certificate.
        for (let i = 0; i < 2; i++) {
          const x = await srv.request('POST', '/v1/provision', { body: { registrationId: `SN-${i}`, csr: csrs[i] }, cert: factory[i]!.certPem, key: factory[i]!.keyPem });
          assert.equal(x.status, 200, x.text);
          const t = await srv.request('POST', '/v1/provision', { body: { registrationId: `TOK-${i}`, csr: csrs[2 + i] }, token: tokens[i]! });
          assert.equal(t.status, 200, t.text);
        }
      }
    } finally {
      store.observeQueries(undefined);
    }
    assert.ok([...statements.keys()].some((sql) => /\bdevices\b/.test(sql)), `the device path read the devices table:\n${[...statements.keys()].join('\n')}`);
    assert.deepEqual(await fullScans(ctx().url, [...statements.values()]), []);
  });

  it('would see a full scan: a lookup by a column without an index is reported', async () => {
    // Guards the check above against passing because it cannot see a scan on this backend.
    const sql = `select id from devices where name = ${ctx().url.startsWith('sqlite:') ? '?' : '$1'}`;
    assert.deepEqual(await fullScans(ctx().url, [{ sql, parameters: ['x'] }]), [`devices: ${sql}`]);
  });
});
