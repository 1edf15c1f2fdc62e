/** Domain records. Timestamps are ISO-8601 UTC strings with milliseconds (lexically ordered). */

export type Role = 'admin' | 'operator' | 'viewer';

export interface Tenant {
  id: string;
  name: string;
  /** Azure-DPS-style scope that symmetric-key devices put in `sr=<idScope>/registrations/<id>`. */
  idScope: string;
  createdAt: string;
}

export interface ApiKey {
  id: string;
  tenantId: string;
  name: string;
  role: Role;
  /** sha256 hex of the bearer token; the token itself is never stored. */
  tokenHash: string;
  createdAt: string;
  revokedAt: string | null;
}

/** root/issuing: held by Fleetpass (key behind the key manager). trusted: uploaded manufacturer or claim CA. */
export type CaKind = 'root' | 'issuing' | 'trusted';

export interface CaRecord {
  id: string;
  /** null for the platform's own root and issuing CAs. */
  tenantId: string | null;
  kind: CaKind;
  name: string;
  certificatePem: string;
  subject: string;
  /** sha256 hex of the certificate DER. */
  fingerprint: string;
  keyRef: string | null;
  parentId: string | null;
  notBefore: string;
  notAfter: string;
  createdAt: string;
}

export type AttestationType = 'x509-ca' | 'x509-leaf' | 'symmetric-key' | 'token';

export type Attestation =
  | { type: 'x509-ca'; caId: string; /** whether the certificate CN or a SAN must equal the registration ID */ requireRegistrationIdMatch: boolean }
  | { type: 'x509-leaf'; certificateFingerprint: string; certificatePem: string }
  | { type: 'symmetric-key'; sealedPrimaryKey: string; sealedSecondaryKey: string | null }
  | { type: 'token'; tokenHash: string; tokenExpiresAt: string; usedAt: string | null; usedByKeyFingerprint: string | null; usedByDeviceId: string | null };

export interface CertificateProfileSpec {
  validityDays?: number;
  /** Subject CN pattern; default `${deviceId}`. */
  commonName?: string;
  organization?: string;
  organizationalUnit?: string;
  dnsNames?: string[];
  uris?: string[];
}

export interface TemplateValidation {
  requiredParameters?: string[];
  allowedRegions?: string[];
  allowedModels?: string[];
  /** model (or `*`) → minimum firmware version (dotted numeric, semver-like). */
  minFirmware?: Record<string, string>;
  /** parameter → regular expression it must match. */
  parameterPatterns?: Record<string, string>;
}

export interface TemplateBody {
  /** Pattern such as `${model}-${registrationId}`; default `${registrationId}`. */
  deviceName?: string;
  attributes?: Record<string, string>;
  groups?: string[];
  /** Name of a policy in the same tenant. */
  policy?: string;
  configuration?: Record<string, unknown>;
  endpoints?: Record<string, string>;
  certificateProfile?: CertificateProfileSpec;
  validation?: TemplateValidation;
}

export interface Template {
  id: string;
  tenantId: string;
  name: string;
  body: TemplateBody;
  createdAt: string;
  updatedAt: string;
}

export interface PolicyDocument {
  /** MQTT topic filters with `${deviceId}`, `${registrationId}`, `${tenantId}` substitution. */
  publish?: string[];
  subscribe?: string[];
  /** Device API rights, e.g. `configuration:read`. */
  api?: string[];
}

export interface Policy {
  id: string;
  tenantId: string;
  name: string;
  document: PolicyDocument;
  createdAt: string;
  updatedAt: string;
}

export type EnrollmentKind = 'group' | 'individual';
/** reject: a second key for a registration ID is a collision. replace-key: the new key wins, old certificates are superseded. */
export type ReprovisionPolicy = 'reject' | 'replace-key';

export interface Enrollment {
  id: string;
  tenantId: string;
  kind: EnrollmentKind;
  name: string;
  /** Individual enrollments only. */
  registrationId: string | null;
  attestation: Attestation;
  /** A named template, or an inline one; neither = default template. */
  templateId: string | null;
  template: TemplateBody | null;
  reprovisionPolicy: ReprovisionPolicy;
  enabled: boolean;
  expiresAt: string | null;
  maxDevices: number | null;
  deviceCount: number;
  webhookUrl: string | null;
  createdAt: string;
  updatedAt: string;
}

export type DeviceStatus = 'active' | 'suspended' | 'revoked';

export interface Device {
  id: string;
  tenantId: string;
  enrollmentId: string;
  registrationId: string;
  name: string;
  model: string | null;
  firmwareVersion: string | null;
  region: string | null;
  status: DeviceStatus;
  publicKeyFingerprint: string;
  attributes: Record<string, string>;
  groups: string[];
  policyName: string | null;
  configuration: Record<string, unknown>;
  configurationVersion: number;
  createdAt: string;
  updatedAt: string;
  provisionedAt: string;
}

export type CertificateStatus = 'active' | 'superseded' | 'revoked';

export interface CertificateRecord {
  id: string;
  tenantId: string | null;
  deviceId: string | null;
  /** Lower-case hex; unique across all certificates. */
  serial: string;
  issuerCaId: string;
  subject: string;
  notBefore: string;
  notAfter: string;
  publicKeyFingerprint: string;
  pem: string;
  status: CertificateStatus;
  revokedAt: string | null;
  revocationReason: string | null;
  createdAt: string;
}

export interface AttemptRecord {
  id: string;
  tenantId: string | null;
  enrollmentId: string | null;
  registrationId: string | null;
  protocol: string;
  sourceAddress: string | null;
  outcome: 'success' | 'failure';
  reasonCode: string | null;
  message: string | null;
  deviceId: string | null;
  latencyMs: number;
  createdAt: string;
}

export interface AuditEventInput {
  tenantId: string | null;
  /** `apikey:<id>`, `system`, `cli`, or `device:<id>`. */
  actor: string;
  action: string;
  resourceType: string;
  resourceId: string | null;
  details: Record<string, unknown>;
}

export interface AuditEvent extends AuditEventInput {
  seq: number;
  id: string;
  createdAt: string;
  prevHash: string;
  hash: string;
}

export interface Page<T> {
  items: T[];
  /** Opaque cursor for the next page, or null at the end. */
  next: string | null;
}

export interface PageRequest {
  limit: number;
  cursor?: string | null;
}
