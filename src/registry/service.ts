import { randomBytes } from 'node:crypto';
import type { Clock } from '../core/clock.js';
import { fail } from '../core/errors.js';
import { newId, randomToken, sha256Hex } from '../core/ids.js';
import type { SecretBox } from '../kms/types.js';
import { parseCertificate } from '../pki/index.js';
import type { CertificateInfo } from '../pki/types.js';
import type { Repos, Store } from './store.js';
import { StoreConflictError } from './store.js';
import { checkTemplateBody } from './template.js';
import type {
  ApiKey, Attestation, AuditEventInput, CaRecord, Enrollment, EnrollmentKind, Policy, PolicyDocument, ReprovisionPolicy, Role, Template, TemplateBody, Tenant,
} from './types.js';

/** Who is calling the admin API: resolved from the bearer token, carried into every call. */
export interface Principal {
  apiKeyId: string;
  tenantId: string;
  role: Role;
  /** Keys of the first tenant's admins manage other tenants. */
  platformAdmin: boolean;
}

const ROLE_RANK: Record<Role, number> = { viewer: 0, operator: 1, admin: 2 };

export function requireRole(p: Principal, role: Role): void {
  if (ROLE_RANK[p.role] < ROLE_RANK[role]) fail('FORBIDDEN', `this action needs the ${role} role; the key has ${p.role}`);
}

export type AttestationInput =
  | { type: 'x509-ca'; caCertificatePem?: string; caId?: string; requireRegistrationIdMatch?: boolean }
  | { type: 'x509-leaf'; certificatePem: string }
  | { type: 'symmetric-key'; primaryKey?: string; secondaryKey?: string }
  | { type: 'token'; expiresInHours?: number };

export interface EnrollmentInput {
  name?: string;
  registrationId?: string;
  attestation: AttestationInput;
  template?: TemplateBody;
  templateId?: string;
  reprovisionPolicy?: ReprovisionPolicy;
  enabled?: boolean;
  expiresAt?: string | null;
  maxDevices?: number | null;
  webhookUrl?: string | null;
}

export interface EnrollmentPatch {
  name?: string;
  template?: TemplateBody | null;
  templateId?: string | null;
  reprovisionPolicy?: ReprovisionPolicy;
  enabled?: boolean;
  expiresAt?: string | null;
  maxDevices?: number | null;
  webhookUrl?: string | null;
}

/** Secrets shown exactly once, in the creation answer. */
export interface EnrollmentSecrets {
  primaryKey?: string;
  secondaryKey?: string;
  token?: string;
  idScope?: string;
}

export const PLATFORM_TENANT_SETTING = 'platform.tenantId';

export interface RegistryDeps {
  store: Store;
  secrets: SecretBox;
  clock: Clock;
  tokenTtlHours: number;
}

/**
 * Administrative operations on tenants, keys, CAs, templates, policies and enrollments. Every
 * mutation writes its audit event in the same transaction; every read is scoped to the caller's tenant.
 */
export class RegistryService {
  constructor(private readonly deps: RegistryDeps) {}

  private now(): string {
    return this.deps.clock.now().toISOString();
  }

  async audit(tx: Repos, p: Principal | 'system' | 'cli', e: Omit<AuditEventInput, 'actor' | 'tenantId'> & { tenantId?: string | null }): Promise<void> {
    const actor = typeof p === 'string' ? p : `apikey:${p.apiKeyId}`;
    const tenantId = e.tenantId !== undefined ? e.tenantId : typeof p === 'string' ? null : p.tenantId;
    await tx.appendAudit({ id: newId('aud'), createdAt: this.now(), actor, tenantId, action: e.action, resourceType: e.resourceType, resourceId: e.resourceId, details: e.details });
  }

  // --- tenants and API keys ---------------------------------------------------------------------

  async authenticate(bearer: string): Promise<Principal> {
    const key = await this.deps.store.getApiKeyByTokenHash(sha256Hex(bearer));
    if (!key || key.revokedAt) fail('UNAUTHENTICATED', key ? 'this API key was revoked' : undefined);
    const platformTenant = await this.deps.store.getSetting(PLATFORM_TENANT_SETTING);
    return { apiKeyId: key.id, tenantId: key.tenantId, role: key.role, platformAdmin: key.role === 'admin' && key.tenantId === platformTenant };
  }

