import { performance } from 'node:perf_hooks';
import type { Clock } from '../core/clock.js';
import { fail, toFleetpassError, type FleetpassError } from '../core/errors.js';
import { newId } from '../core/ids.js';
import { parseCsr } from '../pki/index.js';
import type { ParsedCsr } from '../pki/types.js';
import type { Repos, Store } from '../registry/store.js';
import { StoreConflictError } from '../registry/store.js';
import { DEFAULT_TEMPLATE, parameterVars, renderTemplate, validateParameters } from '../registry/template.js';
import type { CertificateRecord, Device, Enrollment, TemplateBody } from '../registry/types.js';
import type { Metrics } from '../observability/metrics.js';
import type { AdmissionControl } from './admission.js';
import { checkRegistrationId, type Attestor, type DeviceCredential } from './attestation.js';
import type { CertificateAuthority } from './authority.js';
import { callPreProvisioningHook } from './webhook.js';

export interface ProvisionRequest {
  /** Which door the request came through: https, est, mqtt, … (attempt log and metrics label). */
  protocol: string;
  sourceAddress: string | null;
  /** As received; validated here so that every door gets the same answer. */
  registrationId?: unknown;
  csr?: unknown;
  parameters?: unknown;
  credential: DeviceCredential;
}

export interface ProvisionResult {
  device: Device;
  certificate: CertificateRecord;
  /** Issuing CA + root, PEM. */
  chainPem: string;
  configuration: Record<string, unknown>;
  endpoints: Record<string, string>;
  /** True when this was a retry answered with the certificate issued before. */
  reused: boolean;
}

export interface PipelineSettings {
  maxCsrBytes: number;
  minRsaBits: number;
  deviceCertValidityDays: number;
  webhookTimeoutMs: number;
  publicUrl: string;
  mqttEndpoint: string | null;
}

export interface PipelineDeps {
  store: Store;
  attestor: Attestor;
  authority: CertificateAuthority;
  admission: AdmissionControl;
  metrics: Metrics;
  clock: Clock;
  settings: PipelineSettings;
  log: { warn(obj: object, msg: string): void; error(obj: object, msg: string): void };
}

interface AttemptContext {
  tenantId: string | null;
  enrollmentId: string | null;
  registrationId: string | null;
  deviceId: string | null;
}

/**
 * The one provisioning pipeline every door calls:
 * attest → enrollment → limits → validate (CSR, key, template rules) → webhook → render →
 * register + issue (recorded in one transaction before the answer) → respond → attempt + metrics.
 */
export class ProvisioningPipeline {
  constructor(private readonly deps: PipelineDeps) {}

  async provision(req: ProvisionRequest): Promise<ProvisionResult> {
    const started = performance.now();
    const ctx: AttemptContext = {
      tenantId: null,
      enrollmentId: null,
      registrationId: typeof req.registrationId === 'string' ? req.registrationId.slice(0, 128) : null,
      deviceId: null,
    };
    try {
      const result = await this.deps.admission.run(() => this.run(req, ctx));
      await this.finish(req, ctx, started, null, result);
      return result;
    } catch (err) {
      const fe = toFleetpassError(err);
      if (fe.code === 'INTERNAL_ERROR') this.deps.log.error({ err, registrationId: ctx.registrationId }, 'provisioning failed unexpectedly');
      await this.finish(req, ctx, started, fe, null);
      throw fe;
    }
  }

  private async finish(req: ProvisionRequest, ctx: AttemptContext, started: number, error: FleetpassError | null, result: ProvisionResult | null): Promise<void> {
    const latencyMs = performance.now() - started;
    const outcome = error ? 'failure' : 'success';
    this.deps.metrics.attempts.inc({ protocol: req.protocol, outcome, reason: error?.code ?? 'OK' });
    this.deps.metrics.duration.observe({ protocol: req.protocol, outcome }, latencyMs / 1000);
    // Deferred requests are not attempts of the device's identity: recording each would turn a burst
    // into a write storm exactly when the store is busiest. They are counted in metrics instead.
    if (error && (error.code === 'RATE_LIMITED' || error.code === 'OVERLOADED')) return;
    try {
      await this.deps.store.recordAttempt({
        id: newId('att'),
        tenantId: ctx.tenantId,
        enrollmentId: ctx.enrollmentId,
        registrationId: ctx.registrationId,
        protocol: req.protocol,
        sourceAddress: req.sourceAddress,
        outcome,
        reasonCode: error?.code ?? null,
        message: error ? error.message.slice(0, 500) : result?.reused ? 'retry answered with the certificate issued before' : null,
        deviceId: result?.device.id ?? ctx.deviceId,
        latencyMs: Math.round(latencyMs * 100) / 100,
        createdAt: this.deps.clock.now().toISOString(),
      });
    } catch (e) {
      // The device's answer must not depend on the attempt log; the metric above still counts it.
      this.deps.log.warn({ err: e }, 'could not record provisioning attempt');
    }
  }

