import { createHmac, timingSafeEqual } from 'node:crypto';
import type { Clock } from '../core/clock.js';
import { fail, FleetpassError } from '../core/errors.js';
import { sha256Hex } from '../core/ids.js';
import type { SecretBox } from '../kms/types.js';
import { parseCertificate, verifyChain } from '../pki/index.js';
import type { CertificateInfo, TrustAnchor } from '../pki/types.js';
import type { CaRepo, EnrollmentRepo, TenantRepo } from '../registry/store.js';
import type { AttestationType, Enrollment, Tenant } from '../registry/types.js';

/** The credential a door extracted from the wire, untouched. */
export type DeviceCredential =
  | { type: 'client-certificate'; chainDer: Buffer[] }
  | { type: 'sas'; authorization: string }
  | { type: 'token'; token: string }
  /** HTTP Basic (EST): username = registration ID; password = a one-time token or the symmetric-key-derived device key. */
  | { type: 'basic'; username: string; password: string }
  | { type: 'none' };

/** Narrows which enrollment may match, beyond what the credential says. */
export interface AttestationScope {
  /** Only the enrollment group of this name (EST label, RFC 7030 section 3.2.2); individual enrollments never match. */
  enrollmentName?: string;
}

export interface AttestationOutcome {
  tenant: Tenant;
  enrollment: Enrollment;
  registrationId: string;
  method: AttestationType;
}

const REGISTRATION_ID = /^[A-Za-z0-9._:-]{1,128}$/;

export function checkRegistrationId(id: unknown): string {
  if (typeof id !== 'string' || !REGISTRATION_ID.test(id)) fail('REGISTRATION_ID_INVALID');
  return id;
}

function safeEqual(a: string, b: string): boolean {
  const ab = Buffer.from(a);
  const bb = Buffer.from(b);
  return ab.length === bb.length && timingSafeEqual(ab, bb);
}

/** Azure DPS per-device key from a group key: base64(HMAC-SHA256(base64-decode(groupKey), registrationId)). */
export function deriveDeviceKey(groupKeyB64: string, registrationId: string): string {
  return createHmac('sha256', Buffer.from(groupKeyB64, 'base64')).update(registrationId, 'utf8').digest('base64');
}

export function parseSasHeader(authorization: string): { srRaw: string; sr: string; sig: string; se: string; skn: string | undefined } {
  const prefix = 'SharedAccessSignature ';
  if (!authorization.startsWith(prefix)) fail('ATTESTATION_FAILED', 'Authorization is not a SharedAccessSignature');
  const fields = new Map<string, string>();
  for (const part of authorization.slice(prefix.length).trim().split('&')) {
    const eq = part.indexOf('=');
    if (eq <= 0) fail('ATTESTATION_FAILED', 'malformed SharedAccessSignature (expected sr=…&sig=…&se=…&skn=…)');
    fields.set(part.slice(0, eq), part.slice(eq + 1));
  }
  const srRaw = fields.get('sr');
  const sigRaw = fields.get('sig');
  const se = fields.get('se');
  if (!srRaw || !sigRaw || !se) fail('ATTESTATION_FAILED', 'SharedAccessSignature needs sr, sig and se');
  let sr: string;
  let sig: string;
  try {
    sr = decodeURIComponent(srRaw);
    sig = decodeURIComponent(sigRaw);
  } catch {
    fail('ATTESTATION_FAILED', 'SharedAccessSignature has a malformed percent-encoding');
  }
  const skn = fields.get('skn');
  return { srRaw, sr, sig, se, skn: skn === undefined ? undefined : decodeURIComponent(skn) };
}

export interface AttestationDeps {
  store: TenantRepo & EnrollmentRepo & CaRepo;
  secrets: SecretBox;
  clock: Clock;
  sasMaxLifetimeSeconds: number;
}

/**
 * Proves who the device is and finds the enrollment that lets it onboard. Throws a coded error
 * otherwise. Does not check enrollment limits (enabled, expiry, count) — the pipeline does.
 */
export class Attestor {
  constructor(private readonly deps: AttestationDeps) {}