  /** First start: the platform tenant and its first admin key. Returns the token only when it was created now. */
  async bootstrap(tenantName: string): Promise<{ tenant: Tenant; adminToken: string | null }> {
    const existing = await this.deps.store.getSetting(PLATFORM_TENANT_SETTING);
    if (existing) {
      const t = await this.deps.store.getTenant(existing);
      if (!t) throw new Error(`setting ${PLATFORM_TENANT_SETTING} names a missing tenant`);
      return { tenant: t, adminToken: null };
    }
    const tenant = this.newTenant(tenantName);
    const token = `fpk_${randomToken(32)}`;
    const key: ApiKey = { id: newId('key'), tenantId: tenant.id, name: 'bootstrap admin', role: 'admin', tokenHash: sha256Hex(token), createdAt: this.now(), revokedAt: null };
    try {
      await this.deps.store.transaction(async (tx) => {
        await tx.createTenant(tenant);
        await tx.createApiKey(key);
        if (!(await tx.putSettingIfAbsent(PLATFORM_TENANT_SETTING, tenant.id))) throw new StoreConflictError('bootstrapped concurrently');
        await this.audit(tx, 'system', { tenantId: tenant.id, action: 'tenant.create', resourceType: 'tenant', resourceId: tenant.id, details: { name: tenantName, bootstrap: true } });
      });
      return { tenant, adminToken: token };
    } catch (e) {
      if (e instanceof StoreConflictError) return this.bootstrap(tenantName);
      throw e;
    }
  }

  private newTenant(name: string): Tenant {
    // idScope: like Azure's "0ne…" scopes, short and unambiguous for firmware config.
    return { id: newId('ten'), name, idScope: `0fp${randomBytes(5).toString('hex').toUpperCase()}`, createdAt: this.now() };
  }

  async createTenant(p: Principal, name: string): Promise<{ tenant: Tenant; adminToken: string }> {
    if (!p.platformAdmin) fail('FORBIDDEN', 'only admin keys of the platform tenant create tenants');
    const tenant = this.newTenant(name);
    const token = `fpk_${randomToken(32)}`;
    const key: ApiKey = { id: newId('key'), tenantId: tenant.id, name: 'initial admin', role: 'admin', tokenHash: sha256Hex(token), createdAt: this.now(), revokedAt: null };
    await this.deps.store.transaction(async (tx) => {
      await tx.createTenant(tenant);
      await tx.createApiKey(key);
      await this.audit(tx, p, { tenantId: tenant.id, action: 'tenant.create', resourceType: 'tenant', resourceId: tenant.id, details: { name, by: p.tenantId } });
    });
    return { tenant, adminToken: token };
  }

  async getTenant(p: Principal, id: string): Promise<Tenant> {
    if (id !== p.tenantId && !p.platformAdmin) fail('NOT_FOUND');
    const t = await this.deps.store.getTenant(id);
    if (!t) fail('NOT_FOUND');
    return t;
  }

  async createApiKey(p: Principal, name: string, role: Role): Promise<{ key: ApiKey; token: string }> {
    requireRole(p, 'admin');
    const token = `fpk_${randomToken(32)}`;
    const key: ApiKey = { id: newId('key'), tenantId: p.tenantId, name, role, tokenHash: sha256Hex(token), createdAt: this.now(), revokedAt: null };
    await this.deps.store.transaction(async (tx) => {
      await tx.createApiKey(key);
      await this.audit(tx, p, { action: 'apikey.create', resourceType: 'api-key', resourceId: key.id, details: { name, role } });
    });
    return { key, token };
  }

  async revokeApiKey(p: Principal, id: string): Promise<void> {
    requireRole(p, 'admin');
    await this.deps.store.transaction(async (tx) => {
      if (!(await tx.revokeApiKey(p.tenantId, id, this.now()))) fail('NOT_FOUND');
      await this.audit(tx, p, { action: 'apikey.revoke', resourceType: 'api-key', resourceId: id, details: {} });
    });
  }

  // --- CAs --------------------------------------------------------------------------------------

