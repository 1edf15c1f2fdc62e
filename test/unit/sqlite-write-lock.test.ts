/**
 * SQLite only: the database-wide write lock that PostgreSQL does not have. A transaction that cannot
 * get it within the busy timeout fails as STORE_UNAVAILABLE (the device is told to retry) and writes
 * nothing, and the store goes on working once the lock is free.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { FleetpassError } from '../../src/core/errors.js';
import { newId } from '../../src/core/ids.js';
import type { Tenant } from '../../src/registry/types.js';
import { openStore } from '../../src/storage/index.js';
import { holdWriteLock } from '../helpers/write-lock.js';

const dir = mkdtempSync(join(tmpdir(), 'fleetpass-write-lock-'));
after(() => rmSync(dir, { recursive: true, force: true }));

function tenant(): Tenant {
  const id = newId('ten');
  return { id, name: `tenant ${id}`, idScope: `0ne${id.slice(4, 14)}`, createdAt: new Date().toISOString() };
}

describe('SQLite write lock', () => {
  it('transactions that wait past the busy timeout fail as STORE_UNAVAILABLE and write nothing; later ones commit', async () => {
    const url = `sqlite:${join(dir, 'lock.db')}`;
    const holder = await openStore({ url });
    const waiter = await openStore({ url, sqliteBusyTimeoutMs: 100 });
    try {
      const { release, first: holding } = await holdWriteLock(holder, (tx) => tx.createTenant(tenant()));

      const [a, b] = [tenant(), tenant()];
      const started = performance.now();
      const first = waiter.transaction((tx) => tx.createTenant(a));
      await new Promise((r) => setTimeout(r, 20));
      // Asked for while the first waits: it waits a busy timeout of its own, not what is left of the first's.
      const second = waiter.transaction((tx) => tx.createTenant(b));
      const results = await Promise.allSettled([first.then(() => performance.now() - started), second.then(() => performance.now() - started)]);
      for (const r of results) {
        assert.equal(r.status, 'rejected');
        const err = (r as PromiseRejectedResult).reason as FleetpassError;
        assert.ok(err instanceof FleetpassError, String(err));
        assert.equal(err.code, 'STORE_UNAVAILABLE');
      }
      assert.ok(performance.now() - started >= 190, 'the second waited its own 100 ms after the first gave up');

      release();
      await holding;
      assert.equal(await holder.getTenant(a.id), undefined);
      assert.equal(await holder.getTenant(b.id), undefined);
      const c = tenant();
      await waiter.transaction((tx) => tx.createTenant(c));
      assert.deepEqual(await holder.getTenant(c.id), c);
    } finally {
      await waiter.close();
      await holder.close();
    }
  });
});