  async attest(credential: DeviceCredential, claimedRegistrationId: string | undefined, scope: AttestationScope = {}): Promise<AttestationOutcome> {
    const label = scope.enrollmentName;
    switch (credential.type) {
      case 'client-certificate':
        return this.attestCertificate(credential.chainDer, claimedRegistrationId, label);
      case 'sas':
        return this.attestSas(credential.authorization, claimedRegistrationId, label);
      case 'token':
        return this.attestToken(credential.token, claimedRegistrationId, label);
      case 'basic':
        return this.attestBasic(credential.username, credential.password, claimedRegistrationId, label);
      case 'none':
        return fail('ATTESTATION_MISSING', 'present a client certificate, a SharedAccessSignature, a Bearer enrollment token or HTTP Basic credentials');
    }
  }

  private async tenantOf(e: Enrollment): Promise<Tenant> {
    const t = await this.deps.store.getTenant(e.tenantId);
    if (!t) fail('ENROLLMENT_NOT_FOUND', 'the enrollment belongs to no tenant');
    return t;
  }

  private async attestCertificate(chainDer: Buffer[], claimed: string | undefined, label: string | undefined): Promise<AttestationOutcome> {
    const [leafDer, ...intermediates] = chainDer;
    if (!leafDer) fail('ATTESTATION_MISSING');
    let leaf: CertificateInfo;
    try {
      leaf = parseCertificate(leafDer);
    } catch {
      fail('ATTESTATION_FAILED', 'the client certificate cannot be parsed');
    }
    const now = this.deps.clock.now();
    const registrationId = claimed ?? leaf.commonName;
    if (registrationId === undefined) fail('REGISTRATION_ID_INVALID', 'no registrationId was sent and the certificate has no CN');
    checkRegistrationId(registrationId);

    // 1. An individual enrollment pinned to exactly this certificate.
    const individuals = await this.deps.store.findIndividualEnrollments(null, registrationId);
    const pinned = label === undefined ? individuals.find((e) => e.attestation.type === 'x509-leaf' && e.attestation.certificateFingerprint === leaf.fingerprint) : undefined;
    if (pinned) {
      if (leaf.notAfter < now || leaf.notBefore > now) fail('CERTIFICATE_EXPIRED', `the client certificate is valid ${leaf.notBefore.toISOString()} to ${leaf.notAfter.toISOString()}`);
      return { tenant: await this.tenantOf(pinned), enrollment: pinned, registrationId, method: 'x509-leaf' };
    }

    // 2. A chain to an uploaded manufacturer / claim CA.
    const intermediateInfos = intermediates.flatMap((d) => {
      try {
        return [parseCertificate(d)];
      } catch {
        return [];
      }
    });
    const subjects = new Set<string>([leaf.issuer, ...intermediateInfos.flatMap((c) => [c.issuer, c.subject])]);
    const candidates = new Map<string, { anchor: TrustAnchor; fingerprint: string }>();
    for (const s of subjects) {
      for (const ca of await this.deps.store.findTrustedCasBySubject(s)) {
        const info = parseCertificate(ca.certificatePem);
        candidates.set(ca.id, { anchor: { id: ca.id, der: info.der }, fingerprint: ca.fingerprint });
      }
    }
    if (candidates.size === 0) fail('CERTIFICATE_UNTRUSTED', `no trusted CA named "${leaf.issuer}" has been uploaded`);
    const anchors = [...candidates.values()].map((c) => c.anchor);
    const { anchorId } = verifyChain(leaf.der, intermediates, anchors, now);
    // The same CA certificate may be trusted by several tenants; each upload is its own record.
    const anchorFp = candidates.get(anchorId)!.fingerprint;
    const caIds = [...candidates.entries()].filter(([, c]) => c.fingerprint === anchorFp).map(([id]) => id);
    const enrollments = inScope(await this.deps.store.findEnrollmentsByCaIds(caIds), label);
    const chosen = pickEnrollment(enrollments, registrationId);
    if (!chosen) fail('ENROLLMENT_NOT_FOUND', label === undefined ? `the CA "${leaf.issuer}" is trusted but no enrollment uses it` : `no enrollment group named "${label}" trusts the CA "${leaf.issuer}"`);
    if (chosen.attestation.type === 'x509-ca' && chosen.attestation.requireRegistrationIdMatch) {
      const names = [leaf.commonName, ...leaf.dnsNames, ...leaf.uris].filter((n): n is string => n !== undefined);
      if (!names.includes(registrationId)) fail('REGISTRATION_ID_MISMATCH', `registration ID "${registrationId}" is neither the certificate CN nor one of its SANs`);
    }
    return { tenant: await this.tenantOf(chosen), enrollment: chosen, registrationId, method: 'x509-ca' };
  }

