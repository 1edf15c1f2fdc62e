import { performance } from 'node:perf_hooks';
import type { Clock } from '../core/clock.js';
import { fail, toFleetpassError, type FleetpassError } from '../core/errors.js';
import { newId, sha256Hex } from '../core/ids.js';
import { describePublicKey, generateKeyPairLike, parseCertificate, parseCsr, renewalNameMismatch, renewalNamesOf } from '../pki/index.js';
import type { IssuedCertificate, ParsedCsr } from '../pki/types.js';
import type { Repos, Store } from '../registry/store.js';
import { StoreConflictError } from '../registry/store.js';
import { DEFAULT_TEMPLATE, parameterVars, renderTemplate, validateParameters } from '../registry/template.js';
import type { CertificateRecord, Device, Enrollment, TemplateBody, AttemptRecord } from '../registry/types.js';
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
  /** EST label: only the enrollment group of this name may match (RFC 7030 section 3.2.2). */
  enrollmentName?: string;
  /**
   * EST serverkeygen: the server makes the device's key pair (of the CSR key's type) and returns its
   * PKCS#8 in the result; it is never stored. The CSR still proves possession of the key that signed it.
   */
  serverKeygen?: boolean;
}

/** Renewal or rekey of an onboarded device, authenticated by its current operational certificate. */
export interface ReenrollRequest {
  protocol: string;
  sourceAddress: string | null;
  /** The TLS client certificate chain, leaf first: the certificate being renewed. */
  chainDer: Buffer[];
  /** PKCS#10 with the subject and subjectAltName of that certificate; the same key renews, a new key rekeys. */
  csr?: unknown;
  /** Renew outside the renewal window (operator tooling; no device door sets it). */
  force?: boolean;
}

/** Finds the device behind an operational certificate (the lifecycle service implements it). */
export interface DeviceIdentifier {
  /** With allowSuperseded, a superseded (not revoked) certificate identifies its device too. */
  identifyDevice(chainDer: Buffer[], opts?: { allowSuperseded?: boolean }): Promise<{ device: Device; certificate: CertificateRecord }>;
}

export const DEFAULT_RENEWAL_WINDOW_DAYS = 30;

/** An operator's permission for one renewal outside the window (stored per device in the settings table). */
export interface RenewalForce {
  until: string;
  by: string;
  at: string;
}

export function renewalForceSettingKey(deviceId: string): string {
  return `device.${deviceId}.renewal-force`;
}

/** The request key whose serverkeygen answer may be retried (cleared once the device re-enrolls with its key). */
export function serverKeygenSettingKey(deviceId: string): string {
  return `device.${deviceId}.serverkeygen-request-key`;
}

/** Every per-device key in the settings table: removed with the device. */
export function deviceSettingKeys(deviceId: string): string[] {
  return [renewalForceSettingKey(deviceId), serverKeygenSettingKey(deviceId)];
}

export function parseRenewalForce(raw: string | undefined): RenewalForce | null {
  if (!raw) return null;
  try {
    const v = JSON.parse(raw) as Partial<RenewalForce>;
    return typeof v.until === 'string' && typeof v.by === 'string' && typeof v.at === 'string' ? { until: v.until, by: v.by, at: v.at } : null;
  } catch {
    return null;
  }
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
  /** serverkeygen only: the device's new private key, DER PKCS#8. Never stored anywhere. */
  privateKeyPkcs8?: Buffer;
  /** What the attempt log says about this success (renewal, rekey, server-generated key). */
  note?: string;
}

export interface PipelineSettings {
  maxCsrBytes: number;
  minRsaBits: number;
  deviceCertValidityDays: number;
  webhookTimeoutMs: number;
  /** Sign webhook requests, the current secret first (see signWebhookRequest); none, unsigned. */
  webhookSecrets?: readonly string[];
  publicUrl: string;
  mqttEndpoint: string | null;
  /** Days before notAfter from which a device may renew; default 30. */
  renewalWindowDays?: number;
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
  /** Needed by reenroll() only. */
  identifier?: DeviceIdentifier;
  /** When `store` answers configuration lookups from a ConfigCache: refreshed at the start of each attempt. */
  configCache?: { refresh(): Promise<void> };
}

