/**
 * The simulation report: what every device expected and got, how fast, how often it retried, and
 * what the server says it registered. `passed` is false — and the exit code non-zero — when any
 * expectation failed.
 */
import type { CrossCheckResult } from './crosscheck.js';
import { FAULTS, type FaultName } from './faults.js';
import type { FleetPlan } from './plan.js';
import type { DeviceRecord, RunResult } from './runner.js';
import { buckets, formatMs, sparkline, summarize, type Summary } from './stats.js';

export type Verdict = 'onboarded' | 'correctly-rejected' | 'wrongly-rejected' | 'rejected-wrong-code' | 'wrongly-accepted' | 'lost' | 'skipped';

/** One device's expected outcome against what it got. */
export function verdictOf(rec: DeviceRecord): Verdict {
  if (rec.outcome === 'skipped') return 'skipped';
  if (rec.outcome === 'lost') return 'lost';
  if (rec.expect.kind === 'onboard') return rec.outcome === 'onboarded' ? 'onboarded' : 'wrongly-rejected';
  if (rec.outcome === 'onboarded') return 'wrongly-accepted';
  return rec.code === rec.expect.code ? 'correctly-rejected' : 'rejected-wrong-code';
}

export interface RunDescription {
  target: string;
  protocol: string;
  runId: string;
  seed: number;
  pattern: string;
  rate: number | null;
  concurrency: number;
  keepAlive: boolean;
  maxAttempts: number;
  faults: string;
}

export interface FaultLine {
  fault: FaultName;
  devices: number;
  expected: string;
  asExpected: number;
  failed: number;
  skipped: number;
  got: Record<string, number>;
}

export interface DeviceFailure {
  registrationId: string;
  scenario: string;
  fault: string | null;
  expected: string;
  got: string;
  attempts: number;
  detail: string | null;
}

export interface SimulationReport {
  run: RunDescription;
  scenarios: Record<string, number>;
  warnings: string[];
  timingsMs: { adminSetup: number; manufacturing: number; tokens: number; run: number; certificateCheck: number; crossCheck: number | null };
  devices: {
    planned: number;
    attempted: number;
    onboarded: number;
    correctlyRejected: number;
    wronglyRejected: number;
    rejectedWithWrongCode: number;
    wronglyAccepted: number;
    lost: number;
    skipped: number;
  };
  /** Devices per second that got a final answer, over the run. */
  finalAnswersPerSecond: number;
  onboardedPerSecond: number;
  timeToOnboardMs: Summary | null;
  waitForSlotMs: Summary | null;
  requestLatencyMs: Summary | null;
  attemptsPerDevice: { mean: number; max: number; histogram: Record<string, number> };
  throughput: { bucketSeconds: number; onboarded: number[]; sparkline: string; peakPerSecond: number };
  /** Every answer of every attempt, by reason code ("OK" = a certificate). */
  answersByCode: Record<string, number>;
  /** Final rejections, by reason code. */
  rejectionsByCode: Record<string, number>;
  faults: FaultLine[];
  retrySafety: { lostResponses: number; sameCertificateOnRetry: number; differentCertificateOnRetry: number; resetsInjected: number; onboardedAfterReset: number };
  certificateProblems: number;
  crossCheck: CrossCheckResult | { ran: false; reason: string };
  expectationFailures: number;
  passed: boolean;
  /** The first failures, for a human to start from. */
  failures: DeviceFailure[];
}

const inc = (m: Record<string, number>, k: string, by = 1) => {
  m[k] = (m[k] ?? 0) + by;
};
const sortedCounts = (m: Record<string, number>): Record<string, number> => Object.fromEntries(Object.entries(m).sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0])));
const expectText = (rec: DeviceRecord) => (rec.expect.kind === 'onboard' ? 'onboard' : rec.expect.code);
const gotText = (rec: DeviceRecord) => (rec.outcome === 'onboarded' ? 'onboarded' : rec.outcome === 'rejected' ? (rec.code ?? 'rejected') : rec.outcome === 'lost' ? `lost (last: ${rec.code ?? 'none'})` : 'skipped');