  private async run(req: ProvisionRequest, ctx: AttemptContext): Promise<ProvisionResult> {
    const { clock } = this.deps;
    const claimed = req.registrationId === undefined || req.registrationId === null ? undefined : checkRegistrationId(req.registrationId);
    const att = await this.deps.attestor.attest(req.credential, claimed);
    ctx.tenantId = att.tenant.id;
    ctx.enrollmentId = att.enrollment.id;
    ctx.registrationId = att.registrationId;
    const enrollment = att.enrollment;
    const now = clock.now();
    if (!enrollment.enabled) fail('ENROLLMENT_DISABLED', `enrollment "${enrollment.name}" is disabled`);
    if (enrollment.expiresAt && new Date(enrollment.expiresAt) <= now) fail('ENROLLMENT_EXPIRED', `enrollment "${enrollment.name}" expired at ${enrollment.expiresAt}`);

    if (req.csr === undefined || req.csr === null || req.csr === '') fail('CSR_INVALID', 'csr is required (PKCS#10, PEM or base64 DER)');
    if (typeof req.csr !== 'string' && !Buffer.isBuffer(req.csr)) fail('CSR_INVALID', 'csr must be a string');
    const csr = parseCsr(req.csr, { maxBytes: this.deps.settings.maxCsrBytes, minRsaBits: this.deps.settings.minRsaBits });

    if (enrollment.attestation.type === 'token' && enrollment.attestation.usedAt !== null && enrollment.attestation.usedByKeyFingerprint !== csr.publicKeyFingerprint) {
      fail('TOKEN_REPLAYED', `the token was used at ${enrollment.attestation.usedAt} by another key`);
    }

    if (req.parameters !== undefined && req.parameters !== null && (typeof req.parameters !== 'object' || Array.isArray(req.parameters))) fail('BAD_REQUEST', 'parameters must be an object');
    let params = parameterVars((req.parameters ?? {}) as Record<string, unknown>);
    const body = await this.templateOf(enrollment);
    validateParameters(body, params);
    if (enrollment.webhookUrl) {
      const overrides = await callPreProvisioningHook(enrollment.webhookUrl, {
        tenantId: att.tenant.id,
        enrollmentId: enrollment.id,
        registrationId: att.registrationId,
        attestation: att.method,
        publicKeyFingerprint: csr.publicKeyFingerprint,
        parameters: params,
      }, this.deps.settings.webhookTimeoutMs);
      params = { ...params, ...overrides };
    }

    // A retry that lost its answer, or two copies of one request racing: loop until the store agrees.
    for (let round = 0; ; round++) {
      try {
        return await this.register(att.tenant.id, enrollment, att.registrationId, csr, params, body, ctx);
      } catch (e) {
        if (e instanceof StoreConflictError && round < 3) continue;
        throw e;
      }
    }
  }

  private async templateOf(e: Enrollment): Promise<TemplateBody> {
    if (e.template) return e.template;
    if (e.templateId) {
      const t = await this.deps.store.getTemplate(e.tenantId, e.templateId);
      if (t) return t.body;
      this.deps.log.warn({ enrollmentId: e.id, templateId: e.templateId }, 'enrollment names a missing template; using the default');
    }
    return DEFAULT_TEMPLATE;
  }

  private endpointsFor(rendered: Record<string, string>): Record<string, string> {
    const base: Record<string, string> = { api: this.deps.settings.publicUrl };
    if (this.deps.settings.mqttEndpoint) base.mqtt = this.deps.settings.mqttEndpoint;
    return { ...base, ...rendered };
  }

