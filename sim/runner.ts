/**
 * Boots the fleet: devices arrive on the chosen pattern, at most `concurrency` onboard at once, and
 * each retries transient failures with exponential backoff and full jitter, honouring Retry-After,
 * until it gets a final answer or runs out of attempts.
 */
import { FAULTS, type Expectation } from './faults.js';
import { seededRandom } from './plan.js';
import { sleep } from './pool.js';
import { INJECTED_RESET } from './protocols/transport.js';
import type { DeviceProtocol } from './protocols/types.js';
import { isRetryable, retryDelayMs, type RetryPolicy } from './schedule.js';
import type { ManufacturedDevice } from './setup.js';
import type { IssuedSignature, PinnedTrust } from './trust.js';

export const INJECTED_LOST_RESPONSE = 'INJECTED_LOST_RESPONSE';

export type FinalOutcome = 'onboarded' | 'rejected' | 'lost' | 'skipped';

export interface DeviceRecord {
  index: number;
  registrationId: string;
  scenario: string;
  fault: string | null;
  expect: Expectation;
  outcome: FinalOutcome;
  /** Reason code of the final rejection, or of the last failed attempt of a lost device. */
  code: string | null;
  status: number | null;
  attempts: number;
  /** ms from the run start: arrival, first attempt, final answer. */
  arrivedMs: number;
  startedMs: number;
  finishedMs: number;
  deviceId: string | null;
  serial: string | null;
  keyFingerprint: string;
  /** lost-response fault: serial of the answer the device "lost"; the retry must return the same one. */
  lostSerial: string | null;
  resetsInjected: number;
  /** Why the issued certificate is wrong (not for this key, not from the pinned CA), if it is. */
  certificateProblem: string | null;
  /** For skipped clones: why. */
  note: string | null;
}

export interface RunProgress {
  total: number;
  done: number;
  onboarded: number;
  rejected: number;
  lost: number;
  inFlight: number;
  attempts: number;
  retries: number;
  /** Answers that were not a certificate and not final (deferrals, resets, timeouts). */
  transientErrors: number;
  elapsedMs: number;
}

export interface RunResult {
  records: DeviceRecord[];
  /** Every answer of every attempt, by code ("OK" for a certificate). */
  answers: Record<string, number>;
  requestLatenciesMs: Float64Array;
  attempts: number;
  /** From the first arrival to the last final answer. */
  elapsedMs: number;
  /** Checking the signatures of the issued certificates, after elapsedMs. */
  certificateCheckMs: number;
}

export interface RunOptions {
  concurrency: number;
  arrivals: Float64Array;
  retry: RetryPolicy;
  timeoutMs: number;
  seed: number;
  /**
   * The pinned CA bundle: every issued certificate is checked against it and the device's key. The
   * signature checks (~0.1 ms of CPU each) wait until the last device has its answer: the simulator
   * shares the cores with the server it measures, and a real device checks on its own CPU.
   */
  trust: PinnedTrust;
  onProgress?: (p: RunProgress) => void;
  onCertificateCheck?: (done: number, total: number) => void;
  /** The last device has its final answer; called before the certificate check starts. */
  onRunEnd?: () => void;
  progressIntervalMs?: number;
}

export const normalizeSerial = (s: string): string => s.toLowerCase().replace(/^0+(?=.)/, '');

