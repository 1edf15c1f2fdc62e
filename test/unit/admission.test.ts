import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { FleetpassError } from '../../src/core/errors.js';
import { AdmissionControl } from '../../src/provisioning/admission.js';

function gate() {
  let open!: () => void;
  const p = new Promise<void>((r) => (open = r));
  return { p, open };
}

describe('admission control', () => {
  it('runs at most maxInFlight at once, queues up to maxQueue, and rejects the rest with Retry-After', async () => {
    const ac = new AdmissionControl({ maxInFlight: 2, maxQueue: 2, queueTimeoutMs: 5000, retryAfterSeconds: 3 });
    const g = gate();
    let running = 0;
    let peak = 0;
    const job = async () => {
      running++;
      peak = Math.max(peak, running);
      await g.p;
      running--;
      return 'done';
    };
    const results = Array.from({ length: 6 }, () => ac.run(job).then((v) => v, (e: unknown) => e));
    await sleep(10);
    assert.deepEqual(ac.stats(), { inFlight: 2, queued: 2, rejected: 2 });
    g.open();
    const settled = await Promise.all(results);
    assert.equal(settled.filter((r) => r === 'done').length, 4);
    const rejected = settled.filter((r): r is FleetpassError => r instanceof FleetpassError);
    assert.equal(rejected.length, 2);
    for (const r of rejected) {
      assert.equal(r.code, 'RATE_LIMITED');
      assert.ok(r.retryAfterSeconds! >= 3 && r.retryAfterSeconds! < 6, `jittered retry-after ${r.retryAfterSeconds}`);
    }
    assert.equal(peak, 2);
    assert.deepEqual(ac.stats(), { inFlight: 0, queued: 0, rejected: 2 });
  });

  it('answers OVERLOADED when a queued request waits too long, and frees its place', async () => {
    const ac = new AdmissionControl({ maxInFlight: 1, maxQueue: 5, queueTimeoutMs: 30, retryAfterSeconds: 1 });
    const g = gate();
    const first = ac.run(() => g.p);
    const waiting = ac.run(async () => 'never');
    await assert.rejects(waiting, (e: FleetpassError) => e.code === 'OVERLOADED' && e.retryAfterSeconds !== undefined);
    assert.equal(ac.stats().queued, 0);
    g.open();
    await first;
    assert.equal(await ac.run(async () => 'after'), 'after');
  });

  it('on close: in-flight work finishes, queued and new requests get OVERLOADED', async () => {
    const ac = new AdmissionControl({ maxInFlight: 1, maxQueue: 5, queueTimeoutMs: 5000, retryAfterSeconds: 1 });
    const g = gate();
    const inflight = ac.run(async () => {
      await g.p;
      return 'finished';
    });
    const queued = ac.run(async () => 'queued');
    ac.close();
    await assert.rejects(queued, (e: FleetpassError) => e.code === 'OVERLOADED');
    await assert.rejects(ac.run(async () => 'new'), (e: FleetpassError) => e.code === 'OVERLOADED');
    g.open();
    assert.equal(await inflight, 'finished');
  });

  it('releases the slot when the job throws', async () => {
    const ac = new AdmissionControl({ maxInFlight: 1, maxQueue: 0, queueTimeoutMs: 100, retryAfterSeconds: 1 });
    await assert.rejects(ac.run(async () => Promise.reject(new Error('boom'))), /boom/);
    assert.equal(await ac.run(async () => 'ok'), 'ok');
  });
});
