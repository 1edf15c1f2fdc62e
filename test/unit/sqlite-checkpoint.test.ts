/**
 * WAL checkpoints on a background thread: committed pages reach the database file without any
 * request's COMMIT doing the copy (the serving connection's automatic checkpoint is only a backstop
 * at 20,000 pages, far above what these tests write).
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { openStore, startWalCheckpointer } from '../../src/storage/index.js';

const dir = mkdtempSync(join(tmpdir(), 'fp-ckpt-'));
after(() => rmSync(dir, { recursive: true, force: true }));

/** ~2 MiB of committed rows, 1 KiB each, one transaction per row as the pipeline writes them. */
async function fill(store: Awaited<ReturnType<typeof openStore>>): Promise<void> {
  const value = 'x'.repeat(1024);
  for (let i = 0; i < 2000; i++) await store.setSetting(`ckpt.test.${i}`, value);
}

async function waitFor(cond: () => boolean, ms: number): Promise<boolean> {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    if (cond()) return true;
    await new Promise((r) => setTimeout(r, 50));
  }
  return cond();
}

const size = (f: string): number => statSync(f).size;

describe('SQLite WAL checkpoints', () => {
  it('a store with background checkpoints moves committed pages into the database file', async () => {
    const file = join(dir, 'bg.db');
    const store = await openStore({ url: `sqlite:${file}` });
    try {
      const before = size(file);
      await fill(store);
      assert.ok(await waitFor(() => size(file) > before + 1_500_000, 5000), `database file stayed at ${size(file)} bytes`);
    } finally {
      await store.close();
    }
  });

  it('without it the pages stay in the WAL; the shared checkpointer (cluster primary) moves them', async () => {
    const file = join(dir, 'shared.db');
    const store = await openStore({ url: `sqlite:${file}`, sqliteCheckpoints: 'elsewhere' });
    try {
      const before = size(file);
      await fill(store);
      await new Promise((r) => setTimeout(r, 600));
      assert.ok(size(file) < before + 500_000, `database file grew to ${size(file)} bytes with no checkpointer`);
      assert.ok(size(`${file}-wal`) > 1_500_000);
      const checkpointer = startWalCheckpointer(`sqlite:${file}`);
      assert.ok(checkpointer);
      try {
        assert.ok(await waitFor(() => size(file) > before + 1_500_000, 5000), `database file stayed at ${size(file)} bytes`);
      } finally {
        await checkpointer.stop();
      }
    } finally {
      await store.close();
    }
  });

  it('PostgreSQL and in-memory databases have no checkpointer', () => {
    assert.equal(startWalCheckpointer('postgres://127.0.0.1/x'), undefined);
    assert.equal(startWalCheckpointer('sqlite::memory:'), undefined);
  });
});