interface AttemptContext {
  tenantId: string | null;
  enrollmentId: string | null;
  registrationId: string | null;
  deviceId: string | null;
  door: { protocol: string; sourceAddress: string | null };
  started: number;
  /** Set when the success attempt was written inside the registration transaction (one commit, not two). */
  recorded: boolean;
}

/**
 * The one provisioning pipeline every door calls:
 * attest → enrollment → limits → validate (CSR, key, template rules) → webhook → render →
 * register + issue (recorded in one transaction before the answer) → respond → attempt + metrics.
 */
export class ProvisioningPipeline {
  constructor(private readonly deps: PipelineDeps) {}

  async provision(req: ProvisionRequest): Promise<ProvisionResult> {
    const registrationId = typeof req.registrationId === 'string' ? req.registrationId.slice(0, 128) : null;
    return this.attempt(req, registrationId, (ctx) => this.run(req, ctx));
  }

  /**
   * Renewal (same key) or rekey (new key) of an onboarded device, identified by its current
   * operational certificate: the CSR must carry that certificate's subject and subjectAltName
   * (RFC 7030 section 4.2.2); renewal is allowed from renewalWindowDays before expiry, or earlier when
   * an operator forced it. The renewed certificate carries the same names, is recorded and the old one
   * marked superseded (not revoked) in one transaction. A retry whose answer was lost — presenting the
   * now superseded certificate with the same CSR key — gets the certificate already issued for that key.
   * Same admission control, attempt log, metrics and audit as provisioning.
   */
  async reenroll(req: ReenrollRequest): Promise<ProvisionResult> {
    return this.attempt(req, null, (ctx) => this.runReenroll(req, ctx));
  }

  private async attempt(door: { protocol: string; sourceAddress: string | null }, registrationId: string | null, fn: (ctx: AttemptContext) => Promise<ProvisionResult>): Promise<ProvisionResult> {
    const started = performance.now();
    const ctx: AttemptContext = { tenantId: null, enrollmentId: null, registrationId, deviceId: null, door: { protocol: door.protocol, sourceAddress: door.sourceAddress }, started, recorded: false };
    try {
      const result = await this.deps.admission.run(async () => {
        await this.deps.configCache?.refresh();
        return fn(ctx);
      });
      await this.finish(door, ctx, started, null, result);
      return result;
    } catch (err) {
      const fe = toFleetpassError(err);
      if (fe.code === 'INTERNAL_ERROR') this.deps.log.error({ err, registrationId: ctx.registrationId }, 'provisioning failed unexpectedly');
      await this.finish(door, ctx, started, fe, null);
      throw fe;
    }
  }

  private async finish(req: { protocol: string; sourceAddress: string | null }, ctx: AttemptContext, started: number, error: FleetpassError | null, result: ProvisionResult | null): Promise<void> {
    const latencyMs = performance.now() - started;
    const outcome = error ? 'failure' : 'success';
    this.deps.metrics.attempts.inc({ protocol: req.protocol, outcome, reason: error?.code ?? 'OK' });
    this.deps.metrics.duration.observe({ protocol: req.protocol, outcome }, latencyMs / 1000);
    // Deferred requests are not attempts of the device's identity: recording each would turn a burst
    // into a write storm exactly when the store is busiest. They are counted in metrics instead.
    if (error && (error.code === 'RATE_LIMITED' || error.code === 'OVERLOADED')) return;
    if (ctx.recorded && !error) return;
    try {
      await this.deps.store.recordAttempt(this.attemptRecord(req, ctx, latencyMs, error, result));
    } catch (e) {
      // The device's answer must not depend on the attempt log; the metric above still counts it.
      this.deps.log.warn({ err: e }, 'could not record provisioning attempt');
    }
  }

