/** Row ⇄ record conversion: snake_case TEXT/INTEGER columns ⇄ the camelCase records of src/registry/types.ts. */
import type { Insertable, Selectable } from 'kysely';
import type {
  ApiKey, AttemptRecord, Attestation, AuditEvent, CaKind, CaRecord, CertificateRecord, CertificateStatus,
  Device, DeviceStatus, Enrollment, EnrollmentKind, Policy, PolicyDocument, ReprovisionPolicy, Role, Template, TemplateBody,
  Tenant,
} from '../registry/types.js';
import type {
  ApiKeysTable, AttemptsTable, AuditEventsTable, CasTable, CertificatesTable, DevicesTable, EnrollmentsTable,
  PoliciesTable, TemplatesTable, TenantsTable,
} from './schema.js';

function json(value: unknown): string {
  return JSON.stringify(value ?? null);
}

function parse<T>(text: string): T {
  return JSON.parse(text) as T;
}

/** What a value looks like after a JSON round trip through the database (drops undefined, Dates → strings, …). */
export function jsonRoundTrip<T>(value: T): T {
  return JSON.parse(JSON.stringify(value ?? null)) as T;
}

// --- tenants ----------------------------------------------------------------------------------

export function tenantToRow(t: Tenant): Insertable<TenantsTable> {
  return { id: t.id, name: t.name, id_scope: t.idScope, created_at: t.createdAt };
}

export function tenantFromRow(r: Selectable<TenantsTable>): Tenant {
  return { id: r.id, name: r.name, idScope: r.id_scope, createdAt: r.created_at };
}

// --- api keys ---------------------------------------------------------------------------------

export function apiKeyToRow(k: ApiKey): Insertable<ApiKeysTable> {
  return {
    id: k.id, tenant_id: k.tenantId, name: k.name, role: k.role, token_hash: k.tokenHash, created_at: k.createdAt,
    revoked_at: k.revokedAt,
  };
}

export function apiKeyFromRow(r: Selectable<ApiKeysTable>): ApiKey {
  return {
    id: r.id, tenantId: r.tenant_id, name: r.name, role: r.role as Role, tokenHash: r.token_hash, createdAt: r.created_at,
    revokedAt: r.revoked_at,
  };
}

// --- CAs --------------------------------------------------------------------------------------

export function caToRow(c: CaRecord): Insertable<CasTable> {
  return {
    id: c.id, tenant_id: c.tenantId, kind: c.kind, name: c.name, certificate_pem: c.certificatePem, subject: c.subject,
    fingerprint: c.fingerprint, key_ref: c.keyRef, parent_id: c.parentId, not_before: c.notBefore, not_after: c.notAfter,
    created_at: c.createdAt,
  };
}

export function caFromRow(r: Selectable<CasTable>): CaRecord {
  return {
    id: r.id, tenantId: r.tenant_id, kind: r.kind as CaKind, name: r.name, certificatePem: r.certificate_pem,
    subject: r.subject, fingerprint: r.fingerprint, keyRef: r.key_ref, parentId: r.parent_id, notBefore: r.not_before,
    notAfter: r.not_after, createdAt: r.created_at,
  };
}

// --- templates and policies -------------------------------------------------------------------

export function templateToRow(t: Template): Insertable<TemplatesTable> {
  return { id: t.id, tenant_id: t.tenantId, name: t.name, body: json(t.body), created_at: t.createdAt, updated_at: t.updatedAt };
}

export function templateFromRow(r: Selectable<TemplatesTable>): Template {
  return {
    id: r.id, tenantId: r.tenant_id, name: r.name, body: parse<TemplateBody>(r.body), createdAt: r.created_at,
    updatedAt: r.updated_at,
  };
}

export function policyToRow(p: Policy): Insertable<PoliciesTable> {
  return {
    id: p.id, tenant_id: p.tenantId, name: p.name, document: json(p.document), created_at: p.createdAt,
    updated_at: p.updatedAt,
  };
}

