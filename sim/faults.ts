/**
 * The faults the simulator injects, each with the outcome a correct server must produce, and the
 * `--faults` spec: `none`, `realistic`, or `name=rate|count,…` (e.g. `reset=2%,weak-key=0.005,duplicate=3`).
 */

/** How devices prove who they are on first boot. */
export type Scenario = 'x509' | 'symmetric-key' | 'token';
export const SCENARIOS: readonly Scenario[] = ['x509', 'symmetric-key', 'token'];

export type FaultName =
  | 'reset'
  | 'lost-response'
  | 'duplicate-id'
  | 'expired-cert'
  | 'wrong-ca'
  | 'firmware'
  | 'region'
  | 'malformed-csr'
  | 'replayed-token'
  | 'weak-key'
  | 'missing-credential';

export type Expectation = { kind: 'onboard' } | { kind: 'reject'; code: string; status: number };

export interface FaultInfo {
  name: FaultName;
  description: string;
  expect: Expectation;
  /** Scenarios a device with this fault can have. */
  scenarios: readonly Scenario[];
  /** The fault is a second device (a clone) that copies a clean device's identity; it runs after that device finished. */
  clone: boolean;
}

const reject = (code: string, status: number): Expectation => ({ kind: 'reject', code, status });
const ONBOARD: Expectation = { kind: 'onboard' };

export const FAULTS: Readonly<Record<FaultName, FaultInfo>> = {
  reset: { name: 'reset', description: 'connection reset after the TLS handshake, before the request is sent; the device retries', expect: ONBOARD, scenarios: SCENARIOS, clone: false },
  'lost-response': { name: 'lost-response', description: 'the answer is lost after the server committed; the retry must get the same certificate', expect: ONBOARD, scenarios: SCENARIOS, clone: false },
  'duplicate-id': { name: 'duplicate-id', description: 'a second device with an onboarded device\'s registration ID and another key', expect: reject('REGISTRATION_ID_COLLISION', 409), scenarios: ['x509', 'symmetric-key'], clone: true },
  'expired-cert': { name: 'expired-cert', description: 'factory certificate expired', expect: reject('CERTIFICATE_EXPIRED', 401), scenarios: ['x509'], clone: false },
  'wrong-ca': { name: 'wrong-ca', description: 'factory certificate from a CA nobody trusts (same name, other key)', expect: reject('CERTIFICATE_UNTRUSTED', 401), scenarios: ['x509'], clone: false },
  firmware: { name: 'firmware', description: 'firmware below the template minimum', expect: reject('FIRMWARE_UNSUPPORTED', 422), scenarios: SCENARIOS, clone: false },
  region: { name: 'region', description: 'region not allowed by the template', expect: reject('REGION_MISMATCH', 422), scenarios: SCENARIOS, clone: false },
  'malformed-csr': { name: 'malformed-csr', description: 'CSR truncated (not well-formed PKCS#10)', expect: reject('CSR_INVALID', 400), scenarios: SCENARIOS, clone: false },
  'replayed-token': { name: 'replayed-token', description: 'an onboarded device\'s one-time token replayed with another key', expect: reject('TOKEN_REPLAYED', 401), scenarios: ['token'], clone: true },
  'weak-key': { name: 'weak-key', description: 'RSA-1024 operational key', expect: reject('KEY_TOO_WEAK', 400), scenarios: SCENARIOS, clone: false },
  'missing-credential': { name: 'missing-credential', description: 'no bootstrap credential at all (factory step skipped)', expect: reject('ATTESTATION_MISSING', 401), scenarios: SCENARIOS, clone: false },
};

export const FAULT_NAMES = Object.keys(FAULTS) as FaultName[];

/** A fault's share of the fleet: a fraction of the devices, or an exact number of them. */
export type FaultAmount = { rate: number } | { count: number };
export type FaultSpec = Partial<Record<FaultName, FaultAmount>>;

/**
 * `--faults realistic`: the "0.5% … becomes significant at scale" and "1% of 100,000 devices"
 * rates of the source document, across connectivity, manufacturing and security faults.
 */
export const REALISTIC: FaultSpec = {
  reset: { rate: 0.02 },
  'lost-response': { rate: 0.01 },
  'duplicate-id': { rate: 0.005 },
  'expired-cert': { rate: 0.005 },
  'wrong-ca': { rate: 0.005 },
  firmware: { rate: 0.01 },
  region: { rate: 0.01 },
  'malformed-csr': { rate: 0.005 },
  'replayed-token': { rate: 0.005 },
  'weak-key': { rate: 0.005 },
  'missing-credential': { rate: 0.005 },
};

export class FaultSpecError extends Error {}

/** Parses `none`, `realistic` or `name=amount,…`; an amount is a count (`3`), a fraction (`0.01`) or a percentage (`1%`). */
export function parseFaultSpec(text: string): FaultSpec {
  const t = text.trim();
  if (t === '' || t === 'none') return {};
  if (t === 'realistic') return { ...REALISTIC };
  const spec: FaultSpec = {};
  for (const part of t.split(',')) {
    const m = /^\s*([a-z-]+)\s*=\s*([0-9.]+)(%?)\s*$/.exec(part);
    if (!m) throw new FaultSpecError(`fault "${part}" is not name=amount (e.g. reset=2%, weak-key=0.005, duplicate-id=3)`);
    const [, rawName, num, pct] = m as unknown as [string, string, string, string];
    const name = rawName as FaultName;
    if (!(name in FAULTS)) throw new FaultSpecError(`unknown fault "${rawName}"; known: ${FAULT_NAMES.join(', ')}`);
    const value = Number(num);
    if (!Number.isFinite(value) || value < 0) throw new FaultSpecError(`fault ${name}: "${num}" is not a non-negative number`);
    if (pct) {
      if (value > 100) throw new FaultSpecError(`fault ${name}: ${value}% is more than 100%`);
      spec[name] = { rate: value / 100 };
    } else if (num.includes('.')) {
      if (value > 1) throw new FaultSpecError(`fault ${name}: a fraction must be at most 1 (use a whole number for a count)`);
      spec[name] = { rate: value };
    } else {
      spec[name] = { count: value };
    }
  }
  return spec;
}

export function describeFaultSpec(spec: FaultSpec): string {
  const parts = Object.entries(spec).map(([n, a]) => ('rate' in a ? `${n}=${+(a.rate * 100).toFixed(3)}%` : `${n}=${a.count}`));
  return parts.length ? parts.join(',') : 'none';
}
