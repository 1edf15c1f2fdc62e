/** Percentiles, histograms and sparklines for the report. */

export interface Summary {
  count: number;
  mean: number;
  p50: number;
  p95: number;
  p99: number;
  max: number;
}

/** Nearest-rank percentiles (p in 0..100) of the values; null when there are none. */
export function summarize(values: ArrayLike<number>): Summary | null {
  const n = values.length;
  if (n === 0) return null;
  const sorted = Float64Array.from(values).sort();
  const at = (p: number) => sorted[Math.min(n - 1, Math.max(0, Math.ceil((p / 100) * n) - 1))]!;
  let sum = 0;
  for (let i = 0; i < n; i++) sum += sorted[i]!;
  const r = (x: number) => Math.round(x * 10) / 10;
  return { count: n, mean: r(sum / n), p50: r(at(50)), p95: r(at(95)), p99: r(at(99)), max: r(sorted[n - 1]!) };
}

/** Counts of events per bucket of `bucketMs` from 0 to `endMs`. */
export function buckets(timesMs: ArrayLike<number>, endMs: number, bucketMs: number): number[] {
  const out = new Array<number>(Math.max(1, Math.ceil(endMs / bucketMs))).fill(0);
  for (let i = 0; i < timesMs.length; i++) {
    const b = Math.min(out.length - 1, Math.floor(timesMs[i]! / bucketMs));
    out[b]!++;
  }
  return out;
}

const BARS = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
export function sparkline(values: number[]): string {
  const max = Math.max(0, ...values);
  if (max === 0) return values.map(() => ' ').join('');
  return values.map((v) => (v === 0 ? ' ' : BARS[Math.min(BARS.length - 1, Math.floor((v / max) * (BARS.length - 1) + 0.5))]!)).join('');
}

export function formatMs(ms: number): string {
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(ms < 10_000 ? 2 : 1)} s`;
  const m = Math.floor(ms / 60_000);
  return `${m} min ${Math.round((ms - m * 60_000) / 1000)} s`;
}