  private async attestSas(authorization: string, claimed: string | undefined, label: string | undefined): Promise<AttestationOutcome> {
    const sas = parseSasHeader(authorization);
    const m = /^([^/]+)\/registrations\/([^/]+)$/.exec(sas.sr);
    if (!m) fail('ATTESTATION_FAILED', 'sr must be <idScope>/registrations/<registrationId>');
    const [, idScope, srRegistrationId] = m as unknown as [string, string, string];
    checkRegistrationId(srRegistrationId);
    if (claimed !== undefined && claimed !== srRegistrationId) fail('REGISTRATION_ID_MISMATCH', `the body says "${claimed}" but the signature is for "${srRegistrationId}"`);
    if (sas.skn !== undefined && sas.skn !== 'registration') fail('ATTESTATION_FAILED', 'skn must be "registration"');
    if (!/^\d{1,12}$/.test(sas.se)) fail('ATTESTATION_FAILED', 'se must be seconds since the epoch');
    const nowS = Math.floor(this.deps.clock.now().getTime() / 1000);
    const se = Number(sas.se);
    if (se <= nowS) fail('SIGNATURE_EXPIRED', `the signature expired at ${new Date(se * 1000).toISOString()}`);
    if (se - nowS > this.deps.sasMaxLifetimeSeconds) fail('ATTESTATION_FAILED', `se is more than ${this.deps.sasMaxLifetimeSeconds} s in the future`);

    const tenant = await this.deps.store.getTenantByIdScope(idScope);
    if (!tenant) fail('ENROLLMENT_NOT_FOUND', `no tenant has the ID scope "${idScope}"`);
    // Devices sign the sr exactly as they send it (URL-encoded, as the Azure SDKs do); accept the
    // decoded and re-encoded forms too, since hand-written firmware differs here.
    const toSign = [...new Set([sas.srRaw, encodeURIComponent(sas.sr), sas.sr, encodeURIComponent(sas.sr).toLowerCase()])].map((s) => `${s}\n${sas.se}`);
    const matches = (deviceKeyB64: string) => {
      const key = Buffer.from(deviceKeyB64, 'base64');
      return toSign.some((s) => safeEqual(createHmac('sha256', key).update(s, 'utf8').digest('base64'), sas.sig));
    };
    const keysOf = (e: Enrollment): string[] => this.keysOf(e);
    const individuals = inScope((await this.deps.store.findIndividualEnrollments(tenant.id, srRegistrationId)).filter((e) => e.attestation.type === 'symmetric-key'), label);
    for (const e of individuals) {
      if (keysOf(e).some(matches)) return { tenant, enrollment: e, registrationId: srRegistrationId, method: 'symmetric-key' };
    }
    const groups = inScope(await this.deps.store.findGroupEnrollments(tenant.id, 'symmetric-key'), label);
    const ordered = [...groups.filter((g) => g.enabled), ...groups.filter((g) => !g.enabled)];
    for (const g of ordered) {
      if (keysOf(g).some((k) => matches(deriveDeviceKey(k, srRegistrationId)))) return { tenant, enrollment: g, registrationId: srRegistrationId, method: 'symmetric-key' };
    }
    if (individuals.length + groups.length === 0) fail('ENROLLMENT_NOT_FOUND', `tenant scope "${idScope}" has no symmetric-key enrollment${label === undefined ? '' : ` named "${label}"`}`);
    throw new FleetpassError('SIGNATURE_INVALID');
  }

  private keysOf(e: Enrollment): string[] {
    if (e.attestation.type !== 'symmetric-key') return [];
    const keys = [this.deps.secrets.open(e.attestation.sealedPrimaryKey).toString('utf8')];
    if (e.attestation.sealedSecondaryKey) keys.push(this.deps.secrets.open(e.attestation.sealedSecondaryKey).toString('utf8'));
    return keys;
  }

