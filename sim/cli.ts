/** `fleetpass simulate …`: argument parsing, the live progress line, the report and the exit code. */
import { readFileSync, writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { FAULT_NAMES, FAULTS, FaultSpecError, SCENARIOS, parseFaultSpec, type Scenario } from './faults.js';
import { DEFAULT_MIX, type ScenarioMix } from './plan.js';
import { ProgressLine } from './progress.js';
import { PROTOCOLS, type ProtocolName } from './protocols/index.js';
import { formatReport } from './report.js';
import { PATTERNS, type ArrivalPattern } from './schedule.js';
import { runSimulation, type SimulationOptions } from './simulate.js';

export const SIMULATE_USAGE = `fleetpass simulate — boot a virtual fleet against a Fleetpass server and check every answer

Usage:
  fleetpass simulate --target https://HOST:PORT --token ADMIN_TOKEN [options]

Fleet:
  --devices N              virtual devices (default 1000)
  --concurrency C          devices onboarding at once (default 100)
  --pattern P              arrivals: burst (all at once), ramp (rate rising to --rate), poisson (--rate on average); default burst
  --rate R                 devices per second for ramp (peak) and poisson (mean; default 100)
  --ramp-seconds S         ramp length when no --rate is given (default 30)
  --attestation A          mixed (x509 6 : symmetric-key 3 : token 1, the default), x509, symmetric-key, token,
                           or weights like x509=8,token=2
  --faults F               none (default), realistic (0.5–2% each), or name=amount,… where amount is a count (3),
                           a fraction (0.01) or a percentage (1%). Faults:
${FAULT_NAMES.map((f) => `                             ${f.padEnd(19)} ${FAULTS[f].description}`).join('\n')}
  --protocol P             https (default) or est
  --seed N                 make the fleet (ids, faults, jitter) reproducible

Device behaviour:
  --max-attempts N         attempts per device before it counts as lost (default 10)
  --backoff-base-ms MS     exponential backoff base, full jitter (default 250); Retry-After is always honoured
  --backoff-cap-ms MS      backoff ceiling (default 30000)
  --timeout-ms MS          per-attempt timeout (default 30000)
  --keep-alive             devices without a client certificate share kept-alive TLS connections (benchmarks);
                           default is a fresh connection per attempt, like real devices

Server and output:
  --target URL             the Fleetpass base URL (https)
  --token TOKEN            admin API token (or FLEETPASS_ADMIN_TOKEN, or --token-file FILE)
  --ca FILE                CA bundle to trust; default: fetched from <target>/ca.pem (trust on first use)
  --no-cross-check         skip the admin-API check of what the server registered
  --json                   print the report as JSON on stdout (progress stays on stderr)
  --report FILE            also write the JSON report to FILE
  --no-color               plain terminal output

Exit code: 0 when every expectation held, 1 when one failed (wrong answer, lost device, cross-check), 2 on usage errors.
`;

class UsageError extends Error {}

function int(value: string | undefined, name: string, min: number, fallback: number): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isInteger(n) || n < min) throw new UsageError(`--${name} must be an integer ≥ ${min} (got "${value}")`);
  return n;
}

export function parseMix(text: string): ScenarioMix {
  if (text === 'mixed') return { ...DEFAULT_MIX };
  if ((SCENARIOS as readonly string[]).includes(text)) return { x509: 0, 'symmetric-key': 0, token: 0, [text]: 1 } as ScenarioMix;
  const mix: ScenarioMix = { x509: 0, 'symmetric-key': 0, token: 0 };
  for (const part of text.split(',')) {
    const m = /^\s*([a-z0-9-]+)\s*=\s*(\d+(?:\.\d+)?)\s*$/.exec(part);
    if (!m || !(SCENARIOS as readonly string[]).includes(m[1]!)) throw new UsageError(`--attestation: "${part}" is not one of ${SCENARIOS.join(', ')} (=weight)`);
    mix[m[1] as Scenario] = Number(m[2]);
  }
  if (mix.x509 + mix['symmetric-key'] + mix.token <= 0) throw new UsageError('--attestation weights add up to zero');
  return mix;
}

