/**
 * `fleetpass simulate` as a library: plan the fleet, set it up through the admin API, boot it over a
 * device protocol, cross-check what the server registered, and build the report. Speaks only the
 * wire protocols, so it can be pointed at any Fleetpass deployment.
 */
import { randomBytes } from 'node:crypto';
import { AdminClient } from './admin.js';
import { crossCheck, type CrossCheckResult } from './crosscheck.js';
import { describeFaultSpec, type FaultSpec } from './faults.js';
import { DEFAULT_MIX, planFleet, seededRandom, type FleetPlan, type ScenarioMix } from './plan.js';
import type { ProgressLine } from './progress.js';
import { createProtocol, type ProtocolName } from './protocols/index.js';
import { resolveTarget, type ResolvedTarget } from './protocols/transport.js';
import { buildReport, type SimulationReport } from './report.js';
import { runFleet, type RunResult } from './runner.js';
import { DEFAULT_RETRY, arrivalTimes, type ArrivalPattern } from './schedule.js';
import { fetchCaBundle, setUpFleet, type FleetSetup } from './setup.js';

export interface SimulationOptions {
  /** https://host:port of the Fleetpass deployment. */
  target: string;
  /** Admin API token (operator or admin role). */
  token: string;
  /** PEM bundle to trust; fetched from <target>/ca.pem when absent. */
  caPem?: string;
  devices: number;
  concurrency: number;
  faults: FaultSpec;
  protocol?: ProtocolName;
  pattern?: ArrivalPattern;
  /** Devices per second (poisson: mean rate; ramp: peak rate). */
  rate?: number;
  rampSeconds?: number;
  mix?: ScenarioMix;
  keepAlive?: boolean;
  maxAttempts?: number;
  backoffBaseMs?: number;
  backoffCapMs?: number;
  timeoutMs?: number;
  seed?: number;
  runId?: string;
  crossCheck?: boolean;
  adminConcurrency?: number;
  progress?: ProgressLine;
  /**
   * Hooks between the phases: tests change the server to provoke failed expectations; the benchmark
   * reads CPU counters around the run (afterSetup to afterRun: the answers, not setup or checks).
   */
  hooks?: {
    afterSetup?: (ctx: { admin: AdminClient; setup: FleetSetup; plan: FleetPlan }) => Promise<void>;
    /** Synchronous, called as the last device gets its final answer. */
    afterRun?: () => void;
    beforeCrossCheck?: (ctx: { admin: AdminClient; setup: FleetSetup; result: RunResult }) => Promise<void>;
  };
}

export async function runSimulation(o: SimulationOptions): Promise<SimulationReport> {
  const url = new URL(o.target);
  const runId = o.runId ?? randomBytes(3).toString('hex');
  const seed = o.seed ?? randomBytes(4).readUInt32BE(0);
  const protocolName = o.protocol ?? 'https';
  const pattern = o.pattern ?? 'burst';
  const retry = { maxAttempts: o.maxAttempts ?? DEFAULT_RETRY.maxAttempts, baseMs: o.backoffBaseMs ?? DEFAULT_RETRY.baseMs, capMs: o.backoffCapMs ?? DEFAULT_RETRY.capMs };

  const caPem = o.caPem ?? (await fetchCaBundle(url));
  const target: ResolvedTarget = await resolveTarget({ url, caPem, keepAlive: o.keepAlive ?? false, maxSockets: o.concurrency });
  const protocol = createProtocol(protocolName, target);
  const admin = new AdminClient(target, o.token, Math.max(4, o.adminConcurrency ?? 8));
  try {
    // Fail early and clearly on a wrong token or URL, before a single key is made.
    await admin.call('GET', '/tenants/current');

    let faults = o.faults;
    const warnings: string[] = [];
    if (!protocol.carriesParameters) {
      const { firmware: _f, region: _r, ...rest } = faults;
      if (faults.firmware || faults.region) warnings.push(`the ${protocolName} door carries no firmware or region: those faults are left out`);
      faults = rest;
    }
    const plan = planFleet({ devices: o.devices, mix: o.mix ?? DEFAULT_MIX, faults, runId, seed });
    plan.warnings.unshift(...warnings);

    const setup = await setUpFleet(admin, plan, {
      carriesParameters: protocol.carriesParameters,
      adminConcurrency: o.adminConcurrency ?? 8,
      onProgress: (what, done, total) => o.progress?.phase(what, done, total),
    });
    await o.hooks?.afterSetup?.({ admin, setup, plan });

    const arrivals = arrivalTimes(pattern, plan.devices.length, { ...(o.rate ? { rate: o.rate } : {}), rampSeconds: o.rampSeconds ?? 30 }, seededRandom(seed ^ 0xa11));
    const progress = o.progress;
    let checking = false;
    const result = await runFleet(setup.devices, protocol, {
      concurrency: o.concurrency,
      arrivals,
      retry,
      timeoutMs: o.timeoutMs ?? 30_000,
      seed,
      trust: target.trust,
      ...(o.hooks?.afterRun ? { onRunEnd: o.hooks.afterRun } : {}),
      ...(progress
        ? {
            onProgress: (p) => progress.update(p),
            onCertificateCheck: (done, total) => {
              if (!checking) progress.done(); // keep the run's last line on screen
              checking = true;
              progress.phase('checking the issued certificates', done, total);
            },
          }
        : {}),
    });
    o.progress?.done();
    await o.hooks?.beforeCrossCheck?.({ admin, setup, result });

    let cross: CrossCheckResult | { ran: false; reason: string } = { ran: false, reason: 'disabled (--no-cross-check)' };
    if (o.crossCheck ?? true) {
      o.progress?.note('cross-checking what the server registered (admin API) …');
      cross = await crossCheck(admin, setup.deviceGroup, plan.devices, result.records);
      o.progress?.clear();
    }
    return buildReport(
      {
        target: url.origin,
        protocol: protocolName,
        runId,
        seed,
        pattern,
        rate: o.rate ?? null,
        concurrency: o.concurrency,
        keepAlive: o.keepAlive ?? false,
        maxAttempts: retry.maxAttempts,
        faults: describeFaultSpec(faults),
      },
      plan,
      { adminSetup: Math.round(setup.timings.adminMs), manufacturing: Math.round(setup.timings.manufacturingMs), tokens: Math.round(setup.timings.tokensMs) },
      result,
      cross,
    );
  } finally {
    protocol.close();
    admin.close();
  }
}
