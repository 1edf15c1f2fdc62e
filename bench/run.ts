/**
 * `npm run bench`: each figure next to a baseline measured in the same run on the same machine.
 *
 *  (a) onboardings/s, fresh mTLS connection per device  ÷  bare mTLS handshakes/s (same client, trivial Node server)
 *  (b) certificates/s over keep-alive (token attestation)  next to  `openssl speed ecdsap256` sign/s on one core
 *  (c) an N-device burst on the embedded defaults: wall time, p99, server peak RSS, unexpected failures,
 *      and wall time ÷ (N ÷ bare handshake rate)
 *  (d) (b) and (c) on PostgreSQL
 *  (e) (b) with --workers 2 ÷ --workers 1  next to  two copies of a Node program ÷ one, and what it
 *      is made of: CPU per certificate (/proc) and group-commit sizes (/metrics)
 *
 * Options: --burst N (default 100000), --devices N for (a)/(b)/(e) (default 10000), --only a,b,c,d,e,
 * --concurrency C (default 64), --burst-workers N for (c) and (d) (default: serve's default),
 * --warmup N devices run against each server of (a), (b), (d)'s (b) and (e) before it is measured
 * (default 2000), --rounds N: (b) and (e) alternate, N rounds of --devices each (default 3),
 * --json FILE. The server runs as a child process; the simulator and baselines in this one. Both
 * share the machine's cores, as they would in any single-box test.
 */
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { get as httpsGet } from 'node:https';
import { createServer as createNetServer } from 'node:net';
import { availableParallelism, cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import pg from 'pg';
import { runSimulation } from '../sim/simulate.js';
import type { SimulationReport } from '../sim/report.js';
import { createCa, issueFactoryCertificate, newEcKey, privateKeyPem } from '../sim/crypto.js';
import { exchange, resolveTarget } from '../sim/protocols/transport.js';

const CLI = new URL('../src/cli/index.js', import.meta.url).pathname;
const PG_URL = process.env.FLEETPASS_TEST_PG_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';

const { values: args } = parseArgs({
  options: {
    burst: { type: 'string', default: '100000' },
    devices: { type: 'string', default: '10000' },
    concurrency: { type: 'string', default: '64' },
    only: { type: 'string', default: 'a,b,c,d,e' },
    json: { type: 'string' },
    seconds: { type: 'string', default: '10' },
    'burst-workers': { type: 'string', default: '0' },
    warmup: { type: 'string', default: '2000' },
    rounds: { type: 'string', default: '3' },
  },
});
const BURST = Number(args.burst);
const DEVICES = Number(args.devices);
const CONCURRENCY = Number(args.concurrency);
const ONLY = new Set(args.only!.split(','));
const SECONDS = Number(args.seconds);
const BURST_WORKERS = Number(args['burst-workers']);
const WARMUP = Number(args.warmup);
const ROUNDS = Math.max(1, Number(args.rounds));

function log(msg: string): void {
  process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${msg}\n`);
}

async function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createNetServer();
    s.listen(0, '127.0.0.1', () => {
      const a = s.address();
      s.close(() => resolve(typeof a === 'object' && a ? a.port : 0));
    });
  });
}

// --- baselines ------------------------------------------------------------------------------------

/** One-core ECDSA P-256 sign rate as OpenSSL itself measures it. */
function opensslSignRate(): number {
  const out = execFileSync('openssl', ['speed', '-seconds', '3', 'ecdsap256'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
  const line = out.split('\n').find((l) => /256 bits ecdsa \(nistp256\)/.test(l));
  const m = line && /([\d.]+)\s+([\d.]+)\s*$/.exec(line.trim());
  if (!m) throw new Error(`cannot parse openssl speed output:\n${out}`);
  return Number(m[1]);
}

interface BaselineFixture {
  dir: string;
  devices: Array<{ certPem: string; keyPem: string }>;
}
let fixture: BaselineFixture | undefined;

/**
 * What the trivial server presents and who connects to it, made once. The server's certificate has
 * the shape of Fleetpass's own: a P-256 leaf for localhost from a P-256 issuing CA, sent together,
 * under a root that is not sent (a self-signed certificate instead spares the client a chain to
 * decode and a signature to check, ~0.4 ms of its CPU per handshake here). The devices are x509
 * devices as the simulator makes them: their own P-256 key and factory certificate each.
 */
async function baselineFixture(): Promise<BaselineFixture> {
  if (fixture) return fixture;
  const dir = mkdtempSync(join(tmpdir(), 'fp-bench-'));
  const openssl = (...a: string[]) => execFileSync('openssl', a, { cwd: dir, stdio: 'ignore' });
  const p256 = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];
  openssl('req', '-x509', ...p256, '-keyout', 'root.key', '-out', 'root.pem', '-days', '2', '-subj', '/O=Bench/CN=Bench Root CA');
  openssl('req', ...p256, '-keyout', 'issuing.key', '-out', 'issuing.csr', '-subj', '/O=Bench/CN=Bench Issuing CA');
  writeFileSync(join(dir, 'issuing.ext'), 'basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\n');
  openssl('x509', '-req', '-in', 'issuing.csr', '-CA', 'root.pem', '-CAkey', 'root.key', '-set_serial', '1', '-out', 'issuing.pem', '-days', '2', '-extfile', 'issuing.ext');
  openssl('req', ...p256, '-keyout', 'server.key', '-out', 'server.csr', '-subj', '/O=Bench server/CN=localhost');
  writeFileSync(join(dir, 'server.ext'), 'subjectAltName=DNS:localhost,IP:127.0.0.1\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n');
  openssl('x509', '-req', '-in', 'server.csr', '-CA', 'issuing.pem', '-CAkey', 'issuing.key', '-set_serial', '2', '-out', 'server.pem', '-days', '2', '-extfile', 'server.ext');
  const read = (f: string) => readFileSync(join(dir, f), 'utf8');
  writeFileSync(join(dir, 'chain.pem'), read('server.pem') + read('issuing.pem'));
  writeFileSync(join(dir, 'bundle.pem'), read('root.pem') + read('issuing.pem'));
  const factory = await createCa('Bench', 'Bench Factory CA');
  const devices = await Promise.all(
    Array.from({ length: 2000 }, async (_, i) => {
      const key = await newEcKey();
      return { certPem: issueFactoryCertificate(factory, key.spki, `bench-${i}`, new Date(Date.now() - 3600_000), new Date(Date.now() + 86400_000)), keyPem: privateKeyPem(key) };
    }),
  );
  fixture = { dir, devices };
  process.once('exit', () => rmSync(dir, { recursive: true, force: true }));
  return fixture;
}

/**
 * Bare mTLS handshakes/s: a trivial Node HTTPS server in a child process (one process, client
 * certificate requested as Fleetpass does, a two-byte answer), and the simulator's own transport as
 * the client (sim/protocols/transport.ts: a fresh connection per request, the device's certificate,
 * the server checked against the pinned bundle), CONCURRENCY at once, for SECONDS after a warm-up of
 * up to 3 s (unless --warmup 0).
 */
/** CPU ms per handshake of each baseline reading: the trivial server's and the client's (this process). */
const handshakeCpu: Array<{ serverMs: number; clientMs: number }> = [];

async function handshakeBaseline(): Promise<number> {
  const { dir, devices } = await baselineFixture();
  const port = await freePort();
  const serverSrc = `
    const https = require('node:https'); const fs = require('node:fs');
    https.createServer({ key: fs.readFileSync(${JSON.stringify(join(dir, 'server.key'))}), cert: fs.readFileSync(${JSON.stringify(join(dir, 'chain.pem'))}), requestCert: true, rejectUnauthorized: false, minVersion: 'TLSv1.2' },
      (req, res) => { req.resume(); req.on('end', () => res.end('{}')); }).listen(${port}, '127.0.0.1', () => process.send('ready'));`;
  const child = spawn(process.execPath, ['-e', serverSrc], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  try {
    await new Promise<void>((r) => child.once('message', () => r()));
    const target = await resolveTarget({ url: new URL(`https://localhost:${port}`), caPem: readFileSync(join(dir, 'bundle.pem'), 'utf8'), keepAlive: false, maxSockets: CONCURRENCY });
    let next = 0;
    const handshakes = async (seconds: number): Promise<number> => {
      let done = 0;
      const until = Date.now() + seconds * 1000;
      await Promise.all(
        Array.from({ length: CONCURRENCY }, async () => {
          while (Date.now() < until) {
            const device = devices[next++ % devices.length]!;
            const r = await exchange(target, { method: 'POST', path: '/', headers: {}, body: '{}', clientCertificate: device, resetBeforeSend: false, timeoutMs: 30_000 });
            if (!r.ok || r.status !== 200) throw new Error(`baseline handshake failed: ${JSON.stringify(r)}`);
            done++;
          }
        }),
      );
      return done;
    };
    // Warmed up as the servers under test are (warmUp): a few seconds, not measured.
    if (WARMUP > 0) await handshakes(Math.min(3, SECONDS));
    const [serverBefore, clientBefore] = [cpuMsOf(child.pid!), ownCpuMs()];
    const done = await handshakes(SECONDS);
    handshakeCpu.push({ serverMs: (cpuMsOf(child.pid!) - serverBefore) / done, clientMs: (ownCpuMs() - clientBefore) / done });
    return done / SECONDS;
  } finally {
    child.kill();
  }
}