export async function runFleet(devices: ManufacturedDevice[], protocol: DeviceProtocol, opts: RunOptions): Promise<RunResult> {
  const n = devices.length;
  const rnd = seededRandom(opts.seed ^ 0x5eed);
  const records = new Array<DeviceRecord>(n);
  const answers: Record<string, number> = {};
  const latencies: number[] = [];
  const unverified: Array<[DeviceRecord, IssuedSignature]> = [];
  const count = (code: string) => {
    answers[code] = (answers[code] ?? 0) + 1;
  };
  const progress: RunProgress = { total: n, done: 0, onboarded: 0, rejected: 0, lost: 0, inFlight: 0, attempts: 0, retries: 0, transientErrors: 0, elapsedMs: 0 };
  const t0 = performance.now();
  const now = () => performance.now() - t0;

  const onboard = async (dev: ManufacturedDevice, arrivedMs: number): Promise<DeviceRecord> => {
    const p = dev.plan;
    const rec: DeviceRecord = {
      index: p.index,
      registrationId: p.registrationId,
      scenario: p.scenario,
      fault: p.fault,
      expect: p.fault ? FAULTS[p.fault].expect : { kind: 'onboard' },
      outcome: 'lost',
      code: null,
      status: null,
      attempts: 0,
      arrivedMs,
      startedMs: now(),
      finishedMs: 0,
      deviceId: null,
      serial: null,
      keyFingerprint: dev.keyFingerprint,
      lostSerial: null,
      resetsInjected: 0,
      certificateProblem: null,
      note: null,
    };
    let resetPending = p.fault === 'reset';
    let losePending = p.fault === 'lost-response';
    const request = { registrationId: p.registrationId, csrPem: dev.csrPem, parameters: p.parameters, credential: dev.credential };
    for (let failures = 0; rec.attempts < opts.retry.maxAttempts; ) {
      rec.attempts++;
      progress.attempts++;
      if (rec.attempts > 1) progress.retries++;
      const sent = performance.now();
      const r = await protocol.attempt(request, { resetBeforeSend: resetPending, timeoutMs: opts.timeoutMs });
      if (r.kind === 'network' && r.code === INJECTED_RESET) {
        resetPending = false; // (a connection that failed before its handshake keeps the reset for the next one)
        rec.resetsInjected++;
      } else if (r.kind !== 'network') {
        latencies.push(performance.now() - sent);
      }
      let retryAfter: number | null = null;
      if (r.kind === 'issued') {
        // Parsed and matched to the key now; the signature is checked once the clock has stopped.
        const check = opts.trust.inspectIssued(r.certificatePem, dev.spki);
        const serial = r.serial ? normalizeSerial(r.serial) : check.serial;
        if (losePending) {
          // The server committed and answered; the device never saw it (read, then forgotten).
          losePending = false;
          rec.lostSerial = serial;
          count(INJECTED_LOST_RESPONSE);
        } else {
          count('OK');
          rec.outcome = 'onboarded';
          rec.status = r.status;
          rec.code = null;
          rec.deviceId = r.deviceId;
          rec.serial = serial;
          rec.certificateProblem = check.problem;
          if (check.signed) unverified.push([rec, check.signed]);
          break;
        }
      } else if (r.kind === 'error') {
        count(r.code);
        rec.code = r.code;
        rec.status = r.status;
        if (!isRetryable(r.status, r.code)) {
          rec.outcome = 'rejected';
          break;
        }
        retryAfter = r.retryAfterMs;
      } else {
        count(r.code === INJECTED_RESET ? INJECTED_RESET : `NET_${r.code}`);
        rec.code = r.code === INJECTED_RESET ? INJECTED_RESET : `NET_${r.code}`;
        rec.status = null;
      }
      failures++;
      progress.transientErrors++;
      if (rec.attempts >= opts.retry.maxAttempts) break;
      await sleep(retryDelayMs(opts.retry, failures, retryAfter, rnd));
    }
    rec.finishedMs = now();
    return rec;
  };

  // --- scheduling: arrivals → ready queue → at most `concurrency` devices onboarding ------------
  const ready: Array<[number, number]> = []; // [device index, arrived ms]
  let readyHead = 0;
  let nextArrival = 0;
  const parked = new Map<number, Array<[number, number]>>(); // victim index → clones waiting for it
  let done = 0;
  let fatal: Error | undefined;
  let finishRun: () => void = () => undefined;
  const finished = new Promise<void>((resolve) => {
    finishRun = resolve;
  });

  const complete = (rec: DeviceRecord) => {
    records[rec.index] = rec;
    done++;
    progress.done = done;
    if (rec.outcome === 'onboarded') progress.onboarded++;
    else if (rec.outcome === 'rejected') progress.rejected++;
    else if (rec.outcome === 'lost') progress.lost++;
    const clones = parked.get(rec.index);
    if (clones) {
      parked.delete(rec.index);
      for (const c of clones) release(c);
    }
    if (done === n) finishRun();
  };

  const release = ([index, arrivedMs]: [number, number]) => {
    const dev = devices[index]!;
    const victim = dev.plan.cloneOf;
    if (victim !== null) {
      const v = records[victim];
      if (!v) {
        const list = parked.get(victim) ?? [];
        list.push([index, arrivedMs]);
        parked.set(victim, list);
        return;
      }
      if (v.outcome !== 'onboarded') {
        // The identity it copies never onboarded: its expected rejection cannot be checked.
        const t = now();
        complete({
          index, registrationId: dev.plan.registrationId, scenario: dev.plan.scenario, fault: dev.plan.fault, expect: dev.plan.fault ? FAULTS[dev.plan.fault].expect : { kind: 'onboard' },
          outcome: 'skipped', code: null, status: null, attempts: 0, arrivedMs, startedMs: t, finishedMs: t, deviceId: null, serial: null, keyFingerprint: dev.keyFingerprint,
          lostSerial: null, resetsInjected: 0, certificateProblem: null, note: `the device it copies (${v.registrationId}) ended ${v.outcome}`,
        });
        return;
      }
    }
    ready.push([index, arrivedMs]);
  };

  const pump = () => {
    while (progress.inFlight < opts.concurrency && readyHead < ready.length) {
      const [index, arrivedMs] = ready[readyHead++]!;
      progress.inFlight++;
      onboard(devices[index]!, arrivedMs).then(
        (rec) => {
          progress.inFlight--;
          complete(rec);
          pump();
        },
        (e: unknown) => {
          progress.inFlight--;
          fatal = e instanceof Error ? e : new Error(String(e));
          finishRun();
        },
      );
    }
    if (readyHead > 4096 && readyHead * 2 > ready.length) {
      ready.splice(0, readyHead);
      readyHead = 0;
    }
  };

  let arrivalTimer: NodeJS.Timeout | undefined;
  const arrive = () => {
    const t = now();
    while (nextArrival < n && opts.arrivals[nextArrival]! <= t) release([nextArrival, opts.arrivals[nextArrival++]!]);
    pump();
    if (nextArrival < n) arrivalTimer = setTimeout(arrive, Math.max(1, opts.arrivals[nextArrival]! - now()));
  };

  const ticker = opts.onProgress
    ? setInterval(() => {
        progress.elapsedMs = now();
        opts.onProgress!(progress);
      }, opts.progressIntervalMs ?? 200)
    : undefined;
  try {
    if (n > 0) {
      arrive();
      await finished;
    }
  } finally {
    if (arrivalTimer) clearTimeout(arrivalTimer);
    if (ticker) clearInterval(ticker);
  }
  if (fatal) throw fatal;
  progress.elapsedMs = now();
  opts.onProgress?.(progress);
  opts.onRunEnd?.();
  const checkStarted = performance.now();
  for (let i = 0; i < unverified.length; i++) {
    const [rec, signed] = unverified[i]!;
    rec.certificateProblem = opts.trust.verifyIssued(signed);
    if (i % 1000 === 999) opts.onCertificateCheck?.(i + 1, unverified.length);
  }
  opts.onCertificateCheck?.(unverified.length, unverified.length);
  return { records, answers, requestLatenciesMs: Float64Array.from(latencies), attempts: progress.attempts, elapsedMs: progress.elapsedMs, certificateCheckMs: performance.now() - checkStarted };
}
