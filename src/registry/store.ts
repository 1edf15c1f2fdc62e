import type {
  ApiKey, AttemptRecord, AuditEvent, AuditEventInput, CaKind, CaRecord, CertificateRecord, CertificateStatus,
  Device, DeviceStatus, Enrollment, EnrollmentKind, AttestationType, Page, PageRequest, Policy, Template, Tenant,
} from './types.js';

/**
 * The store interfaces the registry, pipeline and lifecycle code need. Implemented by src/storage for
 * SQLite and PostgreSQL and checked by one contract suite on both.
 *
 * Conventions: every tenant-owned lookup takes the tenantId and returns undefined for another tenant's
 * row (callers answer 404, so existence does not leak). Create methods throw StoreConflictError on a
 * unique-constraint violation. Lists are ordered by id ascending; `next` is the last id of the page.
 */
export class StoreConflictError extends Error {
  constructor(message: string, readonly constraint?: string) {
    super(message);
    this.name = 'StoreConflictError';
  }
}

export interface TenantRepo {
  createTenant(t: Tenant): Promise<void>;
  getTenant(id: string): Promise<Tenant | undefined>;
  getTenantByIdScope(idScope: string): Promise<Tenant | undefined>;
  listTenants(page: PageRequest): Promise<Page<Tenant>>;
}

export interface ApiKeyRepo {
  createApiKey(k: ApiKey): Promise<void>;
  getApiKeyByTokenHash(tokenHash: string): Promise<ApiKey | undefined>;
  listApiKeys(tenantId: string, page: PageRequest): Promise<Page<ApiKey>>;
  /** Sets revokedAt; false if not found in that tenant. */
  revokeApiKey(tenantId: string, id: string, at: string): Promise<boolean>;
}

export interface CaRepo {
  createCa(ca: CaRecord): Promise<void>;
  /** tenantId null = a platform CA; a tenant may read platform CAs and its own. */
  getCa(tenantId: string | null, id: string): Promise<CaRecord | undefined>;
  listCas(tenantId: string | null, filter: { kind?: CaKind }, page: PageRequest): Promise<Page<CaRecord>>;
  /** Trusted (uploaded) CAs of every tenant whose subject equals `subject` — used to find a client certificate's issuer. */
  findTrustedCasBySubject(subject: string): Promise<CaRecord[]>;
  deleteCa(tenantId: string, id: string): Promise<boolean>;
}

export interface TemplateRepo {
  createTemplate(t: Template): Promise<void>;
  getTemplate(tenantId: string, id: string): Promise<Template | undefined>;
  getTemplateByName(tenantId: string, name: string): Promise<Template | undefined>;
  listTemplates(tenantId: string, page: PageRequest): Promise<Page<Template>>;
  updateTemplate(t: Template): Promise<boolean>;
  deleteTemplate(tenantId: string, id: string): Promise<boolean>;
}

export interface PolicyRepo {
  createPolicy(p: Policy): Promise<void>;
  getPolicy(tenantId: string, id: string): Promise<Policy | undefined>;
  getPolicyByName(tenantId: string, name: string): Promise<Policy | undefined>;
  listPolicies(tenantId: string, page: PageRequest): Promise<Page<Policy>>;
  updatePolicy(p: Policy): Promise<boolean>;
  deletePolicy(tenantId: string, id: string): Promise<boolean>;
}

export interface EnrollmentFilter {
  kind?: EnrollmentKind;
  attestationType?: AttestationType;
  registrationId?: string;
}

export interface EnrollmentRepo {
  createEnrollment(e: Enrollment): Promise<void>;
  getEnrollment(tenantId: string, id: string): Promise<Enrollment | undefined>;
  listEnrollments(tenantId: string, filter: EnrollmentFilter, page: PageRequest): Promise<Page<Enrollment>>;
  /** Replaces every mutable field (name, attestation, template, policy, limits, enabled, expiry, webhook). */
  updateEnrollment(e: Enrollment): Promise<boolean>;
  deleteEnrollment(tenantId: string, id: string): Promise<boolean>;
  /** Individual enrollments for a registration ID; tenantId null = any tenant. */
  findIndividualEnrollments(tenantId: string | null, registrationId: string): Promise<Enrollment[]>;
  /** Group enrollments of a tenant with the given attestation type. */
  findGroupEnrollments(tenantId: string, attestationType: AttestationType): Promise<Enrollment[]>;
  /** Group enrollments of any tenant with this exact name and attestation type (EST labels name a group). */
  findGroupEnrollmentsByName(name: string, attestationType: AttestationType): Promise<Enrollment[]>;
  /** Enrollments (any tenant) whose x509-ca attestation names one of these CA ids. */
  findEnrollmentsByCaIds(caIds: string[]): Promise<Enrollment[]>;
  /** The token enrollment whose attestation.tokenHash equals this hash (any tenant). */
  findEnrollmentByTokenHash(tokenHash: string): Promise<Enrollment | undefined>;
  /** Atomically deviceCount += 1 unless maxDevices is reached; false when exhausted. */
  incrementDeviceCount(id: string): Promise<boolean>;
  /** Atomically deviceCount -= 1 (not below 0). */
  decrementDeviceCount(id: string): Promise<void>;
  /** Marks a token enrollment used, only if it is not used yet; false if someone else used it first. */
  markTokenUsed(id: string, usedAt: string, keyFingerprint: string, deviceId: string): Promise<boolean>;
}

export interface DeviceFilter {
  registrationId?: string;
  status?: DeviceStatus;
  enrollmentId?: string;
  model?: string;
  group?: string;
}