/**
 * How this machine scales one CPU- and memory-bound Node program from one process to two: the same
 * program (JSON, object churn, ECDSA signatures, ~1.5 s) run alone and as two copies at once, in
 * alternation (1 2 2 1 1 2). Two copies do 2.0× the work of one only if the cores share nothing
 * that binds; (e) cannot beat this, and the simulator's share of the cores comes on top.
 */
async function processScaling(): Promise<number> {
  const src = `
    const { generateKeyPairSync, sign } = require('node:crypto');
    const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const records = Array.from({ length: 20000 }, (_, i) => ({ id: 'dev_' + i, registrationId: 'sensor-' + i, attributes: { model: 'm' + (i % 7), region: 'eu' }, csr: 'x'.repeat(500 + (i % 100)) }));
    const t0 = performance.now();
    let x = 0;
    for (let r = 0; r < 80; r++) {
      const from = (r * 2000) % 18000;
      const text = JSON.stringify(records.slice(from, from + 2000));
      const byId = new Map();
      for (const e of JSON.parse(text)) byId.set(e.id, { ...e, seen: r });
      for (let k = 0; k < 100; k++) x += sign('sha256', Buffer.from(text.slice(k * 50, k * 50 + 200)), privateKey).length;
      x += byId.size;
    }
    process.stdout.write(String(performance.now() - t0));`;
  const runOnce = () =>
    new Promise<number>((resolve, reject) => {
      execFile(process.execPath, ['-e', src], (err, stdout) => (err ? reject(err) : resolve(Number(stdout))));
    });
  const ms = { 1: 0, 2: 0 };
  for (const copies of [1, 2, 2, 1, 1, 2] as const) {
    const times = await Promise.all(Array.from({ length: copies }, runOnce));
    ms[copies] += times.reduce((a, b) => a + b, 0) / copies;
  }
  return (2 * ms[1]) / ms[2];
}

