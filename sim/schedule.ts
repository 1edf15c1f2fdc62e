/** Arrival patterns and the device-side retry policy. */

export type ArrivalPattern = 'burst' | 'ramp' | 'poisson';
export const PATTERNS: readonly ArrivalPattern[] = ['burst', 'ramp', 'poisson'];

/**
 * When each device powers on, in ms from the start, non-decreasing.
 * - burst: all at once (the concurrency limit is the only throttle);
 * - ramp: the arrival rate rises linearly from 0 to `rate`/s (or over `rampSeconds` when no rate is given);
 * - poisson: independent arrivals at `rate`/s on average (exponential gaps).
 */
export function arrivalTimes(pattern: ArrivalPattern, n: number, opts: { rate?: number; rampSeconds: number }, rnd: () => number): Float64Array {
  const out = new Float64Array(n);
  if (pattern === 'burst' || n === 0) return out;
  if (pattern === 'ramp') {
    // Cumulative arrivals N(t) = n (t/D)^2 for a rate growing linearly to its peak 2n/D at t = D.
    const durationMs = opts.rate ? (2 * n * 1000) / opts.rate : opts.rampSeconds * 1000;
    for (let i = 0; i < n; i++) out[i] = durationMs * Math.sqrt(i / n);
    return out;
  }
  const rate = opts.rate ?? 100;
  let t = 0;
  for (let i = 0; i < n; i++) {
    out[i] = t;
    t += (-Math.log(1 - rnd()) / rate) * 1000;
  }
  return out;
}

export interface RetryPolicy {
  /** Attempts per device, the first included. */
  maxAttempts: number;
  baseMs: number;
  capMs: number;
}

export const DEFAULT_RETRY: RetryPolicy = { maxAttempts: 10, baseMs: 250, capMs: 30_000 };

/**
 * Exponential backoff with full jitter (uniform in [0, min(cap, base·2^(n-1)))), never shorter than
 * the server's Retry-After. `failures` counts the failed attempts so far (≥ 1).
 */
export function retryDelayMs(policy: RetryPolicy, failures: number, retryAfterMs: number | null, rnd: () => number): number {
  const ceiling = Math.min(policy.capMs, policy.baseMs * 2 ** Math.min(30, failures - 1));
  const jittered = rnd() * ceiling;
  return retryAfterMs === null ? jittered : Math.max(retryAfterMs, jittered);
}

/** Answers worth retrying unchanged: overload, deferral, and server-side trouble. */
const RETRYABLE_CODES = new Set(['RATE_LIMITED', 'OVERLOADED', 'STORE_UNAVAILABLE', 'INTERNAL_ERROR', 'HOOK_FAILED', 'REQUEST_TIMEOUT']);
export function isRetryable(status: number, code: string): boolean {
  return RETRYABLE_CODES.has(code) || status === 429 || status === 502 || status === 503 || status === 504 || (status >= 500 && code.startsWith('HTTP_'));
}