export function parseSimulateArgs(argv: string[], env: NodeJS.ProcessEnv = process.env): { options: Omit<SimulationOptions, 'progress'>; json: boolean; reportFile: string | undefined; color: boolean; help: boolean } {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    allowPositionals: false,
    options: {
      target: { type: 'string' },
      token: { type: 'string' },
      'token-file': { type: 'string' },
      ca: { type: 'string' },
      devices: { type: 'string' },
      concurrency: { type: 'string' },
      faults: { type: 'string' },
      protocol: { type: 'string' },
      pattern: { type: 'string' },
      rate: { type: 'string' },
      'ramp-seconds': { type: 'string' },
      attestation: { type: 'string' },
      'keep-alive': { type: 'boolean' },
      'max-attempts': { type: 'string' },
      'backoff-base-ms': { type: 'string' },
      'backoff-cap-ms': { type: 'string' },
      'timeout-ms': { type: 'string' },
      seed: { type: 'string' },
      'no-cross-check': { type: 'boolean' },
      json: { type: 'boolean' },
      report: { type: 'string' },
      'no-color': { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  const help = Boolean(values.help);
  const base = { json: Boolean(values.json), reportFile: values.report, color: !values['no-color'] && !env.NO_COLOR, help };
  if (help) return { ...base, options: { target: '', token: '', devices: 0, concurrency: 0, faults: {} } };

  if (!values.target) throw new UsageError('--target https://HOST:PORT is required');
  try {
    const u = new URL(values.target);
    if (u.protocol !== 'https:') throw new Error();
  } catch {
    throw new UsageError(`--target must be an https:// URL (got "${values.target}")`);
  }
  const token = values.token ?? (values['token-file'] ? readFileSync(values['token-file'], 'utf8').trim() : env.FLEETPASS_ADMIN_TOKEN);
  if (!token) throw new UsageError('--token (or --token-file, or FLEETPASS_ADMIN_TOKEN) is required');
  const protocol = (values.protocol ?? 'https') as ProtocolName;
  if (!PROTOCOLS.includes(protocol)) throw new UsageError(`--protocol must be one of ${PROTOCOLS.join(', ')}`);
  const pattern = (values.pattern ?? 'burst') as ArrivalPattern;
  if (!PATTERNS.includes(pattern)) throw new UsageError(`--pattern must be one of ${PATTERNS.join(', ')}`);
  let rate: number | undefined;
  if (values.rate !== undefined) {
    rate = Number(values.rate);
    if (!Number.isFinite(rate) || rate <= 0) throw new UsageError(`--rate must be a positive number (got "${values.rate}")`);
  }
  let faults;
  try {
    faults = parseFaultSpec(values.faults ?? 'none');
  } catch (e) {
    if (e instanceof FaultSpecError) throw new UsageError(`--faults: ${e.message}`);
    throw e;
  }
  const options: Omit<SimulationOptions, 'progress'> = {
    target: values.target,
    token,
    ...(values.ca ? { caPem: readFileSync(values.ca, 'utf8') } : {}),
    devices: int(values.devices, 'devices', 1, 1000),
    concurrency: int(values.concurrency, 'concurrency', 1, 100),
    faults,
    protocol,
    pattern,
    ...(rate !== undefined ? { rate } : {}),
    rampSeconds: int(values['ramp-seconds'], 'ramp-seconds', 1, 30),
    mix: parseMix(values.attestation ?? 'mixed'),
    keepAlive: Boolean(values['keep-alive']),
    maxAttempts: int(values['max-attempts'], 'max-attempts', 1, 10),
    backoffBaseMs: int(values['backoff-base-ms'], 'backoff-base-ms', 1, 250),
    backoffCapMs: int(values['backoff-cap-ms'], 'backoff-cap-ms', 1, 30_000),
    timeoutMs: int(values['timeout-ms'], 'timeout-ms', 100, 30_000),
    ...(values.seed !== undefined ? { seed: int(values.seed, 'seed', 0, 0) } : {}),
    crossCheck: !values['no-cross-check'],
  };
  return { ...base, options };
}

/** Runs the command; resolves to the process exit code. */
export async function simulateCommand(argv: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseSimulateArgs(argv);
  } catch (e) {
    const code = (e as { code?: string }).code;
    if (e instanceof UsageError || code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION' || code === 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE' || code === 'ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL') {
      process.stderr.write(`fleetpass simulate: ${(e as Error).message}\nRun "fleetpass simulate --help" for the options.\n`);
      return 2;
    }
    throw e;
  }
  if (parsed.help) {
    process.stdout.write(SIMULATE_USAGE);
    return 0;
  }
  const progress = new ProgressLine(process.stderr);
  let report;
  try {
    report = await runSimulation({ ...parsed.options, progress });
  } catch (e) {
    progress.done();
    process.stderr.write(`fleetpass simulate: ${(e as Error).message}\n`);
    return 1;
  }
  if (parsed.reportFile) writeFileSync(parsed.reportFile, `${JSON.stringify(report, null, 2)}\n`);
  if (parsed.json) process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
  else process.stdout.write(formatReport(report, { color: parsed.color && Boolean(process.stdout.isTTY) }));
  return report.passed ? 0 : 1;
}