  private async register(
    tenantId: string,
    enrollment: Enrollment,
    registrationId: string,
    csr: ParsedCsr,
    params: Record<string, string>,
    body: TemplateBody,
    ctx: AttemptContext,
  ): Promise<ProvisionResult> {
    const { store, clock } = this.deps;
    const existing = await store.getDeviceByRegistrationId(tenantId, registrationId);
    if (existing) {
      ctx.deviceId = existing.id;
      checkDeviceUsable(existing);
      if (existing.publicKeyFingerprint === csr.publicKeyFingerprint) {
        const cert = await store.findActiveCertificate(existing.id, csr.publicKeyFingerprint);
        if (cert) {
          const vars = { ...params, registrationId, deviceId: existing.id, tenantId, enrollmentId: enrollment.id, enrollmentName: enrollment.name };
          const endpoints = this.endpointsFor(renderTemplate(body, vars).endpoints);
          return { device: existing, certificate: cert, chainPem: this.deps.authority.chainPem, configuration: existing.configuration, endpoints, reused: true };
        }
      } else if (enrollment.reprovisionPolicy !== 'replace-key') {
        fail('REGISTRATION_ID_COLLISION', `device ${existing.id} already holds registration ID "${registrationId}" with another key (enrollment policy: reject)`);
      }
    }
    const deviceId = existing?.id ?? newId('dev');
    const vars: Record<string, string> = { ...params, registrationId, deviceId, tenantId, enrollmentId: enrollment.id, enrollmentName: enrollment.name };
    const rendered = renderTemplate(body, vars);
    const issued = await this.deps.authority.issueDeviceCertificate({
      publicKeySpki: csr.publicKeySpki,
      commonName: rendered.certificate.commonName,
      ...(rendered.certificate.organization ? { organization: rendered.certificate.organization } : {}),
      ...(rendered.certificate.organizationalUnit ? { organizationalUnit: rendered.certificate.organizationalUnit } : {}),
      dnsNames: rendered.certificate.dnsNames,
      uris: rendered.certificate.uris,
      validityDays: rendered.certificate.validityDays ?? this.deps.settings.deviceCertValidityDays,
    });
    const at = clock.now().toISOString();
    const device: Device = {
      id: deviceId,
      tenantId,
      enrollmentId: existing?.enrollmentId ?? enrollment.id,
      registrationId,
      name: rendered.deviceName,
      model: params.model ?? null,
      firmwareVersion: params.firmwareVersion ?? null,
      region: params.region ?? null,
      status: 'active',
      publicKeyFingerprint: csr.publicKeyFingerprint,
      attributes: rendered.attributes,
      groups: rendered.groups,
      policyName: rendered.policyName,
      configuration: rendered.configuration,
      configurationVersion: (existing?.configurationVersion ?? 0) + 1,
      createdAt: existing?.createdAt ?? at,
      updatedAt: at,
      provisionedAt: at,
    };
    const cert: CertificateRecord = {
      id: newId('crt'),
      tenantId,
      deviceId,
      serial: issued.serialHex,
      issuerCaId: this.deps.authority.issuing.id,
      subject: issued.subject,
      notBefore: issued.notBefore.toISOString(),
      notAfter: issued.notAfter.toISOString(),
      publicKeyFingerprint: csr.publicKeyFingerprint,
      pem: issued.pem,
      status: 'active',
      revokedAt: null,
      revocationReason: null,
      createdAt: at,
    };

    const outcome = await store.transaction(async (tx): Promise<ProvisionResult | null> => {
      const current = await tx.getDeviceByRegistrationId(tenantId, registrationId);
      if ((current?.id ?? null) !== (existing?.id ?? null) || (current && current.publicKeyFingerprint !== existing?.publicKeyFingerprint)) {
        return null; // someone else changed this identity meanwhile; decide again from fresh state
      }
      if (!current) {
        await tx.createDevice(device);
        if (!(await tx.incrementDeviceCount(enrollment.id))) fail('ENROLLMENT_EXHAUSTED', `enrollment "${enrollment.name}" allows ${enrollment.maxDevices} devices`);
      } else {
        if (current.publicKeyFingerprint !== csr.publicKeyFingerprint) {
          await tx.setDeviceCertificatesStatus(current.id, 'active', 'superseded', null, null);
        }
        await tx.updateDevice(device);
      }
      await tx.createCertificate(cert);
      await this.consumeToken(tx, enrollment, csr, deviceId, at);
      return { device, certificate: cert, chainPem: this.deps.authority.chainPem, configuration: device.configuration, endpoints: this.endpointsFor(rendered.endpoints), reused: false };
    });
    if (outcome === null) throw new StoreConflictError('device changed during provisioning');
    this.deps.metrics.certificatesIssued.inc({ kind: 'device' });
    return outcome;
  }

  private async consumeToken(tx: Repos, enrollment: Enrollment, csr: ParsedCsr, deviceId: string, at: string): Promise<void> {
    if (enrollment.attestation.type !== 'token') return;
    if (enrollment.attestation.usedAt !== null) return; // same key re-using: checked before
    if (!(await tx.markTokenUsed(enrollment.id, at, csr.publicKeyFingerprint, deviceId))) {
      // Used concurrently: by the same key → the retry loop finds the device; otherwise a replay.
      const fresh = await tx.getEnrollment(enrollment.tenantId, enrollment.id);
      if (fresh?.attestation.type === 'token' && fresh.attestation.usedByKeyFingerprint === csr.publicKeyFingerprint) throw new StoreConflictError('token consumed concurrently by the same key');
      fail('TOKEN_REPLAYED');
    }
  }
}

export function checkDeviceUsable(d: Device): void {
  if (d.status === 'suspended') fail('DEVICE_SUSPENDED', `device ${d.id} is suspended`);
  if (d.status === 'revoked') fail('DEVICE_REVOKED', `device ${d.id} is revoked`);
}