  private attemptRecord(req: { protocol: string; sourceAddress: string | null }, ctx: AttemptContext, latencyMs: number, error: FleetpassError | null, result: ProvisionResult | null): AttemptRecord {
    return {
      id: newId('att'),
      tenantId: ctx.tenantId,
      enrollmentId: ctx.enrollmentId,
      registrationId: ctx.registrationId,
      protocol: req.protocol,
      sourceAddress: req.sourceAddress,
      outcome: error ? 'failure' : 'success',
      reasonCode: error?.code ?? null,
      message: error ? error.message.slice(0, 500) : result?.reused ? 'retry answered with the certificate issued before' : (result?.note ?? null),
      deviceId: result?.device.id ?? ctx.deviceId,
      latencyMs: Math.round(latencyMs * 100) / 100,
      createdAt: this.deps.clock.now().toISOString(),
    };
  }

  private async run(req: ProvisionRequest, ctx: AttemptContext): Promise<ProvisionResult> {
    const { clock } = this.deps;
    const claimed = req.registrationId === undefined || req.registrationId === null ? undefined : checkRegistrationId(req.registrationId);
    if (ctx.registrationId === null && req.credential.type === 'client-certificate' && req.credential.chainDer[0]) {
      // The certificate names the device even when attestation fails: operators need it in the attempt log.
      try {
        ctx.registrationId = parseCertificate(req.credential.chainDer[0]).commonName?.slice(0, 128) ?? null;
      } catch {
        // unreadable certificate: attestation reports it
      }
    }
    const att = await this.deps.attestor.attest(req.credential, claimed, req.enrollmentName === undefined ? {} : { enrollmentName: req.enrollmentName });
    ctx.tenantId = att.tenant.id;
    ctx.enrollmentId = att.enrollment.id;
    ctx.registrationId = att.registrationId;
    const enrollment = att.enrollment;
    const now = clock.now();
    if (!enrollment.enabled) fail('ENROLLMENT_DISABLED', `enrollment "${enrollment.name}" is disabled`);
    if (enrollment.expiresAt && new Date(enrollment.expiresAt) <= now) fail('ENROLLMENT_EXPIRED', `enrollment "${enrollment.name}" expired at ${enrollment.expiresAt}`);

    let csr = this.parseRequestCsr(req.csr);

    if (enrollment.attestation.type === 'token' && enrollment.attestation.usedAt !== null && enrollment.attestation.usedByKeyFingerprint !== csr.publicKeyFingerprint) {
      // serverkeygen: the used key was made here; the same request key may retry (its answer may be lost).
      const usedBy = enrollment.attestation.usedByDeviceId;
      const keygenRetry = req.serverKeygen === true && usedBy !== null && (await this.deps.store.getSetting(serverKeygenSettingKey(usedBy))) === csr.publicKeyFingerprint;
      if (!keygenRetry) fail('TOKEN_REPLAYED', `the token was used at ${enrollment.attestation.usedAt} by another key`);
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
      }, { timeoutMs: this.deps.settings.webhookTimeoutMs, secrets: this.deps.settings.webhookSecrets ?? [], now: this.deps.clock.now() });
      params = { ...params, ...overrides };
    }

    let keygen: ServerKeygen | undefined;
    if (req.serverKeygen) {
      const made = await generateKeyPairLike(csr.publicKey, this.deps.settings.minRsaBits);
      keygen = { requestKeyFingerprint: csr.publicKeyFingerprint, privateKeyPkcs8: made.pkcs8, description: made.description };
      csr = { ...csr, publicKeySpki: made.spki, publicKey: describePublicKey(made.spki), publicKeyFingerprint: sha256Hex(made.spki) };
    }

    // The first round assumes a new device (most are) and lets the registration transaction, which
    // reads the registration ID anyway, find out otherwise. Then — a device that exists, a retry that
    // lost its answer, two copies of one request racing — loop from fresh state until the store agrees.
    for (let round = 0; ; round++) {
      try {
        return await this.register(att.tenant.id, enrollment, att.registrationId, csr, params, body, ctx, keygen, round === 0);
      } catch (e) {
        if (e instanceof StoreConflictError && round < 4) continue;
        throw e;
      }
    }
  }

  private parseRequestCsr(raw: unknown): ParsedCsr {
    if (raw === undefined || raw === null || raw === '') fail('CSR_INVALID', 'csr is required (PKCS#10, PEM or base64 DER)');
    if (typeof raw !== 'string' && !Buffer.isBuffer(raw)) fail('CSR_INVALID', 'csr must be a string');
    return parseCsr(raw, { maxBytes: this.deps.settings.maxCsrBytes, minRsaBits: this.deps.settings.minRsaBits });
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
    keygen: ServerKeygen | undefined,
    assumeNew: boolean,
  ): Promise<ProvisionResult> {
    const { store, clock } = this.deps;
    const existing = assumeNew ? undefined : await store.getDeviceByRegistrationId(tenantId, registrationId);
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
        // A serverkeygen retry (same request key; the device never used the key made before) replaces that key.
        const keygenRetry = keygen !== undefined && (await store.getSetting(serverKeygenSettingKey(existing.id))) === keygen.requestKeyFingerprint;
        if (!keygenRetry) fail('REGISTRATION_ID_COLLISION', `device ${existing.id} already holds registration ID "${registrationId}" with another key (enrollment policy: reject)`);
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
    const cert = certificateRecord(issued, { tenantId, deviceId, issuerCaId: this.deps.authority.issuing.id, publicKeyFingerprint: csr.publicKeyFingerprint, at });

    const outcome = await store.transaction(async (tx): Promise<ProvisionResult | null> => {
      // Assumed new: creating the device is the check (a registration ID taken meanwhile is a
      // StoreConflictError, and the caller decides again from fresh state), one round trip fewer.
      const current = existing ? await tx.getDeviceByRegistrationId(tenantId, registrationId) : undefined;
      if (existing && (current?.id !== existing.id || current.publicKeyFingerprint !== existing.publicKeyFingerprint)) {
        return null; // changed meanwhile: decide again from fresh state
      }
      if (!current) {
        await tx.createDevice(device);
      } else {
        if (current.publicKeyFingerprint !== csr.publicKeyFingerprint) {
          await tx.setDeviceCertificatesStatus(current.id, 'active', 'superseded', null, null);
        }
        await tx.updateDevice(device);
      }
      await tx.createCertificate(cert);
      await this.consumeToken(tx, enrollment, csr, deviceId, at);
      const result: ProvisionResult = { device, certificate: cert, chainPem: this.deps.authority.chainPem, configuration: device.configuration, endpoints: this.endpointsFor(rendered.endpoints), reused: false };
      // The success attempt commits with the registration (one commit per onboarding, not two).
      if (!keygen) await tx.recordAttempt(this.attemptRecord(ctx.door, ctx, performance.now() - ctx.started, null, result));
      if (keygen) {
        await tx.setSetting(serverKeygenSettingKey(deviceId), keygen.requestKeyFingerprint);
        await tx.appendAudit({
          id: newId('aud'), createdAt: at, actor: `device:${deviceId}`, tenantId, action: 'certificate.serverkeygen', resourceType: 'certificate', resourceId: cert.id,
          details: { deviceId, registrationId, serial: cert.serial, key: keygen.description, requestKeyFingerprint: keygen.requestKeyFingerprint, replacedKey: existing ? existing.publicKeyFingerprint : null },
        });
        result.privateKeyPkcs8 = keygen.privateKeyPkcs8;
        result.note = `server-generated ${keygen.description} key`;
      }
      // Last, just before COMMIT: every registration of a group enrollment updates its one row, and
      // on PostgreSQL the row stays locked until the transaction ends, so all of the group's
      // concurrent registrations queue for as long as each holds it (measured: 16 of 20 waiting).
      if (!current && !(await tx.incrementDeviceCount(enrollment.id))) fail('ENROLLMENT_EXHAUSTED', `enrollment "${enrollment.name}" allows ${enrollment.maxDevices} devices`);
      return result;
    });
    if (outcome === null) throw new StoreConflictError('device changed during provisioning');
    if (!keygen) ctx.recorded = true;
    this.deps.metrics.certificatesIssued.inc({ kind: 'device' });
    return outcome;
  }

  private async runReenroll(req: ReenrollRequest, ctx: AttemptContext): Promise<ProvisionResult> {
    const identifier = this.deps.identifier;
    if (!identifier) throw new Error('re-enrollment needs PipelineDeps.identifier (the lifecycle service)');
    for (let round = 0; ; round++) {
      try {
        return await this.renewOnce(identifier, req, ctx);
      } catch (e) {
        if (e instanceof StoreConflictError && round < 3) continue;
        throw e;
      }
    }
  }

  private async renewOnce(identifier: DeviceIdentifier, req: ReenrollRequest, ctx: AttemptContext): Promise<ProvisionResult> {
    const { store, clock, settings, authority } = this.deps;
    let identified: Awaited<ReturnType<DeviceIdentifier['identifyDevice']>>;
    try {
      identified = await identifier.identifyDevice(req.chainDer, { allowSuperseded: true });
    } catch (e) {
      await this.attributeAttempt(req.chainDer[0], ctx);
      throw e;
    }
    const { device, certificate: current } = identified;
    ctx.tenantId = device.tenantId;
    ctx.enrollmentId = device.enrollmentId;
    ctx.registrationId = device.registrationId;
    ctx.deviceId = device.id;

    const csr = this.parseRequestCsr(req.csr);
    const mismatch = renewalNameMismatch(csr, current.pem);
    if (mismatch) fail('SUBJECT_MISMATCH', mismatch);
    const chainPem = authority.chainPem;
    const endpoints = this.endpointsFor({});

    if (current.status !== 'active') {
      // The answer to an earlier renewal was lost: that renewal already issued a certificate for this key.
      const issued = await store.findActiveCertificate(device.id, csr.publicKeyFingerprint);
      if (issued && issued.createdAt >= current.createdAt) return { device, certificate: issued, chainPem, configuration: device.configuration, endpoints, reused: true };
      fail('CERTIFICATE_REVOKED', 'this certificate was superseded by a newer one; re-enroll with the newest certificate');
    }

    const now = clock.now();
    const windowDays = settings.renewalWindowDays ?? DEFAULT_RENEWAL_WINDOW_DAYS;
    const opensAt = new Date(new Date(current.notAfter).getTime() - windowDays * 86_400_000);
    const operatorForce = parseRenewalForce(await store.getSetting(renewalForceSettingKey(device.id)));
    const forcedBy = req.force ? 'request' : operatorForce && new Date(operatorForce.until) > now ? 'operator' : null;
    if (now < opensAt && !forcedBy) {
      // A concurrent copy of this request may have used the force (and superseded `current`) since we
      // identified the device: then this is a retry, answered from fresh state.
      const fresh = await store.getCertificate(device.tenantId, current.id);
      if (fresh && fresh.status !== 'active') throw new StoreConflictError('the certificate was renewed concurrently');
      fail('RENEWAL_NOT_DUE', `certificate ${current.serial} expires at ${current.notAfter}; renewal opens at ${opensAt.toISOString()} (${windowDays} days before expiry) unless an operator forces it`);
    }

    const rekey = csr.publicKeyFingerprint !== current.publicKeyFingerprint;
    const names = renewalNamesOf(current.pem);
    const enrollment = await store.getEnrollment(device.tenantId, device.enrollmentId);
    const body = enrollment ? await this.templateOf(enrollment) : DEFAULT_TEMPLATE;
    const issued = await authority.issueDeviceCertificate({
      publicKeySpki: csr.publicKeySpki,
      commonName: names.subject.commonName,
      ...(names.subject.organization ? { organization: names.subject.organization } : {}),
      ...(names.subject.organizationalUnit ? { organizationalUnit: names.subject.organizationalUnit } : {}),
      dnsNames: names.dnsNames,
      uris: names.uris,
      validityDays: body.certificateProfile?.validityDays ?? settings.deviceCertValidityDays,
    });
    const at = now.toISOString();
    const cert = certificateRecord(issued, { tenantId: device.tenantId, deviceId: device.id, issuerCaId: authority.issuing.id, publicKeyFingerprint: csr.publicKeyFingerprint, at });
    const note = `${rekey ? 'rekeyed' : 'renewed (same key)'}; replaces certificate ${current.serial}${forcedBy ? `; forced by ${forcedBy === 'operator' ? 'an operator' : 'the caller'}` : ''}`;

    const outcome = await store.transaction(async (tx): Promise<ProvisionResult> => {
      // Compare-and-set on the renewed certificate: of a concurrent renewal and revocation, one wins.
      if (!(await tx.setCertificateStatus(current.id, 'superseded', null, null, 'active'))) {
        const fresh = await tx.getCertificate(device.tenantId, current.id);
        if (fresh?.status === 'revoked') fail('CERTIFICATE_REVOKED');
        throw new StoreConflictError('the certificate was renewed concurrently');
      }
      await tx.setDeviceCertificatesStatus(device.id, 'active', 'superseded', null, null);
      const fresh = await tx.getDevice(device.tenantId, device.id);
      if (!fresh) fail('DEVICE_NOT_FOUND');
      checkDeviceUsable(fresh);
      const next: Device = { ...fresh, publicKeyFingerprint: csr.publicKeyFingerprint, updatedAt: at };
      await tx.updateDevice(next);
      await tx.createCertificate(cert);
      if (forcedBy === 'operator') await tx.deleteSetting(renewalForceSettingKey(device.id));
      // The device used the key it holds: a serverkeygen answer needs no retry any more.
      await tx.deleteSetting(serverKeygenSettingKey(device.id));
      await tx.appendAudit({
        id: newId('aud'), createdAt: at, actor: `device:${device.id}`, tenantId: device.tenantId, action: rekey ? 'certificate.rekey' : 'certificate.renew', resourceType: 'certificate', resourceId: cert.id,
        details: { deviceId: device.id, registrationId: device.registrationId, serial: cert.serial, previousSerial: current.serial, protocol: req.protocol, forced: forcedBy ?? false },
      });
      return { device: next, certificate: cert, chainPem, configuration: next.configuration, endpoints, reused: false, note };
    });
    this.deps.metrics.certificatesIssued.inc({ kind: 'renewal' });
    return outcome;
  }

  /**
   * A refused re-enrollment with a certificate Fleetpass issued (revoked, superseded, device suspended)
   * is logged under that device's tenant, so that its operators see it. The TLS handshake proved the key.
   */
  private async attributeAttempt(leafDer: Buffer | undefined, ctx: AttemptContext): Promise<void> {
    if (!leafDer) return;
    try {
      const info = parseCertificate(leafDer);
      const rec = await this.deps.store.getCertificateBySerial(info.serialHex);
      if (!rec || rec.issuerCaId !== this.deps.authority.issuing.id || !rec.tenantId || parseCertificate(rec.pem).fingerprint !== info.fingerprint) return;
      ctx.tenantId = rec.tenantId;
      ctx.deviceId = rec.deviceId;
      const device = rec.deviceId ? await this.deps.store.getDevice(rec.tenantId, rec.deviceId) : undefined;
      if (device) {
        ctx.registrationId = device.registrationId;
        ctx.enrollmentId = device.enrollmentId;
      }
    } catch {
      // Not ours or unparseable: the attempt stays unattributed.
    }
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

interface ServerKeygen {
  /** Fingerprint of the key that signed the request CSR: identifies a retry of the same request. */
  requestKeyFingerprint: string;
  privateKeyPkcs8: Buffer;
  description: string;
}

/** The store record of a certificate just issued: active, owned by the device. */
function certificateRecord(issued: IssuedCertificate, o: { tenantId: string; deviceId: string; issuerCaId: string; publicKeyFingerprint: string; at: string }): CertificateRecord {
  return {
    id: newId('crt'),
    tenantId: o.tenantId,
    deviceId: o.deviceId,
    serial: issued.serialHex,
    issuerCaId: o.issuerCaId,
    subject: issued.subject,
    notBefore: issued.notBefore.toISOString(),
    notAfter: issued.notAfter.toISOString(),
    publicKeyFingerprint: o.publicKeyFingerprint,
    pem: issued.pem,
    status: 'active',
    revokedAt: null,
    revocationReason: null,
    createdAt: o.at,
  };
}

export function checkDeviceUsable(d: Device): void {
  if (d.status === 'suspended') fail('DEVICE_SUSPENDED', `device ${d.id} is suspended`);
  if (d.status === 'revoked') fail('DEVICE_REVOKED', `device ${d.id} is revoked`);
}