export function buildReport(run: RunDescription, plan: FleetPlan, timings: { adminSetup: number; manufacturing: number; tokens: number }, result: RunResult, cross: CrossCheckResult | { ran: false; reason: string }): SimulationReport {
  const records = result.records;
  const devices = { planned: plan.devices.length, attempted: 0, onboarded: 0, correctlyRejected: 0, wronglyRejected: 0, rejectedWithWrongCode: 0, wronglyAccepted: 0, lost: 0, skipped: 0 };
  const failures: DeviceFailure[] = [];
  const faultLines = new Map<FaultName, FaultLine>();
  const rejectionsByCode: Record<string, number> = {};
  const histogram: Record<string, number> = {};
  const onboardTimes: number[] = [];
  const onboardedAt: number[] = [];
  const slotWaits: number[] = [];
  const retrySafety = { lostResponses: 0, sameCertificateOnRetry: 0, differentCertificateOnRetry: 0, resetsInjected: 0, onboardedAfterReset: 0 };
  let certificateProblems = 0;
  let attemptsSum = 0;
  let attemptsMax = 0;

  for (const rec of records) {
    const v = verdictOf(rec);
    switch (v) {
      case 'onboarded': devices.onboarded++; break;
      case 'correctly-rejected': devices.correctlyRejected++; break;
      case 'wrongly-rejected': devices.wronglyRejected++; break;
      case 'rejected-wrong-code': devices.rejectedWithWrongCode++; break;
      case 'wrongly-accepted': devices.wronglyAccepted++; break;
      case 'lost': devices.lost++; break;
      case 'skipped': devices.skipped++; break;
    }
    if (v !== 'skipped') {
      devices.attempted++;
      attemptsSum += rec.attempts;
      attemptsMax = Math.max(attemptsMax, rec.attempts);
      inc(histogram, rec.attempts >= 6 ? '6+' : String(rec.attempts));
      slotWaits.push(rec.startedMs - rec.arrivedMs);
    }
    if (rec.outcome === 'onboarded') {
      onboardTimes.push(rec.finishedMs - rec.startedMs);
      onboardedAt.push(rec.finishedMs);
      if (rec.certificateProblem) certificateProblems++;
    }
    if (rec.outcome === 'rejected') inc(rejectionsByCode, rec.code ?? 'unknown');
    if (rec.lostSerial !== null) {
      retrySafety.lostResponses++;
      if (rec.outcome === 'onboarded') {
        if (rec.serial === rec.lostSerial) retrySafety.sameCertificateOnRetry++;
        else retrySafety.differentCertificateOnRetry++;
      }
    }
    if (rec.resetsInjected > 0) {
      retrySafety.resetsInjected += rec.resetsInjected;
      if (rec.outcome === 'onboarded') retrySafety.onboardedAfterReset++;
    }
    if (rec.fault) {
      const f = rec.fault as FaultName;
      let line = faultLines.get(f);
      if (!line) {
        const e = FAULTS[f].expect;
        line = { fault: f, devices: 0, expected: e.kind === 'onboard' ? 'onboard after retry' : `${e.code} (${e.status})`, asExpected: 0, failed: 0, skipped: 0, got: {} };
        faultLines.set(f, line);
      }
      line.devices++;
      inc(line.got, gotText(rec));
      if (v === 'skipped') line.skipped++;
      else if (v === 'onboarded' || v === 'correctly-rejected') line.asExpected++;
      else line.failed++;
    }
    const bad = v !== 'onboarded' && v !== 'correctly-rejected' && v !== 'skipped';
    const badCert = rec.outcome === 'onboarded' && (rec.certificateProblem !== null || (rec.lostSerial !== null && rec.serial !== rec.lostSerial));
    if ((bad || badCert) && failures.length < 50) {
      failures.push({
        registrationId: rec.registrationId,
        scenario: rec.scenario,
        fault: rec.fault,
        expected: expectText(rec),
        got: gotText(rec),
        attempts: rec.attempts,
        detail: rec.certificateProblem ?? (rec.lostSerial !== null && rec.serial !== rec.lostSerial && rec.outcome === 'onboarded' ? `retry after a lost answer got certificate ${rec.serial}, not ${rec.lostSerial}` : rec.note),
      });
    }
  }

  const runSeconds = result.elapsedMs / 1000;
  const bucketSeconds = Math.max(1, Math.ceil(runSeconds / 60));
  const series = buckets(onboardedAt, Math.max(result.elapsedMs, 1), bucketSeconds * 1000);
  const crossProblems = cross.ran ? cross.problems.length : 0;
  const expectationFailures = devices.wronglyRejected + devices.rejectedWithWrongCode + devices.wronglyAccepted + devices.lost + certificateProblems + retrySafety.differentCertificateOnRetry + crossProblems;

  return {
    run,
    scenarios: { ...plan.scenarioCounts },
    warnings: plan.warnings,
    timingsMs: { ...timings, run: Math.round(result.elapsedMs), certificateCheck: Math.round(result.certificateCheckMs), crossCheck: cross.ran ? Math.round(cross.elapsedMs) : null },
    devices,
    finalAnswersPerSecond: Math.round((devices.attempted / Math.max(runSeconds, 0.001)) * 10) / 10,
    onboardedPerSecond: Math.round((onboardedAt.length / Math.max(runSeconds, 0.001)) * 10) / 10,
    timeToOnboardMs: summarize(onboardTimes),
    waitForSlotMs: summarize(slotWaits),
    requestLatencyMs: summarize(result.requestLatenciesMs),
    attemptsPerDevice: { mean: devices.attempted ? Math.round((attemptsSum / devices.attempted) * 100) / 100 : 0, max: attemptsMax, histogram },
    throughput: { bucketSeconds, onboarded: series, sparkline: sparkline(series), peakPerSecond: Math.round((Math.max(0, ...series) / bucketSeconds) * 10) / 10 },
    answersByCode: sortedCounts(result.answers),
    rejectionsByCode: sortedCounts(rejectionsByCode),
    faults: [...faultLines.values()].sort((a, b) => a.fault.localeCompare(b.fault)),
    retrySafety,
    certificateProblems,
    crossCheck: cross,
    expectationFailures,
    passed: expectationFailures === 0,
    failures,
  };
}