// --- the server under test ------------------------------------------------------------------------

interface Server {
  url: string;
  token: string;
  child: ChildProcess;
  peakRssMb(): number;
  stop(): Promise<void>;
}

function rssKbOf(pid: number): number {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    return Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0);
  } catch {
    return 0;
  }
}

function childrenOf(pid: number): number[] {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

const CLK_TCK = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;

/** CPU time (user + system) in ms of a process, all its threads, or of its main thread alone. */
function cpuMsOf(pid: number, mainThreadOnly = false): number {
  try {
    const stat = readFileSync(mainThreadOnly ? `/proc/${pid}/task/${pid}/stat` : `/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' '); // fields from the 3rd on: utime is the 14th
    return ((Number(f[11]) + Number(f[12])) * 1000) / CLK_TCK;
  } catch {
    return 0;
  }
}

/** The server's group-commit counters from /metrics (summed over its workers). */
async function storeCounters(server: Server): Promise<{ transactions: number; databaseTransactions: number }> {
  const text = await new Promise<string>((resolve, reject) => {
    httpsGet(`${server.url}/metrics`, { rejectUnauthorized: false, agent: false }, (res) => {
      let body = '';
      res.on('data', (c: Buffer) => (body += c.toString()));
      res.on('end', () => resolve(body));
    }).on('error', reject);
  });
  const read = (name: string) => Number(new RegExp(`^${name} (\\d+)$`, 'm').exec(text)?.[1] ?? NaN);
  return { transactions: read('fleetpass_store_transactions_total'), databaseTransactions: read('fleetpass_store_database_transactions_total') };
}

interface CpuSnapshot {
  /** The server: every process and thread. */
  server: number;
  /** Main thread of each serving process (the workers; with one worker, the server process), by pid. */
  mainThreads: Map<number, number>;
  /** This process: the simulator (and the RSS sampler, which costs next to nothing). */
  simulator: number;
}

function ownCpuMs(): number {
  const own = process.cpuUsage();
  return (own.user + own.system) / 1000;
}

function cpuSnapshot(server: Server): CpuSnapshot {
  const primary = server.child.pid!;
  const workers = childrenOf(primary);
  return {
    server: [primary, ...workers].reduce((sum, p) => sum + cpuMsOf(p), 0),
    mainThreads: new Map((workers.length > 0 ? workers : [primary]).map((p) => [p, cpuMsOf(p, true)])),
    simulator: ownCpuMs(),
  };
}

/** CPU spent between two snapshots: the server's, its busiest serving main thread's, the simulator's. */
function cpuSpent(a: CpuSnapshot, b: CpuSnapshot): { server: number; busiestMainThread: number; simulator: number } {
  let busiest = 0;
  for (const [pid, ms] of b.mainThreads) busiest = Math.max(busiest, ms - (a.mainThreads.get(pid) ?? ms));
  return { server: b.server - a.server, busiestMainThread: busiest, simulator: b.simulator - a.simulator };
}

async function startServer(opts: { workers: number; databaseUrl?: string; extra?: string[] }): Promise<Server> {
  const dir = mkdtempSync(join(tmpdir(), 'fp-bench-data-'));
  const port = await freePort();
  const argv = [CLI, 'serve', '--port', String(port), '--host', '127.0.0.1', '--data-dir', dir, '--workers', String(opts.workers), '--log-level', 'warn', ...(opts.databaseUrl ? ['--database-url', opts.databaseUrl] : []), ...(opts.extra ?? [])];
  const child = spawn(process.execPath, argv, { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, FLEETPASS_KEY_PASSPHRASE: 'bench' } });
  let out = '';
  child.stdout!.on('data', (c: Buffer) => (out += c.toString()));
  for (let i = 0; i < 300 && !/listening on/.test(out); i++) await new Promise((r) => setTimeout(r, 100));
  if (!/listening on/.test(out)) throw new Error(`server did not start:\n${out}`);
  await new Promise((r) => setTimeout(r, 1500)); // let every worker finish listening
  const token = readFileSync(join(dir, 'admin.token'), 'utf8').trim();
  let peak = 0;
  let stopped: Promise<void> | undefined;
  const sample = setInterval(() => {
    const pids = [child.pid!, ...childrenOf(child.pid!)];
    peak = Math.max(peak, pids.reduce((s, p) => s + rssKbOf(p), 0));
  }, 200);
  return {
    url: `https://localhost:${port}`,
    token,
    child,
    peakRssMb: () => peak / 1024,
    stop() {
      stopped ??= (async () => {
        clearInterval(sample);
        if (child.exitCode === null && child.signalCode === null) {
          const exited = new Promise((r) => child.once('exit', r));
          child.kill('SIGTERM');
          await exited;
        }
        rmSync(dir, { recursive: true, force: true });
      })();
      return stopped;
    },
  };
}

async function freshPgDatabase(): Promise<{ url: string; drop(): Promise<void> }> {
  const name = `fleetpass_bench_${process.pid}_${randomBytes(3).toString('hex')}`;
  const admin = new pg.Client({ connectionString: PG_URL });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${name}`);
  await admin.end();
  const u = new URL(PG_URL);
  u.pathname = `/${name}`;
  return {
    url: u.toString(),
    async drop() {
      const c = new pg.Client({ connectionString: PG_URL });
      await c.connect();
      await c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      await c.end();
    },
  };
}

async function simulate(server: Server, o: { devices: number; mix: Record<string, number>; keepAlive: boolean; concurrency: number; hooks?: { afterSetup: () => Promise<void>; afterRun: () => void } }): Promise<SimulationReport> {
  return runSimulation({
    ...(o.hooks ? { hooks: o.hooks } : {}),
    target: server.url,
    token: server.token,
    devices: o.devices,
    concurrency: o.concurrency,
    faults: {},
    mix: { x509: 0, 'symmetric-key': 0, token: 0, ...o.mix },
    keepAlive: o.keepAlive,
    pattern: 'burst',
    crossCheck: false,
    maxAttempts: 50,
  } as Parameters<typeof runSimulation>[0]);
}

function unexpected(r: SimulationReport): number {
  return r.devices.wronglyRejected + r.devices.rejectedWithWrongCode + r.devices.wronglyAccepted + r.devices.lost;
}

// --- the run --------------------------------------------------------------------------------------

const results: Record<string, unknown> = {
  date: new Date().toISOString(),
  machine: { cores: availableParallelism(), cpu: cpus()[0]?.model, node: process.version, openssl: execFileSync('openssl', ['version'], { encoding: 'utf8' }).trim() },
  params: { burst: BURST, devices: DEVICES, concurrency: CONCURRENCY },
};
const lines: string[] = [];
const say = (s: string) => {
  lines.push(s);
  process.stdout.write(`${s}\n`);
};

// This virtual machine's speed drifts by ±20 % within minutes, so the handshake baseline is measured
// before and after (a) and the figures use the mean; both readings are printed.
log('measuring bare mTLS handshakes (baseline for a and c)');
const handshakeReadings = [await handshakeBaseline()];
let handshakes = handshakeReadings[0]!;
results.handshakesPerSecond = handshakes;
say(`baseline: bare mTLS handshakes/s (fresh connection, trivial Node server): ${handshakes.toFixed(0)}`);

let signRate = 0;
if (ONLY.has('b') || ONLY.has('d') || ONLY.has('e')) {
  log('openssl speed ecdsap256');
  signRate = opensslSignRate();
  results.opensslSignPerSecond = signRate;
  say(`baseline: openssl speed ecdsap256 sign/s, one core: ${signRate.toFixed(0)}`);
}

/**
 * A short run of the same kind against a fresh server before the one that is measured: every worker
 * process compiles its hot code on its own, so without it a short run with two workers pays the JIT
 * twice and measures warm-up more than throughput (e: 1.18–1.22 with 10,000 devices cold, against
 * 1.37–1.38 with 30,000). (c) is not warmed: a burst on a server that just started is its point.
 */
async function warmUp(server: Server, label: string, mix: Record<string, number>, keepAlive: boolean): Promise<void> {
  if (WARMUP <= 0) return;
  log(`(${label}) warm-up: ${WARMUP} devices, not measured`);
  const r = await simulate(server, { devices: WARMUP, mix, keepAlive, concurrency: CONCURRENCY });
  if (unexpected(r) > 0) say(`  WARNING: ${unexpected(r)} unexpected outcomes in the warm-up of (${label})`);
}

async function figureB(label: string, workers: number, databaseUrl?: string): Promise<number> {
  const server = await startServer({ workers, ...(databaseUrl ? { databaseUrl } : {}) });
  try {
    await warmUp(server, label, { token: 1 }, true);
    log(`(${label}) ${DEVICES} token devices over keep-alive, workers=${workers}${databaseUrl ? ', PostgreSQL' : ''}`);
    const r = await simulate(server, { devices: DEVICES, mix: { token: 1 }, keepAlive: true, concurrency: CONCURRENCY });
    if (unexpected(r) > 0) say(`  WARNING: ${unexpected(r)} unexpected outcomes in (${label})`);
    return r.onboardedPerSecond;
  } finally {
    await server.stop();
  }
}

/** Totals over the measured rounds of one server: devices, run time, CPU ms, store transactions. */
interface Accounting {
  devices: number;
  seconds: number;
  serverMs: number;
  busiestMainThreadMs: number;
  simulatorMs: number;
  storeTransactions: number;
  databaseTransactions: number;
}

interface FiguresBE {
  workers1: number;
  workers2: number;
  ratio: number;
  roundRatios: number[];
  /** Per certificate, ms of CPU: what (e) is made of (see explainE). */
  perCertificate: Record<'workers1' | 'workers2', { serverMs: number; busiestMainThreadMs: number; simulatorMs: number }>;
  /** One worker: share of the run its main thread was busy. Two workers: share of all cores busy with server and simulator. */
  utilisation: { workers1MainThread: number; workers2Cores: number };
  /** Store transactions per database transaction (group commit), over the measured rounds. */
  groupSize: { workers1: number; workers2: number };
}

/**
 * (b) and (e) together: a server with one worker and one with two, both warmed up, then measured in
 * alternating rounds of --devices each (1 2, 2 1, 1 2, …). This VM's speed drifts by 20 % and more
 * within minutes; measured one after the other, the two servers read 1.36 and 1.54 in consecutive
 * runs of the same build. Each rate is devices over run time summed across the rounds.
 *
 * CPU is read from /proc around each run (from the end of setup to the last answer), so that the
 * report can say what (e) is made of: one worker is bound by its main thread, two by all the cores,
 * which they share with the simulator.
 */
async function figuresBE(): Promise<FiguresBE> {
  const servers = new Map<number, Server>();
  try {
    for (const workers of [1, 2]) {
      const server = await startServer({ workers });
      servers.set(workers, server);
      await warmUp(server, `e, --workers ${workers}`, { token: 1 }, true);
    }
    const total = new Map<number, Accounting>([1, 2].map((w) => [w, { devices: 0, seconds: 0, serverMs: 0, busiestMainThreadMs: 0, simulatorMs: 0, storeTransactions: 0, databaseTransactions: 0 }]));
    const roundRatios: number[] = [];
    for (let round = 0; round < ROUNDS; round++) {
      const rate = new Map<number, number>();
      for (const workers of round % 2 === 0 ? [1, 2] : [2, 1]) {
        log(`(b/e) round ${round + 1} of ${ROUNDS}: ${DEVICES} token devices over keep-alive, --workers ${workers}`);
        const server = servers.get(workers)!;
        let before: CpuSnapshot | undefined;
        let after: CpuSnapshot | undefined;
        let countersBefore = { transactions: NaN, databaseTransactions: NaN };
        const hooks = {
          afterSetup: async () => {
            countersBefore = await storeCounters(server);
            before = cpuSnapshot(server);
          },
          afterRun: () => {
            after = cpuSnapshot(server);
          },
        };
        const r = await simulate(server, { devices: DEVICES, mix: { token: 1 }, keepAlive: true, concurrency: CONCURRENCY, hooks });
        if (unexpected(r) > 0) say(`  WARNING: ${unexpected(r)} unexpected outcomes in (b/e), --workers ${workers}`);
        // Only the certificate check (the simulator's alone) ran between the last answer and here.
        const countersAfter = await storeCounters(server);
        const t = total.get(workers)!;
        t.storeTransactions += countersAfter.transactions - countersBefore.transactions;
        t.databaseTransactions += countersAfter.databaseTransactions - countersBefore.databaseTransactions;
        t.devices += r.devices.onboarded;
        t.seconds += r.timingsMs.run / 1000;
        if (before && after) {
          const spent = cpuSpent(before, after);
          t.serverMs += spent.server;
          t.busiestMainThreadMs += spent.busiestMainThread;
          t.simulatorMs += spent.simulator;
        }
        rate.set(workers, r.onboardedPerSecond);
      }
      roundRatios.push(rate.get(2)! / rate.get(1)!);
    }
    const per = (w: number) => {
      const t = total.get(w)!;
      return { serverMs: t.serverMs / t.devices, busiestMainThreadMs: t.busiestMainThreadMs / t.devices, simulatorMs: t.simulatorMs / t.devices };
    };
    const [one, two] = [1, 2].map((w) => total.get(w)!.devices / total.get(w)!.seconds) as [number, number];
    const t1 = total.get(1)!;
    const t2 = total.get(2)!;
    return {
      workers1: one,
      workers2: two,
      ratio: two / one,
      roundRatios,
      perCertificate: { workers1: per(1), workers2: per(2) },
      groupSize: { workers1: t1.storeTransactions / t1.databaseTransactions, workers2: t2.storeTransactions / t2.databaseTransactions },
      utilisation: {
        workers1MainThread: t1.busiestMainThreadMs / (t1.seconds * 1000),
        workers2Cores: (t2.serverMs + t2.simulatorMs) / (t2.seconds * 1000 * availableParallelism()),
      },
    };
  } finally {
    for (const server of servers.values()) await server.stop();
  }
}

/**
 * (e) as the product of what it is made of, an identity rather than a model: one worker completes
 * (its main thread's busy share) ÷ (main-thread ms per certificate) certificates per ms, two complete
 * (cores × their busy share) ÷ (server + simulator ms per certificate).
 */
function explainE(e: FiguresBE): string {
  const cores = availableParallelism();
  const m1 = e.perCertificate.workers1.busiestMainThreadMs;
  const { serverMs: s2, simulatorMs: c2 } = e.perCertificate.workers2;
  const u1 = e.utilisation.workers1MainThread;
  const u2 = e.utilisation.workers2Cores;
  const c1 = e.perCertificate.workers1.simulatorMs;
  const f = (x: number) => x.toFixed(2);
  const pct = (ratio: number) => `${ratio >= 1 ? '+' : '−'}${Math.abs((ratio - 1) * 100).toFixed(0)} %`;
  return [
    `    one worker: ${f(m1)} ms of its main thread per certificate (${(u1 * 100).toFixed(0)} % busy); server ${f(e.perCertificate.workers1.serverMs)} ms in all, simulator ${f(e.perCertificate.workers1.simulatorMs)} ms`,
    `    two workers: ${f(s2)} ms of server CPU + ${f(c2)} ms of simulator CPU per certificate on ${cores} cores (${(u2 * 100).toFixed(0)} % busy)`,
    `    (e) = ${cores} × ${f(m1)} ÷ (${f(s2)} + ${f(c2)}) × ${f(u2)} ÷ ${f(u1)} = ${f(((cores * m1) / (s2 + c2)) * (u2 / u1))}`,
    // The simulator does the same work against either server: what it costs more is the machine's
    // price for three busy processes on two cores, which the workers pay as well.
    `    group commit: ${e.groupSize.workers1.toFixed(1)} store transactions per database transaction with one worker, ${e.groupSize.workers2.toFixed(1)} with two`,
    `    with two workers the simulator needed ${pct(c2 / c1)} CPU per certificate for the same work, the server ${pct(s2 / e.perCertificate.workers1.serverMs)}`,
  ].join('\n');
}

async function figureC(label: string, databaseUrl?: string): Promise<Record<string, number>> {
  const server = await startServer({ workers: BURST_WORKERS, ...(databaseUrl ? { databaseUrl } : {}) });
  try {
    log(`(${label}) ${BURST}-device burst, fresh mTLS per device${databaseUrl ? ', PostgreSQL' : ', embedded defaults'}, --workers ${BURST_WORKERS === 0 ? 'default' : BURST_WORKERS}`);
    const started = Date.now();
    const r = await simulate(server, { devices: BURST, mix: { x509: 1 }, keepAlive: false, concurrency: CONCURRENCY });
    const wall = r.timingsMs.run / 1000;
    const bound = BURST / handshakes;
    return {
      wallSeconds: wall,
      totalSecondsIncludingSetup: (Date.now() - started) / 1000,
      p99Ms: r.timeToOnboardMs?.p99 ?? NaN,
      peakRssMb: server.peakRssMb(),
      unexpectedFailures: unexpected(r),
      onboarded: r.devices.onboarded,
      ratioToHandshakeBound: wall / bound,
    };
  } finally {
    await server.stop();
  }
}

if (ONLY.has('a')) {
  // One server process, like the trivial server of the baseline; then the default, one worker per
  // core (here the simulator needs the same cores, so that is not always faster). The baseline is
  // measured again after each run, and each run is divided by the mean of the readings on either
  // side of it: this VM's handshake rate moved from 243 to 176 within one two-minute (a).
  const runs: ARun[] = [];
  for (const workers of [1, 0]) {
    const server = await startServer({ workers });
    try {
      await warmUp(server, 'a', { x509: 1 }, false);
      log(`(a) ${DEVICES} x509 devices, fresh mTLS connection each, --workers ${workers === 0 ? `${availableParallelism()} (default)` : workers}`);
      let before: CpuSnapshot | undefined;
      let after: CpuSnapshot | undefined;
      const hooks = { afterSetup: async () => void (before = cpuSnapshot(server)), afterRun: () => void (after = cpuSnapshot(server)) };
      const r = await simulate(server, { devices: DEVICES, mix: { x509: 1 }, keepAlive: false, concurrency: CONCURRENCY, hooks });
      const spent = before && after ? cpuSpent(before, after) : { server: NaN, simulator: NaN };
      runs.push({
        workers: workers === 0 ? availableParallelism() : workers,
        onboardingsPerSecond: r.onboardedPerSecond,
        unexpected: unexpected(r),
        serverMs: spent.server / r.devices.onboarded,
        simulatorMs: spent.simulator / r.devices.onboarded,
        baseline: NaN,
      });
    } finally {
      await server.stop();
    }
    log('measuring bare mTLS handshakes again');
    handshakeReadings.push(await handshakeBaseline());
    const run = runs.at(-1)!;
    run.baseline = (handshakeReadings.at(-2)! + handshakeReadings.at(-1)!) / 2;
  }
  handshakes = handshakeReadings.reduce((a, b) => a + b, 0) / handshakeReadings.length;
  results.handshakesPerSecond = handshakes;
  results.handshakeReadings = handshakeReadings;
  results.handshakeCpu = handshakeCpu;
  say(`baseline again after each (a) run: ${handshakeReadings.slice(1).map((h) => h.toFixed(0)).join(', ')} handshakes/s; mean of all readings (for c): ${handshakes.toFixed(0)}`);
  results.a = runs.map((r) => ({ ...r, ratio: r.onboardingsPerSecond / r.baseline }));
  for (const r of runs) {
    say(`(a) onboardings/s, fresh mTLS each, --workers ${r.workers}: ${r.onboardingsPerSecond.toFixed(0)}  ÷ handshakes/s ${r.baseline.toFixed(0)} (the readings either side) = ${(r.onboardingsPerSecond / r.baseline).toFixed(2)}  (goal ≥ 0.8)${r.unexpected ? `  WARNING: ${r.unexpected} unexpected outcomes` : ''}`);
  }
  say(explainA(runs));
}

interface ARun {
  workers: number;
  onboardingsPerSecond: number;
  unexpected: number;
  /** CPU ms per onboarding: the server's (all processes and threads) and the simulator's. */
  serverMs: number;
  simulatorMs: number;
  /** Handshakes/s: the mean of the baseline readings just before and just after this run. */
  baseline: number;
}

/**
 * What (a) is made of: CPU per connection of the client (the simulator, this process) and of the
 * server, in the baseline (mean of its readings) and in each (a) run. The client is one thread and
 * near 100 % busy in both, so it binds both rates, and the ratio of its ms per connection is (a)
 * with the VM's drift taken out.
 */
function explainA(runs: ARun[]): string {
  const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
  const base = { serverMs: mean(handshakeCpu.map((h) => h.serverMs)), clientMs: mean(handshakeCpu.map((h) => h.clientMs)) };
  const f = (x: number) => x.toFixed(2);
  const busy = (ms: number, perSecond: number) => `${((ms * perSecond) / 10).toFixed(0)} %`;
  return [
    `    baseline: client ${f(base.clientMs)} ms + trivial server ${f(base.serverMs)} ms of CPU per handshake (client ${busy(base.clientMs, handshakes)} busy at the mean rate)`,
    ...runs.map(
      (r) =>
        `    --workers ${r.workers}: client ${f(r.simulatorMs)} ms (${busy(r.simulatorMs, r.onboardingsPerSecond)} busy) + server ${f(r.serverMs)} ms per onboarding, cores ${(((r.simulatorMs + r.serverMs) * r.onboardingsPerSecond) / 10 / availableParallelism()).toFixed(0)} % busy; client ms per baseline handshake ÷ per onboarding = ${f(base.clientMs / r.simulatorMs)}`,
    ),
  ].join('\n');
}
let bSqlite1 = 0;
let e: FiguresBE | undefined;
let scaling = NaN;
if (ONLY.has('e')) {
  log('two copies of a Node program against one (baseline for e)');
  scaling = await processScaling();
  results.processScaling = scaling;
  say(`baseline: two copies of one memory-bound Node program do ${scaling.toFixed(2)}× the work of one (this machine's ceiling for e)`);
  e = await figuresBE();
  bSqlite1 = e.workers1;
} else if (ONLY.has('b')) {
  bSqlite1 = await figureB('b', 1);
}
if (ONLY.has('b') || ONLY.has('e')) {
  results.b = { certificatesPerSecond: bSqlite1, opensslSignPerSecond: signRate, ratio: bSqlite1 / signRate };
  say(`(b) certificates/s over keep-alive (token, SQLite, 1 worker): ${bSqlite1.toFixed(0)}  vs openssl sign/s ${signRate.toFixed(0)} (${((bSqlite1 / signRate) * 100).toFixed(1)}%)`);
}
if (ONLY.has('c')) {
  const c = await figureC('c');
  results.c = c;
  say(`(c) ${BURST} burst, SQLite, --workers ${BURST_WORKERS === 0 ? availableParallelism() : BURST_WORKERS}: wall ${c.wallSeconds!.toFixed(1)} s, p99 ${c.p99Ms!.toFixed(0)} ms, server peak RSS ${c.peakRssMb!.toFixed(0)} MB, unexpected failures ${c.unexpectedFailures}, wall ÷ handshake-bound = ${c.ratioToHandshakeBound!.toFixed(2)} (goal ≤ 1.25, RSS < 400 MB, 0 failures)`);
}
if (ONLY.has('d')) {
  const db1 = await freshPgDatabase();
  try {
    const b = await figureB('d/b', 1, db1.url);
    results.dB = { certificatesPerSecond: b, ratio: b / signRate };
    say(`(d) (b) on PostgreSQL: ${b.toFixed(0)} certificates/s  vs openssl sign/s ${signRate.toFixed(0)}`);
  } finally {
    await db1.drop();
  }
  const db2 = await freshPgDatabase();
  try {
    const c = await figureC('d/c', db2.url);
    results.dC = c;
    say(`(d) (c) on PostgreSQL: wall ${c.wallSeconds!.toFixed(1)} s, p99 ${c.p99Ms!.toFixed(0)} ms, peak RSS ${c.peakRssMb!.toFixed(0)} MB, unexpected ${c.unexpectedFailures}, ÷ handshake-bound = ${c.ratioToHandshakeBound!.toFixed(2)}`);
  } finally {
    await db2.drop();
  }
}
if (e) {
  results.e = e;
  say(`(e) (b) with --workers 2 ÷ --workers 1: ${e.workers2.toFixed(0)} ÷ ${e.workers1.toFixed(0)} = ${e.ratio.toFixed(2)}  (goal ≥ 1.6; ${e.roundRatios.length} rounds: ${e.roundRatios.map((r) => r.toFixed(2)).join(', ')})`);
  say(explainE(e));
  say(`    against the machine's own two-process scaling (${scaling.toFixed(2)}): ${(e.ratio / scaling).toFixed(2)}`);
}
if (args.json) writeFileSync(args.json, JSON.stringify(results, null, 2));
log('done');
