/**
 * JSON Schemas of the admin API. They validate requests (unknown fields are rejected: typos must not
 * pass silently) and are the source of the OpenAPI document.
 */
const str = (maxLength = 256, extra: Record<string, unknown> = {}) => ({ type: 'string', minLength: 1, maxLength, ...extra });
const strMap = { type: 'object', additionalProperties: { type: 'string', maxLength: 1024 }, maxProperties: 100 };
const strList = (maxItems = 100) => ({ type: 'array', items: { type: 'string', maxLength: 512 }, maxItems });
const isoTime = { type: ['string', 'null'], format: 'date-time' };
export const REGISTRATION_ID_PATTERN = '^[A-Za-z0-9._:-]{1,128}$';

export const templateBody = {
  type: 'object',
  additionalProperties: false,
  description: 'Declarative mapping from the device request to its record, certificate and configuration. Strings may use ${registrationId}, ${deviceId}, ${tenantId}, ${enrollmentName} and ${<parameter>}.',
  properties: {
    deviceName: str(256),
    attributes: strMap,
    groups: strList(),
    policy: str(128),
    configuration: { type: 'object', description: 'Free-form configuration document delivered to the device.' },
    endpoints: strMap,
    certificateProfile: {
      type: 'object',
      additionalProperties: false,
      properties: {
        validityDays: { type: 'integer', minimum: 1, maximum: 3650 },
        commonName: str(256),
        organization: str(128),
        organizationalUnit: str(128),
        dnsNames: strList(20),
        uris: strList(20),
      },
    },
    validation: {
      type: 'object',
      additionalProperties: false,
      properties: {
        requiredParameters: strList(),
        allowedRegions: strList(),
        allowedModels: strList(1000),
        minFirmware: strMap,
        parameterPatterns: strMap,
      },
    },
  },
} as const;

const attestation = {
  oneOf: [
    {
      type: 'object',
      additionalProperties: false,
      required: ['type'],
      properties: {
        type: { const: 'x509-ca' },
        caCertificatePem: str(65536),
        caId: str(64),
        requireRegistrationIdMatch: { type: 'boolean', description: 'Device certificate CN or a SAN must equal the registration ID (default true).' },
      },
    },
    { type: 'object', additionalProperties: false, required: ['type', 'certificatePem'], properties: { type: { const: 'x509-leaf' }, certificatePem: str(65536) } },
    { type: 'object', additionalProperties: false, required: ['type'], properties: { type: { const: 'symmetric-key' }, primaryKey: str(512), secondaryKey: str(512) } },
    { type: 'object', additionalProperties: false, required: ['type'], properties: { type: { const: 'token' }, expiresInHours: { type: 'integer', minimum: 1, maximum: 87600 } } },
  ],
} as const;

const enrollmentCommon = {
  template: templateBody,
  templateId: str(64),
  reprovisionPolicy: { type: 'string', enum: ['reject', 'replace-key'], description: 'What happens when a registration ID comes back with a different key.' },
  enabled: { type: 'boolean' },
  expiresAt: isoTime,
  maxDevices: { type: ['integer', 'null'], minimum: 1 },
  webhookUrl: { type: ['string', 'null'], format: 'uri', maxLength: 2048, description: 'Optional pre-provisioning webhook.' },
} as const;

export const createEnrollmentGroup = {
  type: 'object',
  additionalProperties: false,
  required: ['name', 'attestation'],
  properties: { name: str(128), attestation, ...enrollmentCommon },
} as const;

export const createEnrollment = {
  type: 'object',
  additionalProperties: false,
  required: ['registrationId', 'attestation'],
  properties: { registrationId: { type: 'string', pattern: REGISTRATION_ID_PATTERN }, name: str(128), attestation, ...enrollmentCommon },
} as const;

export const patchEnrollment = {
  type: 'object',
  additionalProperties: false,
  minProperties: 1,
  properties: { name: str(128), ...enrollmentCommon, template: { anyOf: [templateBody, { type: 'null' }] }, templateId: { type: ['string', 'null'], maxLength: 64 } },
} as const;

export const createTemplate = { type: 'object', additionalProperties: false, required: ['name', 'template'], properties: { name: str(128), template: templateBody } } as const;
export const patchTemplate = { type: 'object', additionalProperties: false, minProperties: 1, properties: { name: str(128), template: templateBody } } as const;

const policyDocument = {
  type: 'object',
  additionalProperties: false,
  properties: { publish: strList(), subscribe: strList(), api: strList() },
} as const;
export const createPolicy = { type: 'object', additionalProperties: false, required: ['name', 'document'], properties: { name: str(128), document: policyDocument } } as const;
export const patchPolicy = { type: 'object', additionalProperties: false, minProperties: 1, properties: { name: str(128), document: policyDocument } } as const;

export const createTenant = { type: 'object', additionalProperties: false, required: ['name'], properties: { name: str(128) } } as const;
export const createApiKey = { type: 'object', additionalProperties: false, required: ['name', 'role'], properties: { name: str(128), role: { type: 'string', enum: ['admin', 'operator', 'viewer'] } } } as const;
export const createCa = { type: 'object', additionalProperties: false, required: ['name', 'certificatePem'], properties: { name: str(128), certificatePem: str(65536) } } as const;
export const revokeBody = {
  type: 'object',
  additionalProperties: false,
  properties: { reason: { type: 'string', enum: ['unspecified', 'keyCompromise', 'cACompromise', 'affiliationChanged', 'superseded', 'cessationOfOperation', 'certificateHold', 'privilegeWithdrawn'] } },
} as const;

export const renewalBody = {
  type: 'object',
  additionalProperties: false,
  required: ['force'],
  properties: {
    force: { type: 'boolean', description: 'true: the device may renew once outside the renewal window; false: withdraw that.' },
    until: { type: 'string', format: 'date-time', description: 'Until when the force holds (default: 7 days from now, at most a year).' },
  },
} as const;

export const idParams = { type: 'object', required: ['id'], properties: { id: str(64) } } as const;

const paging = { limit: { type: 'integer', minimum: 1, maximum: 1000, default: 100 }, cursor: str(64) };
export const listQuery = { type: 'object', additionalProperties: false, properties: { ...paging } } as const;
export const deviceListQuery = {
  type: 'object',
  additionalProperties: false,
  properties: { ...paging, registrationId: str(128), status: { type: 'string', enum: ['active', 'suspended', 'revoked'] }, enrollmentId: str(64), model: str(128), group: str(256) },
} as const;
export const certificateListQuery = {
  type: 'object',
  additionalProperties: false,
  properties: { ...paging, deviceId: str(64), status: { type: 'string', enum: ['active', 'superseded', 'revoked'] }, serial: str(64, { pattern: '^[0-9a-fA-F]+$' }) },
} as const;
export const attemptListQuery = {
  type: 'object',
  additionalProperties: false,
  properties: {
    ...paging,
    reasonCode: str(64),
    registrationId: str(128),
    enrollmentId: str(64),
    outcome: { type: 'string', enum: ['success', 'failure'] },
    unattributed: { type: 'boolean', description: 'Platform admins: attempts that failed before a tenant was known (untrusted or expired certificates, no credential).' },
    since: { type: 'string', format: 'date-time' },
    until: { type: 'string', format: 'date-time' },
  },
} as const;
export const enrollmentListQuery = {
  type: 'object',
  additionalProperties: false,
  properties: { ...paging, registrationId: str(128), attestationType: { type: 'string', enum: ['x509-ca', 'x509-leaf', 'symmetric-key', 'token'] } },
} as const;