  /** Parses and checks an uploaded CA certificate: must be a CA and currently valid. */
  private checkCaCertificate(pem: string): CertificateInfo {
    let info: CertificateInfo;
    try {
      info = parseCertificate(pem);
    } catch {
      fail('VALIDATION_FAILED', 'caCertificatePem is not a PEM or base64 DER X.509 certificate');
    }
    if (!info.isCa) fail('VALIDATION_FAILED', 'the certificate is not a CA certificate (basicConstraints CA:TRUE is missing)');
    const now = this.deps.clock.now();
    if (info.notAfter < now) fail('VALIDATION_FAILED', `the CA certificate expired at ${info.notAfter.toISOString()}`);
    return info;
  }

  private async uploadCa(tx: Repos, p: Principal, name: string, pem: string): Promise<CaRecord> {
    const info = this.checkCaCertificate(pem);
    const existing = (await tx.listCas(p.tenantId, { kind: 'trusted' }, { limit: 1000 })).items.find((c) => c.fingerprint === info.fingerprint && c.tenantId === p.tenantId);
    if (existing) return existing;
    const ca: CaRecord = {
      id: newId('ca'),
      tenantId: p.tenantId,
      kind: 'trusted',
      name,
      certificatePem: `-----BEGIN CERTIFICATE-----\n${info.der.toString('base64').replace(/(.{64})/g, '$1\n').trim()}\n-----END CERTIFICATE-----\n`,
      subject: info.subject,
      fingerprint: info.fingerprint,
      keyRef: null,
      parentId: null,
      notBefore: info.notBefore.toISOString(),
      notAfter: info.notAfter.toISOString(),
      createdAt: this.now(),
    };
    await tx.createCa(ca);
    await this.audit(tx, p, { action: 'ca.upload', resourceType: 'ca', resourceId: ca.id, details: { name, subject: ca.subject, fingerprint: ca.fingerprint } });
    return ca;
  }

  async createTrustedCa(p: Principal, name: string, pem: string): Promise<CaRecord> {
    requireRole(p, 'admin');
    return this.deps.store.transaction((tx) => this.uploadCa(tx, p, name, pem));
  }

  async getCa(p: Principal, id: string): Promise<CaRecord> {
    const ca = await this.deps.store.getCa(p.tenantId, id);
    if (!ca) fail('NOT_FOUND');
    return ca;
  }

  async deleteCa(p: Principal, id: string): Promise<void> {
    requireRole(p, 'admin');
    await this.deps.store.transaction(async (tx) => {
      const ca = await tx.getCa(p.tenantId, id);
      if (!ca || ca.tenantId !== p.tenantId) fail('NOT_FOUND');
      const users = await tx.findEnrollmentsByCaIds([id]);
      if (users.length > 0) fail('CONFLICT', `CA is used by ${users.length} enrollment(s), e.g. ${users[0]!.id}; delete or change them first`);
      await tx.deleteCa(p.tenantId, id);
      await this.audit(tx, p, { action: 'ca.delete', resourceType: 'ca', resourceId: id, details: { subject: ca.subject } });
    });
  }

  // --- templates and policies -------------------------------------------------------------------

  async createTemplate(p: Principal, name: string, body: TemplateBody): Promise<Template> {
    requireRole(p, 'operator');
    const problem = checkTemplateBody(body);
    if (problem) fail('VALIDATION_FAILED', problem);
    const at = this.now();
    const t: Template = { id: newId('tpl'), tenantId: p.tenantId, name, body, createdAt: at, updatedAt: at };
    await this.deps.store.transaction(async (tx) => {
      await this.conflictAsCode(() => tx.createTemplate(t), `a template named "${name}" exists`);
      await this.audit(tx, p, { action: 'template.create', resourceType: 'template', resourceId: t.id, details: { name } });
    });
    return t;
  }

  async getTemplate(p: Principal, id: string): Promise<Template> {
    const t = await this.deps.store.getTemplate(p.tenantId, id);
    if (!t) fail('NOT_FOUND');
    return t;
  }

