/**
 * The single reason-code registry. Every failure anywhere in Fleetpass carries one of these codes;
 * adapters map them to their wire form using `httpStatus`. `docs/reason-codes.md` is kept in sync
 * with this table by a test.
 */
export interface ReasonCodeInfo {
  readonly httpStatus: number;
  /** One line: what happened. */
  readonly meaning: string;
  /** One line: what the caller should do next. */
  readonly action: string;
  /** Whether a device may retry the same request later and expect a different outcome. */
  readonly retryable: boolean;
}

export const REASON_CODES = {
  // --- request shape -------------------------------------------------------------------------
  BAD_REQUEST: { httpStatus: 400, meaning: 'The request body is not valid JSON or lacks a required field.', action: 'Fix the request body; see the OpenAPI document for the shape.', retryable: false },
  VALIDATION_FAILED: { httpStatus: 400, meaning: 'A field has the wrong type or value, or an unknown field was sent to the admin API.', action: 'Correct the field named in the message; unknown fields are rejected so typos do not pass silently.', retryable: false },
  BODY_TOO_LARGE: { httpStatus: 413, meaning: 'The request body exceeds the configured size limit.', action: 'Send a smaller body; CSRs and certificates are a few kilobytes at most.', retryable: false },
  REQUEST_MALFORMED: { httpStatus: 400, meaning: 'The request is not well-formed HTTP/1.1.', action: 'Fix the client: a request line, headers, a blank line, then exactly Content-Length bytes of body.', retryable: false },
  HEADERS_TOO_LARGE: { httpStatus: 431, meaning: 'The request headers exceed 16 KB.', action: 'Send fewer or shorter headers; no Fleetpass request needs more than a few hundred bytes of them.', retryable: false },
  REQUEST_TIMEOUT: { httpStatus: 408, meaning: 'The request did not arrive whole within the request timeout; the connection was closed.', action: 'Send the whole request at once; on very slow links, ask the operator to raise --request-timeout-ms.', retryable: true },
  UNSUPPORTED_MEDIA_TYPE: { httpStatus: 415, meaning: 'The Content-Type is not accepted by this endpoint.', action: 'Send application/json (or the content type the protocol names).', retryable: false },
  NOT_FOUND: { httpStatus: 404, meaning: 'The resource does not exist or belongs to another tenant.', action: 'Check the ID and that the API key belongs to the owning tenant.', retryable: false },
  CONFLICT: { httpStatus: 409, meaning: 'The resource already exists or was changed concurrently.', action: 'Read the current resource and retry with a different name or the latest version.', retryable: false },
  // --- admin authentication --------------------------------------------------------------------
  UNAUTHENTICATED: { httpStatus: 401, meaning: 'No valid admin API token was presented.', action: 'Send Authorization: Bearer <token>; the first token is in <data-dir>/admin.token.', retryable: false },
  FORBIDDEN: { httpStatus: 403, meaning: "The API key's role does not allow this action.", action: 'Use a key with the admin or operator role.', retryable: false },
  // --- device attestation ----------------------------------------------------------------------
  ATTESTATION_MISSING: { httpStatus: 401, meaning: 'The device presented no credential (client certificate, SAS signature or token).', action: 'Configure the device with its bootstrap credential.', retryable: false },
  ATTESTATION_FAILED: { httpStatus: 401, meaning: 'The credential presented does not prove the claimed identity.', action: 'Check the bootstrap credential and the registration ID the device claims.', retryable: false },
  CERTIFICATE_UNTRUSTED: { httpStatus: 401, meaning: 'The client certificate does not chain to a CA trusted by any enrollment.', action: 'Upload the manufacturer or claim CA and create an enrollment group for it.', retryable: false },
  CERTIFICATE_EXPIRED: { httpStatus: 401, meaning: 'The client certificate (or a CA in its chain) is expired or not yet valid.', action: 'Check the device clock and the certificate validity; re-issue the factory certificate.', retryable: false },
  CERTIFICATE_REVOKED: { httpStatus: 401, meaning: 'The presented certificate has been revoked.', action: 'The device must be re-enrolled by an operator.', retryable: false },
  SIGNATURE_INVALID: { httpStatus: 401, meaning: 'The shared access signature does not match the enrollment key.', action: 'Derive the device key from the group key and registration ID and sign sr + "\\n" + se.', retryable: false },
  SIGNATURE_EXPIRED: { httpStatus: 401, meaning: 'The shared access signature has expired (se is in the past).', action: 'Sign a fresh token with a future expiry; check the device clock.', retryable: false },
  TOKEN_INVALID: { httpStatus: 401, meaning: 'The one-time token is unknown.', action: 'Issue a new enrollment token for this device.', retryable: false },
  TOKEN_EXPIRED: { httpStatus: 401, meaning: 'The one-time token has expired.', action: 'Issue a new enrollment token for this device.', retryable: false },
  TOKEN_REPLAYED: { httpStatus: 401, meaning: 'The one-time token was already used by a different device or key.', action: 'Tokens are single use; issue a new token. A device retrying with its original key gets its original answer.', retryable: false },
  REGISTRATION_ID_MISMATCH: { httpStatus: 403, meaning: 'The registration ID does not match the credential (certificate CN/SAN, token or SAS resource).', action: 'Send the registration ID that the credential was issued for.', retryable: false },
  // --- enrollment ------------------------------------------------------------------------------
  ENROLLMENT_NOT_FOUND: { httpStatus: 403, meaning: 'No enrollment matches this device and credential.', action: 'Create an individual enrollment or an enrollment group that covers the device.', retryable: false },
  ENROLLMENT_DISABLED: { httpStatus: 403, meaning: 'The matching enrollment is disabled.', action: 'Enable the enrollment if the device should onboard.', retryable: false },
  ENROLLMENT_EXPIRED: { httpStatus: 403, meaning: 'The matching enrollment has passed its expiry time.', action: 'Extend the enrollment expiry or create a new enrollment.', retryable: false },
  ENROLLMENT_EXHAUSTED: { httpStatus: 403, meaning: 'The matching enrollment has reached its maximum device count.', action: 'Raise maxDevices on the enrollment or use another enrollment.', retryable: false },
  // --- request validation ----------------------------------------------------------------------
  CSR_INVALID: { httpStatus: 400, meaning: 'The CSR is not a well-formed PKCS#10 request (PEM or base64 DER).', action: 'Send a PKCS#10 CSR, PEM or base64 DER.', retryable: false },
  CSR_SIGNATURE_INVALID: { httpStatus: 400, meaning: "The CSR's signature does not verify with its public key (no proof of possession).", action: 'Sign the CSR with the private key whose public key it carries.', retryable: false },
  KEY_TOO_WEAK: { httpStatus: 400, meaning: 'The public key is below the minimum strength (RSA < 2048 bits, or a weak curve).', action: 'Generate a P-256, P-384, Ed25519 or RSA >= 2048 key.', retryable: false },
  KEY_UNSUPPORTED: { httpStatus: 400, meaning: 'The key algorithm or curve is not supported.', action: 'Generate a P-256, P-384, Ed25519 or RSA >= 2048 key.', retryable: false },
  KEY_MISMATCH: { httpStatus: 400, meaning: 'The key in the request does not match the key bound to this identity.', action: 'Use the key the device enrolled with, or rekey through the renewal flow.', retryable: false },
  REGISTRATION_ID_INVALID: { httpStatus: 400, meaning: 'The registration ID is missing or has characters outside [A-Za-z0-9._:-] (1-128).', action: 'Send a registration ID such as a serial number, MAC or EUI.', retryable: false },
  REGISTRATION_ID_COLLISION: { httpStatus: 409, meaning: 'A device with this registration ID already exists with a different key.', action: 'Investigate a duplicate or cloned ID; allow reprovisioning on the enrollment if the device was legitimately re-keyed.', retryable: false },
  PARAMETER_INVALID: { httpStatus: 422, meaning: "A provisioning parameter fails the template's validation rules.", action: 'Send the parameters the template requires; see the message for the rule.', retryable: false },
  FIRMWARE_UNSUPPORTED: { httpStatus: 422, meaning: "The device's firmware is below the minimum the template allows for its model.", action: 'Update the device firmware, or lower the minimum in the template.', retryable: false },
  REGION_MISMATCH: { httpStatus: 422, meaning: "The device's region is not allowed by the template.", action: 'Check the region configured at manufacturing, or allow it in the template.', retryable: false },
  HOOK_REJECTED: { httpStatus: 403, meaning: 'The pre-provisioning webhook rejected the device.', action: 'See the webhook owner; the message carries its reason.', retryable: false },
  HOOK_FAILED: { httpStatus: 502, meaning: 'The pre-provisioning webhook could not be reached or answered badly.', action: 'Retry later; operators should check the webhook endpoint.', retryable: true },
  // --- device state ----------------------------------------------------------------------------
  DEVICE_NOT_FOUND: { httpStatus: 404, meaning: 'The device is not registered.', action: 'Provision the device first.', retryable: false },
  DEVICE_SUSPENDED: { httpStatus: 403, meaning: 'The device is suspended by an operator.', action: 'An operator must resume the device.', retryable: false },
  DEVICE_REVOKED: { httpStatus: 403, meaning: 'The device has been revoked.', action: 'An operator must delete and re-enroll the device.', retryable: false },
  // --- renewal (EST simplereenroll) --------------------------------------------------------------
  RENEWAL_NOT_DUE: { httpStatus: 403, meaning: 'The certificate is not yet inside the renewal window before its expiry, and no operator has forced a renewal.', action: 'Retry once the certificate is within renewalWindowDays of its notAfter (the message says when), or have an operator force renewal with POST /admin/v1/devices/<id>/renewal.', retryable: true },
  SUBJECT_MISMATCH: { httpStatus: 400, meaning: "The re-enrollment CSR's subject or subjectAltName differ from those of the certificate being renewed (RFC 7030 section 4.2.2).", action: 'Copy the subject and subjectAltName of the current certificate into the CSR, e.g. openssl x509 -x509toreq -copy_extensions copyall.', retryable: false },
  // --- capacity and infrastructure -------------------------------------------------------------
  RATE_LIMITED: { httpStatus: 429, meaning: 'Too many requests are queued; the server deferred this one.', action: 'Retry after the Retry-After seconds, with exponential backoff and full jitter.', retryable: true },
  OVERLOADED: { httpStatus: 503, meaning: 'The server is at capacity or shutting down.', action: 'Retry after the Retry-After seconds, with exponential backoff and full jitter.', retryable: true },
  STORE_UNAVAILABLE: { httpStatus: 503, meaning: 'The database is unreachable or busy.', action: 'Retry later; operators should check the database.', retryable: true },
  INTERNAL_ERROR: { httpStatus: 500, meaning: 'An unexpected error occurred; nothing was issued.', action: 'Retry later; operators should check the server log for the request ID.', retryable: true },
} as const satisfies Record<string, ReasonCodeInfo>;

