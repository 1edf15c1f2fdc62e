/**
 * The fleet plan: which virtual device uses which bootstrap credential, which fault it carries and
 * what it reports about itself. Deterministic for a seed, and exact: a rate becomes
 * round(rate × devices) devices, so a report can be checked counter by counter.
 */
import { FAULTS, FAULT_NAMES, SCENARIOS, type FaultName, type FaultSpec, type Scenario } from './faults.js';

export type ScenarioMix = Record<Scenario, number>;
export const DEFAULT_MIX: ScenarioMix = { x509: 6, 'symmetric-key': 3, token: 1 };

export interface DeviceParameters {
  model: string;
  firmwareVersion: string;
  region: string;
}

export interface DevicePlan {
  index: number;
  registrationId: string;
  scenario: Scenario;
  fault: FaultName | null;
  /** For clone faults (duplicate-id, replayed-token): the device whose identity is copied. It runs first. */
  cloneOf: number | null;
  parameters: DeviceParameters;
}

export interface FleetPlan {
  runId: string;
  devices: DevicePlan[];
  /** Devices that carry each fault (after adjustment to what the fleet can hold). */
  faultCounts: Partial<Record<FaultName, number>>;
  scenarioCounts: Record<Scenario, number>;
  warnings: string[];
}

export const ALLOWED_REGIONS = ['eu', 'us', 'apac'];
export const MIN_FIRMWARE = '2.0.0';
const MODELS = ['thermo', 'meter', 'gateway', 'valve'];

/** mulberry32: small, fast, seedable. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function shuffle<T>(items: T[], rnd: () => number): T[] {
  for (let i = items.length - 1; i > 0; i--) {
    const j = Math.floor(rnd() * (i + 1));
    [items[i], items[j]] = [items[j]!, items[i]!];
  }
  return items;
}

/** Splits n by weights with the largest-remainder method, so the parts add up to n exactly. */
export function apportion<K extends string>(n: number, weights: Record<K, number>): Record<K, number> {
  const keys = Object.keys(weights) as K[];
  const total = keys.reduce((s, k) => s + Math.max(0, weights[k]), 0);
  const out = {} as Record<K, number>;
  if (total <= 0) throw new Error('scenario weights add up to zero');
  const rems: Array<[K, number]> = [];
  let used = 0;
  for (const k of keys) {
    const exact = (n * Math.max(0, weights[k])) / total;
    out[k] = Math.floor(exact);
    used += out[k];
    rems.push([k, exact - out[k]]);
  }
  rems.sort((a, b) => b[1] - a[1]);
  for (let i = 0; used < n; i++, used++) out[rems[i % rems.length]![0]]++;
  return out;
}

export interface PlanOptions {
  devices: number;
  mix: ScenarioMix;
  faults: FaultSpec;
  runId: string;
  seed: number;
}

export function planFleet(opts: PlanOptions): FleetPlan {
  const rnd = seededRandom(opts.seed);
  const n = opts.devices;
  const warnings: string[] = [];
  const scenarioCounts = apportion(n, opts.mix);
  const scenarios = shuffle(SCENARIOS.flatMap((s) => new Array<Scenario>(scenarioCounts[s]).fill(s)), rnd);
  const width = Math.max(6, String(n).length);
  const prefix = `sim-${opts.runId}`;
  const devices: DevicePlan[] = scenarios.map((scenario, index) => ({
    index,
    registrationId: `${prefix}-${String(index).padStart(width, '0')}`,
    scenario,
    fault: null,
    cloneOf: null,
    parameters: {
      model: MODELS[Math.floor(rnd() * MODELS.length)]!,
      firmwareVersion: `2.${Math.floor(rnd() * 5)}.${Math.floor(rnd() * 10)}`,
      region: ALLOWED_REGIONS[Math.floor(rnd() * ALLOWED_REGIONS.length)]!,
    },
  }));

  // Devices still free to carry a fault or be copied, per scenario.
  const free: Record<Scenario, number[]> = { x509: [], 'symmetric-key': [], token: [] };
  for (const d of devices) free[d.scenario].push(d.index);
  // Faulty devices are spread over the whole run, not bunched at its end.
  for (const s of SCENARIOS) shuffle(free[s], rnd);

  // Most constrained faults first, so that scenario-specific ones find their devices.
  const wanted = FAULT_NAMES.filter((f) => opts.faults[f] !== undefined)
    .map((f) => {
      const amount = opts.faults[f]!;
      return { fault: f, count: 'rate' in amount ? Math.round(amount.rate * n) : amount.count };
    })
    .sort((a, b) => FAULTS[a.fault].scenarios.length - FAULTS[b.fault].scenarios.length || Number(FAULTS[b.fault].clone) - Number(FAULTS[a.fault].clone));

  const faultCounts: Partial<Record<FaultName, number>> = {};
  for (const { fault, count } of wanted) {
    const info = FAULTS[fault];
    const need = info.clone ? 2 : 1;
    let placed = 0;
    for (; placed < count; placed++) {
      // The allowed scenario with the most free devices, so the load spreads across credentials.
      const scenario = info.scenarios.filter((s) => free[s].length >= need).sort((a, b) => free[b].length - free[a].length)[0];
      if (!scenario) break;
      const d = devices[free[scenario].pop()!]!;
      d.fault = fault;
      if (info.clone) {
        const victim = devices[free[scenario].pop()!]!; // stays a clean device, but not a victim twice
        d.cloneOf = victim.index;
        d.registrationId = victim.registrationId;
        d.parameters = { ...victim.parameters };
      }
    }
    if (placed < count) warnings.push(`fault ${fault}: only ${placed} of ${count} devices could carry it (needs ${info.scenarios.join(' or ')} devices${info.clone ? ', two per fault' : ''})`);
    if (placed > 0) faultCounts[fault] = placed;
  }

  for (const d of devices) {
    if (d.fault === 'firmware') d.parameters.firmwareVersion = `1.${Math.floor(rnd() * 9)}.${Math.floor(rnd() * 10)}`;
    if (d.fault === 'region') d.parameters.region = 'mars-1';
  }
  return { runId: opts.runId, devices, faultCounts, scenarioCounts, warnings };
}
