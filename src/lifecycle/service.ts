import type { Clock } from '../core/clock.js';
import { fail } from '../core/errors.js';
import { parseCertificate, verifyChain } from '../pki/index.js';
import type { Store } from '../registry/store.js';
import type { Principal, RegistryService } from '../registry/service.js';
import { requireRole } from '../registry/service.js';
import type { CertificateRecord, Device } from '../registry/types.js';
import type { CertificateAuthority } from '../provisioning/authority.js';
import { DEFAULT_RENEWAL_WINDOW_DAYS, checkDeviceUsable, deviceSettingKeys, parseRenewalForce, renewalForceSettingKey, type RenewalForce } from '../provisioning/pipeline.js';

/** RFC 5280 CRLReason names accepted by the admin API. */
export const REVOCATION_REASONS = {
  unspecified: 0,
  keyCompromise: 1,
  cACompromise: 2,
  affiliationChanged: 3,
  superseded: 4,
  cessationOfOperation: 5,
  certificateHold: 6,
  privilegeWithdrawn: 9,
} as const;
export type RevocationReason = keyof typeof REVOCATION_REASONS;

export interface LifecycleDeps {
  store: Store;
  registry: RegistryService;
  authority: CertificateAuthority;
  clock: Clock;
  crlValidityHours: number;
  /** Days before expiry from which devices may renew (shown by renewalStatus); default 30. */
  renewalWindowDays?: number;
}

/** Where a device stands with renewal: its active certificate, the window, and any operator force. */
export interface RenewalStatus {
  deviceId: string;
  certificate: { id: string; serial: string; notAfter: string } | null;
  windowDays: number;
  /** When the device may renew on its own (notAfter − windowDays); null without an active certificate. */
  windowOpensAt: string | null;
  /** Whether a re-enrollment now would be accepted (window open or forced). */
  renewable: boolean;
  force: RenewalForce | null;
}

/** Device and certificate life after onboarding: suspend, resume, revoke, delete, CRL, self-identification. */
export class LifecycleService {
  private crlCache: { der: Buffer; until: number; number: bigint } | undefined;
  private crlNumber = 0n;

  constructor(private readonly deps: LifecycleDeps) {}

  private now(): string {
    return this.deps.clock.now().toISOString();
  }

  async getDevice(p: Principal, id: string): Promise<Device> {
    const d = await this.deps.store.getDevice(p.tenantId, id);
    if (!d) fail('NOT_FOUND');
    return d;
  }

  async setDeviceStatus(p: Principal, id: string, action: 'suspend' | 'resume'): Promise<Device> {
    requireRole(p, 'operator');
    return this.deps.store.transaction(async (tx) => {
      const d = await tx.getDevice(p.tenantId, id);
      if (!d) fail('NOT_FOUND');
      if (d.status === 'revoked') fail('CONFLICT', 'a revoked device cannot be suspended or resumed; delete it and re-enroll');
      const next: Device = { ...d, status: action === 'suspend' ? 'suspended' : 'active', updatedAt: this.now() };
      await tx.updateDevice(next);
      await this.deps.registry.audit(tx, p, { action: `device.${action}`, resourceType: 'device', resourceId: id, details: { registrationId: d.registrationId } });
      return next;
    });
  }

  async revokeDevice(p: Principal, id: string, reason: RevocationReason): Promise<Device> {
    requireRole(p, 'operator');
    const result = await this.deps.store.transaction(async (tx) => {
      const d = await tx.getDevice(p.tenantId, id);
      if (!d) fail('NOT_FOUND');
      const at = this.now();
      const revoked = await tx.setDeviceCertificatesStatus(d.id, 'active', 'revoked', at, reason);
      const next: Device = { ...d, status: 'revoked', updatedAt: at };
      await tx.updateDevice(next);
      await this.deps.registry.audit(tx, p, { action: 'device.revoke', resourceType: 'device', resourceId: id, details: { registrationId: d.registrationId, reason, certificatesRevoked: revoked } });
      return next;
    });
    this.crlCache = undefined;
    return result;
  }

