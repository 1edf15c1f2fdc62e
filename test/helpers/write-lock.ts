import type { Repos, Store } from '../../src/registry/store.js';

/** A transaction that has run `write` and now waits for release(): on SQLite it holds the write lock. */
export async function holdWriteLock(store: Store, write: (tx: Repos) => Promise<unknown>): Promise<{ release: () => void; first: Promise<void> }> {
  let release: () => void = () => undefined;
  const held = new Promise<void>((r) => (release = r));
  let entered: () => void = () => undefined;
  const inside = new Promise<void>((r) => (entered = r));
  const first = store.transaction(async (tx) => {
    await write(tx);
    entered();
    await held;
  });
  await inside;
  return { release, first };
}
