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
}

const { path, intervalMs } = workerData as Input;
const db = new BetterSqlite3(path);
db.pragma('busy_timeout = 1000');
const checkpoint = db.prepare('pragma wal_checkpoint(PASSIVE)');

function tick(): void {
  try {
    // PASSIVE: never waits for readers or the writer; a busy checkpoint lock (another process's
    // checkpointer) is simply the next tick's turn.
    checkpoint.get();
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