  /** Deletes the device record; its certificates are revoked (cessationOfOperation) and kept for the CRL and history. */
  async deleteDevice(p: Principal, id: string): Promise<void> {
    requireRole(p, 'operator');
    await this.deps.store.transaction(async (tx) => {
      const d = await tx.getDevice(p.tenantId, id);
      if (!d) fail('NOT_FOUND');
      const at = this.now();
      const revoked = await tx.setDeviceCertificatesStatus(d.id, 'active', 'revoked', at, 'cessationOfOperation');
      await tx.deleteDevice(p.tenantId, id);
      await tx.decrementDeviceCount(d.enrollmentId);
      for (const key of deviceSettingKeys(d.id)) await tx.deleteSetting(key);
      await this.deps.registry.audit(tx, p, { action: 'device.delete', resourceType: 'device', resourceId: id, details: { registrationId: d.registrationId, certificatesRevoked: revoked } });
    });
    this.crlCache = undefined;
  }

  async getCertificate(p: Principal, id: string): Promise<CertificateRecord> {
    const c = await this.deps.store.getCertificate(p.tenantId, id);
    if (!c) fail('NOT_FOUND');
    return c;
  }

  async revokeCertificate(p: Principal, id: string, reason: RevocationReason): Promise<CertificateRecord> {
    requireRole(p, 'operator');
    const result = await this.deps.store.transaction(async (tx) => {
      const c = await tx.getCertificate(p.tenantId, id);
      if (!c) fail('NOT_FOUND');
      if (c.status === 'revoked') return c; // idempotent
      const at = this.now();
      await tx.setCertificateStatus(id, 'revoked', at, reason);
      await this.deps.registry.audit(tx, p, { action: 'certificate.revoke', resourceType: 'certificate', resourceId: id, details: { serial: c.serial, reason } });
      return { ...c, status: 'revoked' as const, revokedAt: at, revocationReason: reason };
    });
    this.crlCache = undefined;
    return result;
  }

  /** DER CRL of the issuing CA, rebuilt when something was revoked here or the cache is a minute old. */
  async currentCrl(caId: string): Promise<Buffer> {
    const { authority, store, clock } = this.deps;
    if (caId !== authority.issuing.id) fail('NOT_FOUND', 'no CRL is published for that CA');
    const nowMs = clock.now().getTime();
    if (this.crlCache && this.crlCache.until > nowMs) return this.crlCache.der;
    const revoked = await store.listRevokedCertificates(caId, new Date(nowMs).toISOString());
    // CRL numbers must grow; wall-clock seconds do across processes and restarts.
    const number = BigInt(Math.floor(nowMs / 1000));
    this.crlNumber = number > this.crlNumber ? number : this.crlNumber + 1n;
    const der = await authority.signCrl(
      revoked.map((c) => ({ serialHex: c.serial, revokedAt: new Date(c.revokedAt ?? c.createdAt), reasonCode: REVOCATION_REASONS[(c.revocationReason ?? 'unspecified') as RevocationReason] ?? 0 })),
      new Date(nowMs),
      new Date(nowMs + this.deps.crlValidityHours * 3_600_000),
      this.crlNumber,
    );
    this.crlCache = { der, until: nowMs + 60_000, number: this.crlNumber };
    return der;
  }

  async renewalStatus(p: Principal, id: string): Promise<RenewalStatus> {
    const d = await this.getDevice(p, id);
    return this.statusOf(d, parseRenewalForce(await this.deps.store.getSetting(renewalForceSettingKey(d.id))));
  }