export type ReasonCode = keyof typeof REASON_CODES;

export function isReasonCode(value: string): value is ReasonCode {
  return Object.prototype.hasOwnProperty.call(REASON_CODES, value);
}

/** An error that carries a reason code from the registry. */
export class FleetpassError extends Error {
  readonly code: ReasonCode;
  readonly httpStatus: number;
  readonly retryAfterSeconds: number | undefined;
  readonly details: Record<string, unknown> | undefined;

  constructor(code: ReasonCode, message?: string, options?: { retryAfterSeconds?: number; details?: Record<string, unknown>; cause?: unknown }) {
    super(message ?? REASON_CODES[code].meaning, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'FleetpassError';
    this.code = code;
    this.httpStatus = REASON_CODES[code].httpStatus;
    this.retryAfterSeconds = options?.retryAfterSeconds;
    this.details = options?.details;
  }
}

export function fail(code: ReasonCode, message?: string, options?: { retryAfterSeconds?: number; details?: Record<string, unknown>; cause?: unknown }): never {
  throw new FleetpassError(code, message, options);
}

/** Wraps any thrown value as a FleetpassError without losing a code it already has. */
export function toFleetpassError(err: unknown): FleetpassError {
  if (err instanceof FleetpassError) return err;
  return new FleetpassError('INTERNAL_ERROR', undefined, { cause: err });
}
