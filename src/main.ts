/** Wiring only: config → key manager → storage → services → transports; graceful close. */
import cluster from 'node:cluster';
import { mkdirSync, writeFileSync, chmodSync } from 'node:fs';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import { systemClock, type Clock } from './core/clock.js';
import { databaseUrlOf, publicUrlOf } from './config/load.js';
import type { FleetpassConfig } from './config/schema.js';
import { SoftKeyManager } from './kms/index.js';
import { openStore } from './storage/index.js';
import { ConfigCache } from './registry/config-cache.js';
import type { Store } from './registry/store.js';
import { RegistryService } from './registry/service.js';
import { AdmissionControl } from './provisioning/admission.js';
import { Attestor } from './provisioning/attestation.js';
import { openAuthority, type CertificateAuthority } from './provisioning/authority.js';
import { ProvisioningPipeline } from './provisioning/pipeline.js';
import { LifecycleService } from './lifecycle/service.js';
import { Metrics } from './observability/metrics.js';
import { createLogger } from './observability/logger.js';
import { workerMetricsSource } from './observability/cluster-metrics.js';
import { buildHttpApp } from './transports/http/app.js';

export interface Fleetpass {
  url: string;
  port: number;
  app: FastifyInstance;
  store: Store;
  authority: CertificateAuthority;
  registry: RegistryService;
  /** Set only on the very first start. */
  adminToken: string | null;
  adminTokenFile: string;
  tenantId: string;
  log: Logger;
  close(): Promise<void>;
}

interface Core {
  store: Store;
  keys: SoftKeyManager;
  registry: RegistryService;
  authority: CertificateAuthority;
  tenantId: string;
  adminToken: string | null;
  adminTokenFile: string;
  publicUrl: string;
  closers: Array<() => Promise<void>>;
}

/** Store (migrated), keys, first tenant and admin token, CA: everything a process needs before serving. */
async function openCore(config: Readonly<FleetpassConfig>, clock: Clock, log: Logger, backgroundWork = true): Promise<Core> {
  mkdirSync(config.dataDir, { recursive: true, mode: 0o700 });
  const store = await openStore({
    url: databaseUrlOf(config),
    poolSize: config.dbPoolSize,
    preparedStatements: config.dbPreparedStatements,
    migrate: true,
    sqliteCheckpoints: backgroundWork ? 'background' : 'elsewhere',
    onCheckpointError: (m) => log.warn({ err: m }, 'background WAL checkpoint failed'),
  });
  const closers: Array<() => Promise<void>> = [() => store.close()];
  try {
    const keys = await SoftKeyManager.open({
      dataDir: config.dataDir,
      ...(config.keyPassphrase ? { passphrase: config.keyPassphrase } : {}),
      logger: { warn: (m: string) => log.warn(m) },
      // Encrypted key files are replicated into the database so that processes sharing it share the CA.
      blobs: { getKeyBlob: (id) => store.getSetting(`kms.soft.${id}`), putKeyBlob: async (id, pem) => void (await store.putSettingIfAbsent(`kms.soft.${id}`, pem)) },
    });
    closers.unshift(() => keys.close());
    const registry = new RegistryService({ store, secrets: keys, clock, tokenTtlHours: config.enrollmentTokenTtlHours });
    const boot = await registry.bootstrap(config.initialTenantName);
    const adminTokenFile = join(config.dataDir, 'admin.token');
    if (boot.adminToken) {
      writeFileSync(adminTokenFile, `${boot.adminToken}\n`, { mode: 0o600 });
      chmodSync(adminTokenFile, 0o600);
    }
    // Device certificates name the CRL by the public URL, so it must be known before the first issue.
    const publicUrl = publicUrlOf(config);
    const authority = await openAuthority({ store, keys, algorithm: config.caAlgorithm, organization: config.caOrganization, publicUrl, clock, log: { info: (m) => log.info(m) } });
    return { store, keys, registry, authority, tenantId: boot.tenant.id, adminToken: boot.adminToken, adminTokenFile, publicUrl, closers };
  } catch (e) {
    for (const c of closers) await c().catch(() => undefined);
    throw e;
  }
}