  private async statusOf(d: Device, force: RenewalForce | null): Promise<RenewalStatus> {
    const windowDays = this.deps.renewalWindowDays ?? DEFAULT_RENEWAL_WINDOW_DAYS;
    const cert = await this.deps.store.findActiveCertificate(d.id, d.publicKeyFingerprint);
    const now = this.deps.clock.now();
    const opens = cert ? new Date(new Date(cert.notAfter).getTime() - windowDays * 86_400_000) : null;
    const activeForce = force && new Date(force.until) > now ? force : null;
    return {
      deviceId: d.id,
      certificate: cert ? { id: cert.id, serial: cert.serial, notAfter: cert.notAfter } : null,
      windowDays,
      windowOpensAt: opens ? opens.toISOString() : null,
      renewable: cert !== undefined && d.status === 'active' && (activeForce !== null || (opens !== null && opens <= now)),
      force: activeForce,
    };
  }

  /**
   * Lets the device renew once outside the renewal window (force, until `until`, default 7 days), or
   * withdraws that permission (force false). Consumed by the next successful re-enrollment. Audited.
   */
  async setRenewalForce(p: Principal, id: string, force: boolean, until?: string): Promise<RenewalStatus> {
    requireRole(p, 'operator');
    const now = this.deps.clock.now();
    let value: RenewalForce | null = null;
    if (force) {
      const end = until === undefined ? new Date(now.getTime() + 7 * 86_400_000) : new Date(until);
      if (Number.isNaN(end.getTime())) fail('VALIDATION_FAILED', 'until must be an ISO 8601 date-time');
      if (end <= now) fail('VALIDATION_FAILED', 'until must be in the future');
      if (end.getTime() - now.getTime() > 366 * 86_400_000) fail('VALIDATION_FAILED', 'until must be within a year');
      value = { until: end.toISOString(), by: `apikey:${p.apiKeyId}`, at: now.toISOString() };
    }
    const device = await this.deps.store.transaction(async (tx) => {
      const d = await tx.getDevice(p.tenantId, id);
      if (!d) fail('NOT_FOUND');
      if (value && d.status !== 'active') fail('CONFLICT', `device ${d.id} is ${d.status}; a ${d.status} device cannot renew`);
      if (value) await tx.setSetting(renewalForceSettingKey(d.id), JSON.stringify(value));
      else await tx.deleteSetting(renewalForceSettingKey(d.id));
      await this.deps.registry.audit(tx, p, { action: force ? 'device.renewal.force' : 'device.renewal.unforce', resourceType: 'device', resourceId: d.id, details: { registrationId: d.registrationId, ...(value ? { until: value.until } : {}) } });
      return d;
    });
    return this.statusOf(device, value);
  }

  /**
   * Identifies a device by its operational certificate (device API, EST re-enroll): signed by our
   * issuing CA, on record, active (or superseded, with allowSuperseded), unexpired, and its device usable.
   */
  async identifyDevice(chainDer: Buffer[], opts: { allowSuperseded?: boolean } = {}): Promise<{ device: Device; certificate: CertificateRecord }> {
    const leafDer = chainDer[0];
    if (!leafDer) fail('ATTESTATION_MISSING', 'present the operational certificate as the TLS client certificate');
    const { authority, store, clock } = this.deps;
    verifyChain(leafDer, [], [{ id: authority.issuing.id, der: authority.issuingDer }], clock.now());
    const info = parseCertificate(leafDer);
    const cert = await store.getCertificateBySerial(info.serialHex);
    if (!cert || cert.issuerCaId !== authority.issuing.id || parseCertificate(cert.pem).fingerprint !== info.fingerprint) fail('CERTIFICATE_UNTRUSTED', 'this certificate is not on record');
    if (cert.status === 'revoked') fail('CERTIFICATE_REVOKED');
    if (cert.status !== 'active' && !(opts.allowSuperseded && cert.status === 'superseded')) fail('CERTIFICATE_REVOKED', 'this certificate was superseded by a newer one');
    if (!cert.deviceId || !cert.tenantId) fail('DEVICE_NOT_FOUND');
    const device = await store.getDevice(cert.tenantId, cert.deviceId);
    if (!device) fail('DEVICE_NOT_FOUND');
    checkDeviceUsable(device);
    return { device, certificate: cert };
  }
}