  async updateTemplate(p: Principal, id: string, patch: { name?: string; template?: TemplateBody }): Promise<Template> {
    requireRole(p, 'operator');
    if (patch.template) {
      const problem = checkTemplateBody(patch.template);
      if (problem) fail('VALIDATION_FAILED', problem);
    }
    return this.deps.store.transaction(async (tx) => {
      const t = await tx.getTemplate(p.tenantId, id);
      if (!t) fail('NOT_FOUND');
      const next: Template = { ...t, name: patch.name ?? t.name, body: patch.template ?? t.body, updatedAt: this.now() };
      await this.conflictAsCode(() => tx.updateTemplate(next), `a template named "${next.name}" exists`);
      await this.audit(tx, p, { action: 'template.update', resourceType: 'template', resourceId: id, details: { fields: Object.keys(patch) } });
      return next;
    });
  }

  async deleteTemplate(p: Principal, id: string): Promise<void> {
    requireRole(p, 'operator');
    await this.deps.store.transaction(async (tx) => {
      const users = (await tx.listEnrollments(p.tenantId, {}, { limit: 100000 })).items.filter((e) => e.templateId === id);
      if (users.length > 0) fail('CONFLICT', `template is used by ${users.length} enrollment(s), e.g. ${users[0]!.id}`);
      if (!(await tx.deleteTemplate(p.tenantId, id))) fail('NOT_FOUND');
      await this.audit(tx, p, { action: 'template.delete', resourceType: 'template', resourceId: id, details: {} });
    });
  }

  async createPolicy(p: Principal, name: string, document: PolicyDocument): Promise<Policy> {
    requireRole(p, 'operator');
    const at = this.now();
    const pol: Policy = { id: newId('pol'), tenantId: p.tenantId, name, document, createdAt: at, updatedAt: at };
    await this.deps.store.transaction(async (tx) => {
      await this.conflictAsCode(() => tx.createPolicy(pol), `a policy named "${name}" exists`);
      await this.audit(tx, p, { action: 'policy.create', resourceType: 'policy', resourceId: pol.id, details: { name } });
    });
    return pol;
  }

  async getPolicy(p: Principal, id: string): Promise<Policy> {
    const pol = await this.deps.store.getPolicy(p.tenantId, id);
    if (!pol) fail('NOT_FOUND');
    return pol;
  }

  async updatePolicy(p: Principal, id: string, patch: { name?: string; document?: PolicyDocument }): Promise<Policy> {
    requireRole(p, 'operator');
    return this.deps.store.transaction(async (tx) => {
      const pol = await tx.getPolicy(p.tenantId, id);
      if (!pol) fail('NOT_FOUND');
      const next: Policy = { ...pol, name: patch.name ?? pol.name, document: patch.document ?? pol.document, updatedAt: this.now() };
      await this.conflictAsCode(() => tx.updatePolicy(next), `a policy named "${next.name}" exists`);
      await this.audit(tx, p, { action: 'policy.update', resourceType: 'policy', resourceId: id, details: { fields: Object.keys(patch) } });
      return next;
    });
  }

  async deletePolicy(p: Principal, id: string): Promise<void> {
    requireRole(p, 'operator');
    await this.deps.store.transaction(async (tx) => {
      if (!(await tx.deletePolicy(p.tenantId, id))) fail('NOT_FOUND');
      await this.audit(tx, p, { action: 'policy.delete', resourceType: 'policy', resourceId: id, details: {} });
    });
  }

  // --- enrollments ------------------------------------------------------------------------------

  private checkTemplateRef(body: TemplateBody | undefined | null): void {
    if (!body) return;
    const problem = checkTemplateBody(body);
    if (problem) fail('VALIDATION_FAILED', `template: ${problem}`);
  }