export function policyFromRow(r: Selectable<PoliciesTable>): Policy {
  return {
    id: r.id, tenantId: r.tenant_id, name: r.name, document: parse<PolicyDocument>(r.document), createdAt: r.created_at,
    updatedAt: r.updated_at,
  };
}

// --- enrollments ------------------------------------------------------------------------------

/** The query columns derived from an attestation (kept in sync with the JSON on every write). */
export function attestationColumns(a: Attestation): Pick<
  EnrollmentsTable,
  'attestation_type' | 'attestation' | 'ca_id' | 'token_hash' | 'token_used_at' | 'token_used_by_key_fingerprint' | 'token_used_by_device_id'
> {
  return {
    attestation_type: a.type,
    attestation: json(a),
    ca_id: a.type === 'x509-ca' ? a.caId : null,
    token_hash: a.type === 'token' ? a.tokenHash : null,
    token_used_at: a.type === 'token' ? a.usedAt : null,
    token_used_by_key_fingerprint: a.type === 'token' ? a.usedByKeyFingerprint : null,
    token_used_by_device_id: a.type === 'token' ? a.usedByDeviceId : null,
  };
}

export function enrollmentToRow(e: Enrollment): Insertable<EnrollmentsTable> {
  return {
    id: e.id,
    tenant_id: e.tenantId,
    kind: e.kind,
    name: e.name,
    registration_id: e.registrationId,
    ...attestationColumns(e.attestation),
    template_id: e.templateId,
    template: e.template === null ? null : json(e.template),
    reprovision_policy: e.reprovisionPolicy,
    enabled: e.enabled ? 1 : 0,
    expires_at: e.expiresAt,
    max_devices: e.maxDevices,
    device_count: e.deviceCount,
    webhook_url: e.webhookUrl,
    created_at: e.createdAt,
    updated_at: e.updatedAt,
  };
}

export function enrollmentFromRow(r: Selectable<EnrollmentsTable>): Enrollment {
  let attestation = parse<Attestation>(r.attestation);
  if (attestation.type === 'token') {
    // The usage columns are authoritative: markTokenUsed updates them atomically, not the JSON.
    attestation = {
      ...attestation,
      usedAt: r.token_used_at,
      usedByKeyFingerprint: r.token_used_by_key_fingerprint,
      usedByDeviceId: r.token_used_by_device_id,
    };
  }
  return {
    id: r.id,
    tenantId: r.tenant_id,
    kind: r.kind as EnrollmentKind,
    name: r.name,
    registrationId: r.registration_id,
    attestation,
    templateId: r.template_id,
    template: r.template === null ? null : parse<TemplateBody>(r.template),
    reprovisionPolicy: r.reprovision_policy as ReprovisionPolicy,
    enabled: Number(r.enabled) !== 0,
    expiresAt: r.expires_at,
    maxDevices: r.max_devices === null ? null : Number(r.max_devices),
    deviceCount: Number(r.device_count),
    webhookUrl: r.webhook_url,
    createdAt: r.created_at,
    updatedAt: r.updated_at,
  };
}

// --- devices ----------------------------------------------------------------------------------

export function deviceToRow(d: Device): Insertable<DevicesTable> {
  return {
    id: d.id,
    tenant_id: d.tenantId,
    enrollment_id: d.enrollmentId,
    registration_id: d.registrationId,
    name: d.name,
    model: d.model,
    firmware_version: d.firmwareVersion,
    region: d.region,
    status: d.status,
    public_key_fingerprint: d.publicKeyFingerprint,
    attributes: json(d.attributes ?? {}),
    groups: json(d.groups ?? []),
    policy_name: d.policyName,
    configuration: json(d.configuration ?? {}),
    configuration_version: d.configurationVersion,
    created_at: d.createdAt,
    updated_at: d.updatedAt,
    provisioned_at: d.provisionedAt,
  };
}

