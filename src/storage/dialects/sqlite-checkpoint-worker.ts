/**
 * The WAL checkpointer's thread (see sqlite-checkpointer.ts): its own connection to the database
 * file, copying committed WAL frames into the database and syncing it, away from the event loop
 * that serves devices.
 */
import { parentPort, workerData } from 'node:worker_threads';
import BetterSqlite3 from 'better-sqlite3';

interface Input {
  path: string;
  intervalMs: number;
  restartAtFrames: number;
}

const { path, intervalMs, restartAtFrames } = workerData as Input;
const db = new BetterSqlite3(path);
// No busy handlers: SQLite's sleeps (1, 2, 5, 10 ms…) would almost never find the write lock free
// between the commits of busy workers, which retry far more often (dialects/sqlite.ts). This thread
// polls as often as they do instead, and gives up until the next tick after RESTART_PATIENCE_MS.
db.pragma('busy_timeout = 0');
const passive = db.prepare('pragma wal_checkpoint(PASSIVE)');
// A second connection only to hold the write lock while the last frames are copied (see restartWal).
const locker = new BetterSqlite3(path);
locker.pragma('busy_timeout = 0');
const lockWrites = locker.prepare('begin immediate');
const unlockWrites = locker.prepare('rollback');
const RESTART_PATIENCE_MS = 50;
const pause = new Int32Array(new SharedArrayBuffer(4));

interface CheckpointResult {
  busy: number;
  log: number;
  checkpointed: number;
}

/**
 * Makes the next write start the WAL from its beginning: SQLite does that by itself when a write
 * begins with every frame copied back, so this takes the write lock (BEGIN IMMEDIATE on the second
 * connection, retried without blocking as the workers retry theirs), copies the frames committed
 * since the last PASSIVE while no new ones can come, and lets go. Why not `wal_checkpoint(RESTART)`:
 * each of its tries copies frames before it finds the write lock taken, so it sampled the lock ~30×
 * less often than the workers retook it, and on a loaded machine with two workers committing without
 * pause it did not win once in seconds (the WAL reached 119 MB in CI). A cheap BEGIN competes with
 * the workers on equal terms. A reader still on an old snapshot leaves frames uncopied; the next tick
 * tries again.
 */
function restartWal(): void {
  const until = performance.now() + RESTART_PATIENCE_MS;
  while (!tryLockWrites()) {
    if (performance.now() >= until) return;
    Atomics.wait(pause, 0, 0, 0.1); // 100 µs: this thread has nothing else to do
  }
  try {
    passive.get();
  } finally {
    unlockWrites.run();
  }
}

function tryLockWrites(): boolean {
  try {
    lockWrites.run();
    return true;
  } catch (err) {
    if ((err as { code?: string }).code === 'SQLITE_BUSY') return false;
    throw err;
  }
}

function tick(): void {
  try {
    // PASSIVE: never waits for readers or the writer; a busy checkpoint lock (another process's
    // checkpointer) is simply the next tick's turn.
    const r = passive.get() as CheckpointResult | undefined;
    if (r && r.log >= restartAtFrames) restartWal();
  } catch (err) {
    parentPort?.postMessage({ error: err instanceof Error ? err.message : String(err) });
  }
}

const timer = setInterval(tick, intervalMs);
parentPort?.on('message', (m: unknown) => {
  if (m === 'stop') {
    clearInterval(timer);
    tick();
    locker.close();
    db.close();
    parentPort?.close();
  }
});