  /**
   * HTTP Basic (EST): the username is the registration ID. The password is either a one-time token
   * (token enrollment for that registration ID) or the device's symmetric key: an individual
   * symmetric-key enrollment's key itself, or — on a labelled path, where the label names the group —
   * the key derived from the group key as deriveDeviceKey does. A group key says nothing about the
   * tenant, so group keys are only tried for the group the label names.
   */
  private async attestBasic(username: string, password: string, claimed: string | undefined, label: string | undefined): Promise<AttestationOutcome> {
    const registrationId = checkRegistrationId(username);
    if (claimed !== undefined && claimed !== registrationId) fail('REGISTRATION_ID_MISMATCH', `the request says "${claimed}" but the credentials are for "${registrationId}"`);
    if (password.length === 0 || password.length > 512) fail('ATTESTATION_FAILED', 'the password must be a one-time token or a device key');

    const tokenEnrollment = await this.deps.store.findEnrollmentByTokenHash(sha256Hex(password));
    if (tokenEnrollment?.attestation.type === 'token') return this.attestToken(password, registrationId, label);

    const matches = (key: string) => safeEqual(key, password);
    const individuals = label === undefined ? (await this.deps.store.findIndividualEnrollments(null, registrationId)).filter((e) => e.attestation.type === 'symmetric-key') : [];
    const ordered = (list: Enrollment[]) => [...list.filter((e) => e.enabled), ...list.filter((e) => !e.enabled)];
    for (const e of ordered(individuals)) {
      if (this.keysOf(e).some(matches)) return { tenant: await this.tenantOf(e), enrollment: e, registrationId, method: 'symmetric-key' };
    }
    const groups = label === undefined ? [] : await this.deps.store.findGroupEnrollmentsByName(label, 'symmetric-key');
    for (const g of ordered(groups)) {
      if (this.keysOf(g).some((k) => matches(deriveDeviceKey(k, registrationId)))) return { tenant: await this.tenantOf(g), enrollment: g, registrationId, method: 'symmetric-key' };
    }
    if (/^fpt_/.test(password)) fail('TOKEN_INVALID');
    if (label !== undefined && groups.length === 0) fail('ENROLLMENT_NOT_FOUND', `no symmetric-key enrollment group is named "${label}"`);
    fail('ATTESTATION_FAILED', `the password is neither a valid one-time token nor the device key of "${registrationId}"`);
  }

  private async attestToken(token: string, claimed: string | undefined, label: string | undefined): Promise<AttestationOutcome> {
    if (token.length === 0 || token.length > 512) fail('TOKEN_INVALID');
    const e = await this.deps.store.findEnrollmentByTokenHash(sha256Hex(token));
    if (!e || e.attestation.type !== 'token') fail('TOKEN_INVALID');
    if (new Date(e.attestation.tokenExpiresAt) <= this.deps.clock.now()) fail('TOKEN_EXPIRED', `the token expired at ${e.attestation.tokenExpiresAt}`);
    const registrationId = e.registrationId;
    if (!registrationId) fail('ENROLLMENT_NOT_FOUND', 'token enrollment has no registration ID');
    if (claimed !== undefined && claimed !== registrationId) fail('REGISTRATION_ID_MISMATCH', `the token was issued for another registration ID`);
    if (label !== undefined) fail('ENROLLMENT_NOT_FOUND', `"${label}" names an enrollment group, but one-time tokens belong to individual enrollments: use the path without a label`);
    return { tenant: await this.tenantOf(e), enrollment: e, registrationId, method: 'token' };
  }
}

/** With a label, only the enrollment groups of that name. */
function inScope(enrollments: Enrollment[], label: string | undefined): Enrollment[] {
  return label === undefined ? enrollments : enrollments.filter((e) => e.kind === 'group' && e.name === label);
}

/** An individual enrollment for this registration ID wins over a group; enabled ones over disabled. */
function pickEnrollment(enrollments: Enrollment[], registrationId: string): Enrollment | undefined {
  const rank = (e: Enrollment) => (e.kind === 'individual' ? (e.registrationId === registrationId ? 0 : 9) : 2) + (e.enabled ? 0 : 1);
  return enrollments.filter((e) => rank(e) < 9).sort((a, b) => rank(a) - rank(b) || a.id.localeCompare(b.id))[0];
}
