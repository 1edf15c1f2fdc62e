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
// No busy handler: SQLite's sleeps (1, 2, 5, 10 ms…) would almost never find the write lock free
// between the commits of busy workers, which retry far more often (dialects/sqlite.ts). This thread
// polls as often as they do instead, and gives up until the next tick after RESTART_PATIENCE_MS.
db.pragma('busy_timeout = 0');
const passive = db.prepare('pragma wal_checkpoint(PASSIVE)');
const restart = db.prepare('pragma wal_checkpoint(RESTART)');
const RESTART_PATIENCE_MS = 50;
const pause = new Int32Array(new SharedArrayBuffer(4));

interface CheckpointResult {
  busy: number;
  log: number;
  checkpointed: number;
}

/**
 * RESTART: copies what PASSIVE has not yet (little, just after it), waits for readers to leave the
 * WAL and holds off writers meanwhile (they retry without blocking), so that the next commit writes
 * the WAL from its start. An attempt that finds the write lock taken checkpoints what it can, as
 * PASSIVE does, and answers busy.
 */
function restartWal(): void {
  const until = performance.now() + RESTART_PATIENCE_MS;
  while ((restart.get() as CheckpointResult).busy === 1 && performance.now() < until) {
    Atomics.wait(pause, 0, 0, 0.1); // 100 µs: this thread has nothing else to do
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
    db.close();
    parentPort?.close();
  }
});
