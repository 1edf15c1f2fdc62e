import cluster, { type Worker } from 'node:cluster';
import { availableParallelism } from 'node:os';
import { databaseUrlOf, loadConfig } from '../config/load.js';
import type { FleetpassConfig } from '../config/schema.js';
import type { Fleetpass } from '../main.js';
import { createLogger } from '../observability/logger.js';
import { servePrimaryMetrics } from '../observability/cluster-metrics.js';
import { startWalCheckpointer } from '../storage/wal-checkpointer.js';

/** The server itself (Fastify, Kysely, the PKI…) is loaded only by processes that serve or prepare. */
const loadMain = () => import('../main.js');

/** Environment marker of the short-lived cluster child that does first-start work. */
const PREPARE_ROLE = 'FLEETPASS_CLUSTER_PREPARE';

type Flags = Record<string, string | boolean | undefined>;

function banner(config: Readonly<FleetpassConfig>, port: number, adminToken: string | null, adminTokenFile: string, workers: number): string {
  const url = `https://localhost:${port}`;
  const lines = [
    `Fleetpass is listening on ${url} (bound to ${config.host}:${port}, ${workers} worker process${workers === 1 ? '' : 'es'})`,
    `  CA bundle for devices:  ${url}/ca.pem`,
    `  admin API:              ${url}/admin/v1/  (OpenAPI: ${url}/admin/v1/openapi.json)`,
    `  data folder:            ${config.dataDir}`,
  ];
  if (adminToken) lines.push('', `  First start: admin API token (shown once, also saved to ${adminTokenFile}, mode 0600):`, `    ${adminToken}`);
  else lines.push(`  admin API token:        in ${adminTokenFile}`);
  return `${lines.join('\n')}\n`;
}

/** Graceful stop of one serving process: in-flight requests finish, then the store closes. */
function stopOnSignals(fp: Fleetpass, graceMs: number): void {
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    fp.log.info({ signal, pid: process.pid }, 'shutting down: finishing in-flight requests');
    const force = setTimeout(() => {
      fp.log.error(`in-flight requests did not finish within ${graceMs} ms; exiting`);
      process.exit(1);
    }, graceMs);
    force.unref();
    fp.close().then(
      () => process.exit(0),
      (e: unknown) => {
        fp.log.error({ err: e }, 'error during shutdown');
        process.exit(1);
      },
    );
  };
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGTERM', () => stop('SIGTERM'));
}

/**
 * Workers run with a smaller V8 young generation (8 MiB semi-spaces instead of 16): measured here,
 * ~50 MB less resident memory per worker during a burst and no change in onboardings/s — the
 * request path's garbage is short-lived and small. An operator's own --max-semi-space-size (command
 * line or NODE_OPTIONS) wins.
 */
function workerExecArgv(): string[] {
  const own = [...process.execArgv, ...(process.env.NODE_OPTIONS ?? '').split(/\s+/)];
  if (own.some((a) => a.startsWith('--max-semi-space-size'))) return process.execArgv;
  return [...process.execArgv, '--max-semi-space-size=8'];
}

function prepareInChild(): Promise<{ adminToken: string | null; adminTokenFile: string }> {
  return new Promise((resolve, reject) => {
    const child = cluster.fork({ [PREPARE_ROLE]: '1' });
    let result: { adminToken: string | null; adminTokenFile: string } | undefined;
    child.on('message', (m: { type?: string; adminToken?: string | null; adminTokenFile?: string }) => {
      if (m?.type === 'prepared' && m.adminTokenFile !== undefined) result = { adminToken: m.adminToken ?? null, adminTokenFile: m.adminTokenFile };
    });
    child.once('exit', (code, signal) => {
      if (result) resolve(result);
      else reject(new Error(`first-start preparation failed (exit code ${code ?? 'none'}${signal ? `, signal ${signal}` : ''}); its error is printed above`));
    });
  });
}