// --- terminal ------------------------------------------------------------------------------------

const pad = (s: string | number, n: number) => String(s).padStart(n);
const summaryLine = (s: Summary | null) => (s ? `p50 ${formatMs(s.p50)}  p95 ${formatMs(s.p95)}  p99 ${formatMs(s.p99)}  max ${formatMs(s.max)}` : 'n/a');

export function formatReport(r: SimulationReport, opts: { color: boolean }): string {
  const c = (code: string, s: string) => (opts.color ? `\x1b[${code}m${s}\x1b[0m` : s);
  const bad = (n: number, s: string) => (n > 0 ? c('31;1', s) : s);
  const d = r.devices;
  const L: string[] = [];
  L.push('');
  L.push(c('1', `Fleetpass simulation ${r.run.runId} — ${d.planned} devices → ${r.run.target} (${r.run.protocol})`));
  L.push(`  ${r.run.pattern}${r.run.rate ? ` at ${r.run.rate}/s` : ''}, concurrency ${r.run.concurrency}, ${r.run.keepAlive ? 'keep-alive connections' : 'a fresh TLS connection per attempt'}, up to ${r.run.maxAttempts} attempts, faults: ${r.run.faults}`);
  L.push(`  credentials: ${Object.entries(r.scenarios).filter(([, n]) => n > 0).map(([s, n]) => `${s} ${n}`).join(', ')}`);
  L.push(`  setup ${formatMs(r.timingsMs.adminSetup + r.timingsMs.tokens)} (admin API), manufacturing ${formatMs(r.timingsMs.manufacturing)}, run ${formatMs(r.timingsMs.run)}, certificate check ${formatMs(r.timingsMs.certificateCheck)}${r.timingsMs.crossCheck !== null ? `, cross-check ${formatMs(r.timingsMs.crossCheck)}` : ''}`);
  for (const w of r.warnings) L.push(c('33', `  warning: ${w}`));
  L.push('');
  L.push(c('1', 'Devices'));
  L.push(`  attempted              ${pad(d.attempted, 8)}`);
  L.push(`  onboarded              ${pad(d.onboarded, 8)}`);
  L.push(`  correctly rejected     ${pad(d.correctlyRejected, 8)}`);
  L.push(bad(d.wronglyRejected, `  wrongly rejected       ${pad(d.wronglyRejected, 8)}`));
  L.push(bad(d.rejectedWithWrongCode, `  rejected, wrong code   ${pad(d.rejectedWithWrongCode, 8)}`));
  L.push(bad(d.wronglyAccepted, `  wrongly accepted       ${pad(d.wronglyAccepted, 8)}`));
  L.push(bad(d.lost, `  lost (no final answer) ${pad(d.lost, 8)}`));
  if (d.skipped) L.push(`  skipped clones         ${pad(d.skipped, 8)}  (the device they copy did not onboard)`);
  L.push('');
  L.push(c('1', 'Speed'));
  L.push(`  time to onboard        ${summaryLine(r.timeToOnboardMs)}`);
  L.push(`  request latency        ${summaryLine(r.requestLatencyMs)}`);
  if (r.waitForSlotMs && r.waitForSlotMs.max > 0) L.push(`  wait for a slot        ${summaryLine(r.waitForSlotMs)}  (devices queued behind --concurrency)`);
  L.push(`  throughput             ${r.onboardedPerSecond}/s onboarded, ${r.finalAnswersPerSecond}/s final answers, peak ${r.throughput.peakPerSecond}/s`);
  L.push(`  onboarded per ${r.throughput.bucketSeconds} s     |${r.throughput.sparkline}|`);
  const h = r.attemptsPerDevice.histogram;
  L.push(`  attempts per device    mean ${r.attemptsPerDevice.mean}, max ${r.attemptsPerDevice.max}   ${Object.keys(h).sort().map((k) => `${k}:${h[k]}`).join('  ')}`);
  L.push('');
  if (r.faults.length > 0) {
    L.push(c('1', 'Faults injected'));
    L.push(`  ${'fault'.padEnd(20)}${pad('devices', 8)}  ${'expected'.padEnd(34)}${pad('ok', 6)}${pad('failed', 8)}`);
    for (const f of r.faults) {
      const got = f.failed > 0 ? `  got ${Object.entries(f.got).map(([k, v]) => `${k} ×${v}`).join(', ')}` : '';
      L.push(bad(f.failed, `  ${f.fault.padEnd(20)}${pad(f.devices, 8)}  ${f.expected.padEnd(34)}${pad(f.asExpected, 6)}${pad(f.failed, 8)}${f.skipped ? ` (${f.skipped} skipped)` : ''}${got}`));
    }
    const rs = r.retrySafety;
    if (rs.lostResponses > 0) L.push(bad(rs.differentCertificateOnRetry, `  lost answers: ${rs.lostResponses}; the retry got the same certificate ${rs.sameCertificateOnRetry}×, a different one ${rs.differentCertificateOnRetry}×`));
    if (rs.resetsInjected > 0) L.push(`  connection resets: ${rs.resetsInjected}; ${rs.onboardedAfterReset} of those devices onboarded on a later attempt`);
    L.push('');
  }
  L.push(c('1', 'Answers by reason code') + ' (every attempt)');
  for (const [code, n] of Object.entries(r.answersByCode)) L.push(`  ${code.padEnd(32)}${pad(n, 8)}`);
  L.push('');
  L.push(c('1', 'Server-side cross-check') + ' (admin API)');
  const x = r.crossCheck;
  if (!x.ran) {
    L.push(`  not run: ${x.reason}`);
  } else {
    L.push(`  ${x.devicesListed} devices and ${x.certificatesListed} certificates listed for this run`);
    L.push(`  onboarded devices registered once, with their key and their one certificate: ${x.verified} of ${d.onboarded + d.wronglyAccepted}`);
    L.push(`  rejected devices with nothing registered:                                    ${x.rejectedClean} of ${d.correctlyRejected + d.wronglyRejected + d.rejectedWithWrongCode + d.skipped}`);
    if (x.lostButRegistered) L.push(`  lost devices the server did register (answer never arrived): ${x.lostButRegistered}`);
    for (const [kind, n] of Object.entries(x.problemCounts)) L.push(c('31;1', `  PROBLEM ${kind}: ${n}`));
    for (const p of x.problems.slice(0, 10)) L.push(c('31', `    ${p.registrationId}: ${p.detail}`));
  }
  if (r.certificateProblems) L.push(c('31;1', `  issued certificates that fail the device's own check: ${r.certificateProblems}`));
  if (r.failures.length > 0) {
    L.push('');
    L.push(c('1', 'First failed expectations'));
    for (const f of r.failures.slice(0, 15)) L.push(`  ${f.registrationId} [${f.scenario}${f.fault ? `, ${f.fault}` : ''}] expected ${f.expected}, got ${f.got} after ${f.attempts} attempt(s)${f.detail ? ` — ${f.detail}` : ''}`);
  }
  L.push('');
  L.push(r.passed ? c('32;1', `PASS — every expectation held (${d.attempted} devices)`) : c('31;1', `FAIL — ${r.expectationFailures} expectation(s) failed`));
  L.push('');
  return L.join('\n');
}