/**
 * First-start work done once, before worker processes start: migrations, the first tenant and admin
 * token, the CA. Workers then only load what exists.
 */
export async function prepareFleetpass(config: Readonly<FleetpassConfig>, opts: { clock?: Clock; log?: Logger } = {}): Promise<{ adminToken: string | null; adminTokenFile: string }> {
  const log = opts.log ?? createLogger(config.logLevel);
  const core = await openCore(config, opts.clock ?? systemClock, log, false);
  for (const c of core.closers) await c();
  return { adminToken: core.adminToken, adminTokenFile: core.adminTokenFile };
}

/**
 * `backgroundWork: false` for cluster workers: work that must run once per deployment, not once per
 * process (SQLite WAL checkpoints), is the primary's.
 */
export async function startFleetpass(config: Readonly<FleetpassConfig>, opts: { clock?: Clock; log?: Logger; backgroundWork?: boolean } = {}): Promise<Fleetpass> {
  const clock = opts.clock ?? systemClock;
  const log = opts.log ?? createLogger(config.logLevel);
  const core = await openCore(config, clock, log, opts.backgroundWork ?? true);
  const { store, keys, registry, authority, publicUrl, closers } = core;
  try {
    const admission = new AdmissionControl({ maxInFlight: config.admissionMaxInFlight, maxQueue: config.admissionMaxQueue, queueTimeoutMs: config.admissionQueueTimeoutMs, retryAfterSeconds: config.retryAfterSeconds });
    const metrics = new Metrics({ admissionStats: () => admission.stats(), storeStats: () => store.transactionStats() });
    admission.onReject = (code) => metrics.admissionRejected.inc({ reason: code });
    // Device requests read configuration through the cache (one version read per request).
    const configCache = new ConfigCache(store);
    const attestor = new Attestor({ store: configCache.store, secrets: keys, clock, sasMaxLifetimeSeconds: config.sasMaxLifetimeSeconds });
    const lifecycle = new LifecycleService({ store, registry, authority, clock, crlValidityHours: config.crlValidityHours, renewalWindowDays: config.renewalWindowDays });
    const pipeline = new ProvisioningPipeline({
      store: configCache.store, configCache: configCache, attestor, authority, admission, metrics, clock, log, identifier: lifecycle,
      settings: { maxCsrBytes: config.maxCsrBytes, minRsaBits: config.minRsaBits, deviceCertValidityDays: config.deviceCertValidityDays, webhookTimeoutMs: config.webhookTimeoutMs, webhookSecrets: [config.webhookSecret, config.webhookSecretPrevious].filter((x): x is string => Boolean(x)), publicUrl, mqttEndpoint: config.mqttEndpoint, renewalWindowDays: config.renewalWindowDays },
    });
    const tls = await authority.issueServerTls(config.serverNames);
    const app = await buildHttpApp({ store, pipeline, registry, lifecycle, authority, metrics, log }, {
      maxBodyBytes: config.maxBodyBytes,
      requestTimeoutMs: config.requestTimeoutMs,
      tlsHandshakeTimeoutMs: config.tlsHandshakeTimeoutMs,
      tls,
      ...(config.trustProxyClientCert ? { proxyClientCert: { trustedProxies: config.trustedProxies, header: config.clientCertHeader } } : {}),
      ...(cluster.isWorker ? { metricsSource: workerMetricsSource(metrics.registry) } : {}),
    });
    await app.listen({ host: config.host, port: config.port });
    const address = app.server.address();
    const port = typeof address === 'object' && address ? address.port : config.port;
    let closing: Promise<void> | undefined;
    return {
      url: `https://localhost:${port}`,
      port,
      app,
      store,
      authority,
      registry,
      adminToken: core.adminToken,
      adminTokenFile: core.adminTokenFile,
      tenantId: core.tenantId,
      log,
      close() {
        closing ??= (async () => {
          admission.close();
          // app.close() stops accepting and waits for in-flight requests to finish.
          await app.close();
          for (const c of closers) await c();
        })();
        return closing;
      },
    };
  } catch (e) {
    for (const c of closers) await c().catch(() => undefined);
    throw e;
  }
}
