/**
 * Kysely table types for the Fleetpass store. One schema for both dialects:
 * - timestamps are TEXT ISO-8601 UTC strings with milliseconds (lexically ordered);
 * - JSON documents are TEXT (JSON.stringify);
 * - booleans are INTEGER 0/1;
 * - columns that queries filter on are real columns; the row mappers in ./mappers.ts convert rows to
 *   the camelCase domain records of src/registry/types.ts.
 */

export interface TenantsTable {
  id: string;
  name: string;
  id_scope: string;
  created_at: string;
}

export interface ApiKeysTable {
  id: string;
  tenant_id: string;
  name: string;
  role: string;
  token_hash: string;
  created_at: string;
  revoked_at: string | null;
}

export interface CasTable {
  id: string;
  tenant_id: string | null;
  kind: string;
  name: string;
  certificate_pem: string;
  subject: string;
  fingerprint: string;
  key_ref: string | null;
  parent_id: string | null;
  not_before: string;
  not_after: string;
  created_at: string;
}

export interface TemplatesTable {
  id: string;
  tenant_id: string;
  name: string;
  /** JSON TemplateBody */
  body: string;
  created_at: string;
  updated_at: string;
}

export interface PoliciesTable {
  id: string;
  tenant_id: string;
  name: string;
  /** JSON PolicyDocument */
  document: string;
  created_at: string;
  updated_at: string;
}

export interface EnrollmentsTable {
  id: string;
  tenant_id: string;
  kind: string;
  name: string;
  registration_id: string | null;
  attestation_type: string;
  /** JSON Attestation (for tokens, the usage columns below are authoritative). */
  attestation: string;
  /** x509-ca attestations: the CA id. */
  ca_id: string | null;
  /** token attestations: sha256 of the token; unique where not null. */
  token_hash: string | null;
  token_used_at: string | null;
  token_used_by_key_fingerprint: string | null;
  token_used_by_device_id: string | null;
  template_id: string | null;
  /** JSON TemplateBody or null */
  template: string | null;
  reprovision_policy: string;
  enabled: number;
  expires_at: string | null;
  max_devices: number | null;
  device_count: number;
  webhook_url: string | null;
  created_at: string;
  updated_at: string;
}

export interface DevicesTable {
  id: string;
  tenant_id: string;
  enrollment_id: string;
  registration_id: string;
  name: string;
  model: string | null;
  firmware_version: string | null;
  region: string | null;
  status: string;
  public_key_fingerprint: string;
  /** JSON Record<string, string> */
  attributes: string;
  /** JSON string[] (also exploded into device_groups for filtering) */
  groups: string;
  policy_name: string | null;
  /** JSON Record<string, unknown> */
  configuration: string;
  configuration_version: number;
  created_at: string;
  updated_at: string;
  provisioned_at: string;
}

/** One row per (device, group) so that devices can be filtered by group portably; cascades with the device. */
export interface DeviceGroupsTable {
  device_id: string;
  tenant_id: string;
  group_name: string;
}

export interface CertificatesTable {
  id: string;
  tenant_id: string | null;
  device_id: string | null;
  serial: string;
  issuer_ca_id: string;
  subject: string;
  not_before: string;
  not_after: string;
  public_key_fingerprint: string;
  pem: string;
  status: string;
  revoked_at: string | null;
  revocation_reason: string | null;
  created_at: string;
}

export interface AttemptsTable {
  id: string;
  tenant_id: string | null;
  enrollment_id: string | null;
  registration_id: string | null;
  protocol: string;
  source_address: string | null;
  outcome: string;
  reason_code: string | null;
  message: string | null;
  device_id: string | null;
  latency_ms: number;
  created_at: string;
}

export interface AuditEventsTable {
  /** Assigned by appendAudit under the chain lock: last seq + 1, gap-free from 1. */
  seq: number;
  id: string;
  tenant_id: string | null;
  actor: string;
  action: string;
  resource_type: string;
  resource_id: string | null;
  /** JSON Record<string, unknown> */
  details: string;
  created_at: string;
  prev_hash: string;
  hash: string;
}

export interface SettingsTable {
  key: string;
  value: string;
}

export interface ConfigVersionTable {
  id: number;
  /** bigint: a string on PostgreSQL (pg), a number on SQLite. */
  version: number | string | bigint;
}

export interface Database {
  tenants: TenantsTable;
  api_keys: ApiKeysTable;
  cas: CasTable;
  templates: TemplatesTable;
  policies: PoliciesTable;
  enrollments: EnrollmentsTable;
  devices: DevicesTable;
  device_groups: DeviceGroupsTable;
  certificates: CertificatesTable;
  attempts: AttemptsTable;
  audit_events: AuditEventsTable;
  settings: SettingsTable;
  config_version: ConfigVersionTable;
}

/**
 * Named unique keys (besides each table's primary key, named `<table>_pkey`). The migrations create them
 * under these names and the SQLite error classifier maps "UNIQUE constraint failed: t.a, t.b" back to
 * them, so StoreConflictError.constraint is the same string on both dialects.
 */
export const UNIQUE_KEYS = {
  tenants_id_scope_key: { table: 'tenants', columns: ['id_scope'] },
  api_keys_token_hash_key: { table: 'api_keys', columns: ['token_hash'] },
  templates_tenant_name_key: { table: 'templates', columns: ['tenant_id', 'name'] },
  policies_tenant_name_key: { table: 'policies', columns: ['tenant_id', 'name'] },
  enrollments_token_hash_key: { table: 'enrollments', columns: ['token_hash'] },
  devices_tenant_registration_id_key: { table: 'devices', columns: ['tenant_id', 'registration_id'] },
  certificates_serial_key: { table: 'certificates', columns: ['serial'] },
  audit_events_id_key: { table: 'audit_events', columns: ['id'] },
} as const satisfies Record<string, { table: keyof Database; columns: readonly string[] }>;

export type UniqueKeyName = keyof typeof UNIQUE_KEYS;