/**
 * `fleetpass serve`. With more than one worker, first-start work (migrations, tenant, admin token,
 * CA) runs once in a short-lived child; the primary then forks workers that share the port (each
 * accepts its own connections), restarts any that crash, and runs the one
 * background job (the SQLite WAL checkpointer) itself, not per worker.
 */
export async function serve(flags: Flags): Promise<void> {
  // The data folder holds the database (sealed secrets, token hashes) and keys: owner-only files.
  process.umask(0o077);
  const config = loadConfig({ flags });
  const workers = config.workers === 0 ? availableParallelism() : config.workers;

  if (cluster.isWorker && process.env[PREPARE_ROLE] === '1') {
    const { prepareFleetpass } = await loadMain();
    const prepared = await prepareFleetpass(config);
    process.send?.({ type: 'prepared', ...prepared }, () => process.exit(0));
    return;
  }
  if (cluster.isWorker) {
    const { startFleetpass } = await loadMain();
    const fp = await startFleetpass(config, { backgroundWork: false });
    process.send?.({ type: 'listening', port: fp.port });
    stopOnSignals(fp, config.shutdownGraceMs);
    return;
  }
  if (workers <= 1) {
    const { startFleetpass } = await loadMain();
    const fp = await startFleetpass(config);
    process.stdout.write(banner(config, fp.port, fp.adminToken, fp.adminTokenFile, 1));
    stopOnSignals(fp, config.shutdownGraceMs);
    return;
  }

  const log = createLogger(config.logLevel);
  // Workers accept from the shared listening socket themselves. Node's default on Linux has the
  // primary accept every connection and pass it to a worker over IPC: measured here ~0.3 ms of
  // primary CPU per device connection (each device opens a fresh one), and the workers stayed
  // evenly loaded without it. An operator's NODE_CLUSTER_SCHED_POLICY still wins.
  if (!process.env.NODE_CLUSTER_SCHED_POLICY) cluster.schedulingPolicy = cluster.SCHED_NONE;
  cluster.setupPrimary({ execArgv: workerExecArgv() });
  // First-start work (migrations, tenant, token, CA) runs in a child that exits when done: the
  // primary only hands out connections, aggregates metrics and checkpoints, and stays small
  // (~35 MB less resident than when it loaded the whole server to prepare).
  const prepared = await prepareInChild();
  // Background work runs here, once, not in every worker.
  const checkpointer = startWalCheckpointer(databaseUrlOf(config), (m) => log.warn({ err: m }, 'background WAL checkpoint failed'));
  let stopping = false;
  let announced = false;
  const crashes: number[] = [];
  const fork = (): Worker => {
    const w = cluster.fork();
    w.on('message', (m: { type?: string; port?: number }) => {
      if (m?.type === 'listening' && !announced && m.port !== undefined) {
        announced = true;
        process.stdout.write(banner(config, m.port, prepared.adminToken, prepared.adminTokenFile, workers));
      }
    });
    return w;
  };
  cluster.on('exit', (w, code, signal) => {
    if (stopping) {
      if (Object.keys(cluster.workers ?? {}).length === 0) void (checkpointer?.stop() ?? Promise.resolve()).finally(() => process.exit(0));
      return;
    }
    // A crash loop (5 in a minute) is a configuration or environment problem: stop instead of spinning.
    const now = Date.now();
    crashes.push(now);
    while (crashes.length && crashes[0]! < now - 60_000) crashes.shift();
    if (crashes.length >= 5) {
      log.fatal(`workers crashed ${crashes.length} times in a minute (last: pid ${w.process.pid}, code ${code}, signal ${signal}); stopping`);
      process.exit(1);
    }
    log.error({ pid: w.process.pid, code, signal }, 'worker exited; starting a new one');
    fork();
  });
  servePrimaryMetrics();
  for (let i = 0; i < workers; i++) fork();
  const stop = (signal: NodeJS.Signals) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, 'shutting down workers');
    for (const w of Object.values(cluster.workers ?? {})) w?.process.kill('SIGTERM');
    setTimeout(() => process.exit(1), config.shutdownGraceMs + 2000).unref();
  };
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGTERM', () => stop('SIGTERM'));
}