  private async buildAttestation(tx: Repos, p: Principal, kind: EnrollmentKind, name: string, input: AttestationInput): Promise<{ attestation: Attestation; secrets: EnrollmentSecrets }> {
    switch (input.type) {
      case 'x509-ca': {
        if ((input.caCertificatePem === undefined) === (input.caId === undefined)) fail('VALIDATION_FAILED', 'x509-ca attestation needs exactly one of caCertificatePem or caId');
        let caId = input.caId;
        if (input.caCertificatePem !== undefined) caId = (await this.uploadCa(tx, p, `${name} CA`, input.caCertificatePem)).id;
        const ca = await tx.getCa(p.tenantId, caId!);
        if (!ca || ca.kind !== 'trusted' || ca.tenantId !== p.tenantId) fail('VALIDATION_FAILED', `caId ${caId} is not a trusted CA of this tenant`);
        return { attestation: { type: 'x509-ca', caId: ca.id, requireRegistrationIdMatch: input.requireRegistrationIdMatch ?? true }, secrets: {} };
      }
      case 'x509-leaf': {
        if (kind !== 'individual') fail('VALIDATION_FAILED', 'x509-leaf attestation is for individual enrollments');
        let info: CertificateInfo;
        try {
          info = parseCertificate(input.certificatePem);
        } catch {
          fail('VALIDATION_FAILED', 'certificatePem is not an X.509 certificate');
        }
        return { attestation: { type: 'x509-leaf', certificateFingerprint: info.fingerprint, certificatePem: input.certificatePem }, secrets: {} };
      }
      case 'symmetric-key': {
        const check = (k: string | undefined, field: string) => {
          if (k !== undefined && (Buffer.from(k, 'base64').length < 16 || !/^[A-Za-z0-9+/]+={0,2}$/.test(k))) fail('VALIDATION_FAILED', `${field} must be base64 of at least 16 bytes`);
        };
        check(input.primaryKey, 'primaryKey');
        check(input.secondaryKey, 'secondaryKey');
        const primary = input.primaryKey ?? randomBytes(64).toString('base64');
        const secondary = input.secondaryKey ?? randomBytes(64).toString('base64');
        const tenant = await tx.getTenant(p.tenantId);
        return {
          attestation: { type: 'symmetric-key', sealedPrimaryKey: this.deps.secrets.seal(Buffer.from(primary)), sealedSecondaryKey: this.deps.secrets.seal(Buffer.from(secondary)) },
          secrets: { primaryKey: primary, secondaryKey: secondary, ...(tenant ? { idScope: tenant.idScope } : {}) },
        };
      }
      case 'token': {
        if (kind !== 'individual') fail('VALIDATION_FAILED', 'token attestation is for individual enrollments');
        const hours = input.expiresInHours ?? this.deps.tokenTtlHours;
        const token = `fpt_${randomToken(24)}`;
        const expires = new Date(this.deps.clock.now().getTime() + hours * 3_600_000).toISOString();
        return { attestation: { type: 'token', tokenHash: sha256Hex(token), tokenExpiresAt: expires, usedAt: null, usedByKeyFingerprint: null, usedByDeviceId: null }, secrets: { token } };
      }
    }
  }

  async createEnrollment(p: Principal, kind: EnrollmentKind, input: EnrollmentInput): Promise<{ enrollment: Enrollment; secrets: EnrollmentSecrets }> {
    requireRole(p, 'operator');
    if (kind === 'group' && !input.name) fail('VALIDATION_FAILED', 'name is required');
    if (kind === 'individual' && !input.registrationId) fail('VALIDATION_FAILED', 'registrationId is required');
    if (input.template && input.templateId) fail('VALIDATION_FAILED', 'give either template or templateId, not both');
    this.checkTemplateRef(input.template);
    return this.deps.store.transaction(async (tx) => {
      if (input.templateId && !(await tx.getTemplate(p.tenantId, input.templateId))) fail('VALIDATION_FAILED', `templateId ${input.templateId} does not exist`);
      const name = input.name ?? input.registrationId!;
      const { attestation, secrets } = await this.buildAttestation(tx, p, kind, name, input.attestation);
      const at = this.now();
      const e: Enrollment = {
        id: newId('enr'),
        tenantId: p.tenantId,
        kind,
        name,
        registrationId: kind === 'individual' ? input.registrationId! : null,
        attestation,
        templateId: input.templateId ?? null,
        template: input.template ?? null,
        reprovisionPolicy: input.reprovisionPolicy ?? 'reject',
        enabled: input.enabled ?? true,
        expiresAt: input.expiresAt ?? null,
        maxDevices: input.maxDevices ?? null,
        deviceCount: 0,
        webhookUrl: input.webhookUrl ?? null,
        createdAt: at,
        updatedAt: at,
      };
      if (kind === 'individual') {
        const same = (await tx.findIndividualEnrollments(p.tenantId, e.registrationId!)).find((x) => x.attestation.type === attestation.type);
        if (same) fail('CONFLICT', `registration ID "${e.registrationId}" already has a ${attestation.type} enrollment (${same.id})`);
      }
      await this.conflictAsCode(() => tx.createEnrollment(e), `an enrollment named "${name}" exists`);
      await this.audit(tx, p, { action: `enrollment.create`, resourceType: kind === 'group' ? 'enrollment-group' : 'enrollment', resourceId: e.id, details: { name, attestation: attestation.type } });
      return { enrollment: e, secrets };
    });
  }