export interface DeviceRepo {
  /** Throws StoreConflictError when (tenantId, registrationId) exists. */
  createDevice(d: Device): Promise<void>;
  getDevice(tenantId: string, id: string): Promise<Device | undefined>;
  getDeviceByRegistrationId(tenantId: string, registrationId: string): Promise<Device | undefined>;
  listDevices(tenantId: string, filter: DeviceFilter, page: PageRequest): Promise<Page<Device>>;
  /** Replaces every mutable field. */
  updateDevice(d: Device): Promise<boolean>;
  deleteDevice(tenantId: string, id: string): Promise<boolean>;
  countDevices(tenantId: string, filter: DeviceFilter): Promise<number>;
}

export interface CertificateFilter {
  deviceId?: string;
  status?: CertificateStatus;
  serial?: string;
}

export interface CertificateRepo {
  /**
   * Throws StoreConflictError on a duplicate serial. Inside a PostgreSQL transaction a conflict
   * (random ID or serial) aborts the whole transaction.
   */
  createCertificate(c: CertificateRecord): Promise<void>;
  /** tenantId null = any tenant (device-facing lookups by id). */
  getCertificate(tenantId: string | null, id: string): Promise<CertificateRecord | undefined>;
  getCertificateBySerial(serial: string): Promise<CertificateRecord | undefined>;
  listCertificates(tenantId: string, filter: CertificateFilter, page: PageRequest): Promise<Page<CertificateRecord>>;
  /** Active certificate of a device for a public key, if any (idempotent retries return it). */
  findActiveCertificate(deviceId: string, publicKeyFingerprint: string): Promise<CertificateRecord | undefined>;
  /**
   * Sets status (and revokedAt/reason for 'revoked') on one certificate; false if not found — or, with
   * `onlyIfStatus`, if its status is not that one (a compare-and-set: concurrent renewals and revocations
   * cannot overwrite each other).
   */
  setCertificateStatus(id: string, status: CertificateStatus, revokedAt: string | null, reason: string | null, onlyIfStatus?: CertificateStatus): Promise<boolean>;
  /** Sets status on every certificate of a device currently in `fromStatus`; returns how many changed. */
  setDeviceCertificatesStatus(deviceId: string, fromStatus: CertificateStatus, toStatus: CertificateStatus, revokedAt: string | null, reason: string | null): Promise<number>;
  /** Revoked certificates issued by a CA that have not expired before `notAfterSince` — the CRL's entries. */
  listRevokedCertificates(issuerCaId: string, notAfterSince: string): Promise<CertificateRecord[]>;
}

export interface AttemptFilter {
  reasonCode?: string;
  registrationId?: string;
  enrollmentId?: string;
  outcome?: 'success' | 'failure';
  since?: string;
  until?: string;
}

export interface AttemptRepo {
  /** Inside a PostgreSQL transaction a conflict (random ID) aborts the whole transaction. */
  recordAttempt(a: AttemptRecord): Promise<void>;
  /**
   * Attempts of one tenant; tenantId null = attempts that failed before any tenant could be known
   * (untrusted or expired certificates, no credential) — shown to platform admins only.
   */
  listAttempts(tenantId: string | null, filter: AttemptFilter, page: PageRequest): Promise<Page<AttemptRecord>>;
}

export interface AuditRepo {
  /**
   * Appends one event to the global hash chain: assigns seq, prevHash (hash of the previous row, or the
   * genesis hash) and hash = auditEventHash(...), serialised across processes (SQLite write lock,
   * PostgreSQL advisory lock). Returns the stored event.
   */
  appendAudit(e: AuditEventInput & { id: string; createdAt: string }): Promise<AuditEvent>;
  listAudit(tenantId: string, page: PageRequest): Promise<Page<AuditEvent>>;
  /** Every event in seq order, in batches, for verification. */
  iterateAudit(batchSize: number): AsyncIterable<AuditEvent[]>;
}

export interface SettingsRepo {
  getSetting(key: string): Promise<string | undefined>;
  /** Insert-only: returns false if the key exists already (first writer wins across processes). */
  putSettingIfAbsent(key: string, value: string): Promise<boolean>;
  setSetting(key: string, value: string): Promise<void>;
  /** Removes the key; false if there was none. */
  deleteSetting(key: string): Promise<boolean>;
  /**
   * The configuration version: changes whenever a tenant, CA, template, policy or enrollment
   * configuration changes (not on device counts or token use), in the same transaction. ConfigCache
   * reads it once per request.
   */
  getConfigVersion(): Promise<string>;
}

export interface Repos
  extends TenantRepo, ApiKeyRepo, CaRepo, TemplateRepo, PolicyRepo, EnrollmentRepo, DeviceRepo, CertificateRepo,
    AttemptRepo, AuditRepo, SettingsRepo {}

export interface Store extends Repos {
  readonly dialect: 'sqlite' | 'postgres';
  /**
   * Runs fn in one database transaction; everything done through `tx` commits or rolls back together.
   * fn may be run more than once (a store that commits several transactions together runs each
   * again alone when their shared commit fails), so it acts only through `tx`; whatever else should
   * happen on success belongs after the returned promise resolves.
   */
  transaction<T>(fn: (tx: Repos) => Promise<T>): Promise<T>;
  /** Cheap liveness query for /readyz. */
  ping(): Promise<void>;
  /**
   * How many store transactions ran, in how many database transactions: fewer on SQLite under load
   * (group commit), so the ratio is the mean group size. Counts of this process since it opened.
   */
  transactionStats(): { transactions: number; databaseTransactions: number };
  close(): Promise<void>;
}