export function deviceFromRow(r: Selectable<DevicesTable>): Device {
  return {
    id: r.id,
    tenantId: r.tenant_id,
    enrollmentId: r.enrollment_id,
    registrationId: r.registration_id,
    name: r.name,
    model: r.model,
    firmwareVersion: r.firmware_version,
    region: r.region,
    status: r.status as DeviceStatus,
    publicKeyFingerprint: r.public_key_fingerprint,
    attributes: parse<Record<string, string>>(r.attributes),
    groups: parse<string[]>(r.groups),
    policyName: r.policy_name,
    configuration: parse<Record<string, unknown>>(r.configuration),
    configurationVersion: Number(r.configuration_version),
    createdAt: r.created_at,
    updatedAt: r.updated_at,
    provisionedAt: r.provisioned_at,
  };
}

// --- certificates -----------------------------------------------------------------------------

export function certificateToRow(c: CertificateRecord): Insertable<CertificatesTable> {
  return {
    id: c.id, tenant_id: c.tenantId, device_id: c.deviceId, serial: c.serial, issuer_ca_id: c.issuerCaId,
    subject: c.subject, not_before: c.notBefore, not_after: c.notAfter, public_key_fingerprint: c.publicKeyFingerprint,
    pem: c.pem, status: c.status, revoked_at: c.revokedAt, revocation_reason: c.revocationReason, created_at: c.createdAt,
  };
}

export function certificateFromRow(r: Selectable<CertificatesTable>): CertificateRecord {
  return {
    id: r.id, tenantId: r.tenant_id, deviceId: r.device_id, serial: r.serial, issuerCaId: r.issuer_ca_id,
    subject: r.subject, notBefore: r.not_before, notAfter: r.not_after, publicKeyFingerprint: r.public_key_fingerprint,
    pem: r.pem, status: r.status as CertificateStatus, revokedAt: r.revoked_at, revocationReason: r.revocation_reason,
    createdAt: r.created_at,
  };
}

// --- attempts ---------------------------------------------------------------------------------

export function attemptToRow(a: AttemptRecord): Insertable<AttemptsTable> {
  return {
    id: a.id, tenant_id: a.tenantId, enrollment_id: a.enrollmentId, registration_id: a.registrationId,
    protocol: a.protocol, source_address: a.sourceAddress, outcome: a.outcome, reason_code: a.reasonCode,
    message: a.message, device_id: a.deviceId,
    // INTEGER column: whole milliseconds (a fractional value would be rejected by PostgreSQL).
    latency_ms: Math.max(0, Math.round(a.latencyMs)),
    created_at: a.createdAt,
  };
}

export function attemptFromRow(r: Selectable<AttemptsTable>): AttemptRecord {
  return {
    id: r.id, tenantId: r.tenant_id, enrollmentId: r.enrollment_id, registrationId: r.registration_id,
    protocol: r.protocol, sourceAddress: r.source_address, outcome: r.outcome as AttemptRecord['outcome'],
    reasonCode: r.reason_code, message: r.message, deviceId: r.device_id, latencyMs: Number(r.latency_ms),
    createdAt: r.created_at,
  };
}

// --- audit ------------------------------------------------------------------------------------

export function auditToRow(e: AuditEvent): Insertable<AuditEventsTable> {
  return {
    seq: e.seq, id: e.id, tenant_id: e.tenantId, actor: e.actor, action: e.action, resource_type: e.resourceType,
    resource_id: e.resourceId, details: json(e.details), created_at: e.createdAt, prev_hash: e.prevHash, hash: e.hash,
  };
}

export function auditFromRow(r: Selectable<AuditEventsTable>): AuditEvent {
  return {
    seq: Number(r.seq), id: r.id, tenantId: r.tenant_id, actor: r.actor, action: r.action, resourceType: r.resource_type,
    resourceId: r.resource_id, details: parse<Record<string, unknown>>(r.details), createdAt: r.created_at,
    prevHash: r.prev_hash, hash: r.hash,
  };
}