  async getEnrollment(p: Principal, kind: EnrollmentKind, id: string): Promise<Enrollment> {
    const e = await this.deps.store.getEnrollment(p.tenantId, id);
    if (!e || e.kind !== kind) fail('NOT_FOUND');
    return e;
  }

  async updateEnrollment(p: Principal, kind: EnrollmentKind, id: string, patch: EnrollmentPatch): Promise<Enrollment> {
    requireRole(p, 'operator');
    this.checkTemplateRef(patch.template);
    return this.deps.store.transaction(async (tx) => {
      const e = await tx.getEnrollment(p.tenantId, id);
      if (!e || e.kind !== kind) fail('NOT_FOUND');
      if (patch.templateId && !(await tx.getTemplate(p.tenantId, patch.templateId))) fail('VALIDATION_FAILED', `templateId ${patch.templateId} does not exist`);
      const next: Enrollment = { ...e, updatedAt: this.now() };
      if (patch.name !== undefined) next.name = patch.name;
      if (patch.template !== undefined) next.template = patch.template;
      if (patch.templateId !== undefined) next.templateId = patch.templateId;
      if (next.template && next.templateId) fail('VALIDATION_FAILED', 'an enrollment has either template or templateId, not both; set the other to null');
      if (patch.reprovisionPolicy !== undefined) next.reprovisionPolicy = patch.reprovisionPolicy;
      if (patch.enabled !== undefined) next.enabled = patch.enabled;
      if (patch.expiresAt !== undefined) next.expiresAt = patch.expiresAt;
      if (patch.maxDevices !== undefined) next.maxDevices = patch.maxDevices;
      if (patch.webhookUrl !== undefined) next.webhookUrl = patch.webhookUrl;
      await this.conflictAsCode(() => tx.updateEnrollment(next), `an enrollment named "${next.name}" exists`);
      await this.audit(tx, p, { action: 'enrollment.update', resourceType: kind === 'group' ? 'enrollment-group' : 'enrollment', resourceId: id, details: { fields: Object.keys(patch) } });
      return next;
    });
  }

  async deleteEnrollment(p: Principal, kind: EnrollmentKind, id: string): Promise<void> {
    requireRole(p, 'operator');
    await this.deps.store.transaction(async (tx) => {
      const e = await tx.getEnrollment(p.tenantId, id);
      if (!e || e.kind !== kind) fail('NOT_FOUND');
      await tx.deleteEnrollment(p.tenantId, id);
      await this.audit(tx, p, { action: 'enrollment.delete', resourceType: kind === 'group' ? 'enrollment-group' : 'enrollment', resourceId: id, details: { name: e.name } });
    });
  }

  private async conflictAsCode<T>(fn: () => Promise<T>, message: string): Promise<T> {
    try {
      return await fn();
    } catch (e) {
      if (e instanceof StoreConflictError) fail('CONFLICT', message);
      throw e;
    }
  }
}

/** What the admin API shows of an attestation: never a secret. */
export function attestationView(a: Attestation): Record<string, unknown> {
  switch (a.type) {
    case 'x509-ca':
      return { type: a.type, caId: a.caId, requireRegistrationIdMatch: a.requireRegistrationIdMatch };
    case 'x509-leaf':
      return { type: a.type, certificateFingerprint: a.certificateFingerprint };
    case 'symmetric-key':
      return { type: a.type };
    case 'token':
      return { type: a.type, expiresAt: a.tokenExpiresAt, usedAt: a.usedAt, usedByDeviceId: a.usedByDeviceId };
  }
}
