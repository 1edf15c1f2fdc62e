/**
 * Background WAL checkpoints for SQLite. SQLite's automatic checkpoint runs inside the COMMIT that
 * crosses the threshold: that request's event loop copies ~1,000 pages into the database file and
 * waits for two fsyncs (measured here: 12–26 ms stalls, ~0.3 ms per onboarding on average). A thread
 * with its own connection checkpoints instead, on a timer; the serving connection keeps a far higher
 * automatic threshold only as a backstop should the thread stop.
 */
import { Worker } from 'node:worker_threads';

export interface Checkpointer {
  stop(): Promise<void>;
}

export interface CheckpointerOptions {
  path: string;
  intervalMs?: number;
  /**
   * A WAL this long (frames; 8,192 of 4 KiB pages is 32 MiB) is made to start over (the thread
   * copies the last frames while holding the write lock). SQLite writes the WAL from its start again
   * only when a write transaction begins while every frame has been copied back; with several
   * processes committing without pause that moment never comes, and the WAL grew by ~90 MB a second
   * here (each commit appending to a longer file, and past the backstop of 20,000 frames each one
   * checkpointing in the request).
   */
  restartAtFrames?: number;
  onError?: (message: string) => void;
}

export function startCheckpointer(opts: CheckpointerOptions): Checkpointer {
  const worker = new Worker(new URL('./sqlite-checkpoint-worker.js', import.meta.url), {
    workerData: { path: opts.path, intervalMs: opts.intervalMs ?? 200, restartAtFrames: opts.restartAtFrames ?? 8192 },
    // A small thread: no JIT-heavy work runs here.
    resourceLimits: { maxOldGenerationSizeMb: 16, maxYoungGenerationSizeMb: 4 },
  });
  worker.unref();
  worker.on('message', (m: { error?: string }) => {
    if (m.error) opts.onError?.(m.error);
  });
  worker.on('error', (err) => opts.onError?.(err.message));
  let stopped: Promise<void> | undefined;
  return {
    stop() {
      stopped ??= new Promise<void>((resolve) => {
        const done = () => resolve();
        worker.once('exit', done);
        worker.ref(); // wait for its last checkpoint even when nothing else keeps the process up
        worker.postMessage('stop');
        // The thread closes its connection and exits; a stuck one is terminated.
        setTimeout(() => void worker.terminate().then(done, done), 2000).unref();
      });
      return stopped;
    },
  };
}
