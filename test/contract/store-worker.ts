/**
 * Worker-thread body for the multi-process contract test: its own store (own SQLite connection / own
 * PostgreSQL pool) on the same database, racing the other workers on the audit chain, an enrollment's
 * device count and a settings key.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { openStore } from '../../src/storage/index.js';

export interface WorkerInput {
  url: string;
  label: string;
  enrollmentId: string;
  appends: number;
  increments: number;
}

export interface WorkerOutput {
  wins?: number;
  settingWon?: boolean;
  error?: string;
}

const input = workerData as WorkerInput;

async function main(): Promise<WorkerOutput> {
  const store = await openStore({ url: input.url, poolSize: 4 });
  try {
    let wins = 0;
    const jobs: Promise<unknown>[] = [];
    for (let i = 0; i < Math.max(input.appends, input.increments); i++) {
      if (i < input.appends) {
        jobs.push(
          store.appendAudit({
            id: `${input.label}-${i}`,
            createdAt: new Date().toISOString(),
            tenantId: null,
            actor: 'system',
            action: 'test.worker',
            resourceType: 'worker',
            resourceId: input.label,
            details: { i },
          }),
        );
      }
      if (i < input.increments) {
        jobs.push(store.incrementDeviceCount(input.enrollmentId).then((ok) => (ok ? wins++ : undefined)));
      }
    }
    const settingWon = store.putSettingIfAbsent('worker-race', input.label);
    await Promise.all(jobs);
    return { wins, settingWon: await settingWon };
  } finally {
    await store.close();
  }
}

main().then(
  (out) => parentPort?.postMessage(out),
  (err: unknown) => parentPort?.postMessage({ error: err instanceof Error ? `${err.name}: ${err.message}` : String(err) }),
);
