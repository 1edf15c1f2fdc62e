/**
 * The one configuration schema. Every setting has a default, an environment variable and (where it
 * makes sense) a command-line flag; a JSON file named by FLEETPASS_CONFIG / --config may set any of
 * them. Precedence: flag > environment > file > default. Validated once at start, then frozen.
 * docs/configuration.md is checked against this table by a test.
 */
import type { KeyAlgorithm } from '../kms/types.js';

type Kind = 'string' | 'int' | 'bool' | 'list' | 'enum';

export interface SettingSpec {
  key: keyof FleetpassConfig;
  kind: Kind;
  env: string;
  flag?: string;
  default: string | number | boolean | string[] | null;
  /** Allowed values for enums; [min, max] for ints. */
  choices?: readonly string[];
  range?: readonly [number, number];
  secret?: boolean;
  help: string;
}

export interface FleetpassConfig {
  dataDir: string;
  databaseUrl: string | null;
  dbPoolSize: number;
  dbPreparedStatements: boolean;
  host: string;
  port: number;
  publicUrl: string | null;
  serverNames: string[];
  caAlgorithm: KeyAlgorithm;
  caOrganization: string;
  keyPassphrase: string | null;
  deviceCertValidityDays: number;
  renewalWindowDays: number;
  maxBodyBytes: number;
  requestTimeoutMs: number;
  tlsHandshakeTimeoutMs: number;
  maxCsrBytes: number;
  minRsaBits: number;
  admissionMaxInFlight: number;
  admissionMaxQueue: number;
  admissionQueueTimeoutMs: number;
  retryAfterSeconds: number;
  enrollmentTokenTtlHours: number;
  sasMaxLifetimeSeconds: number;
  webhookTimeoutMs: number;
  webhookSecret: string | null;
  webhookSecretPrevious: string | null;
  crlValidityHours: number;
  mqttEndpoint: string | null;
  initialTenantName: string;
  logLevel: 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';
  shutdownGraceMs: number;
  workers: number;
  trustProxyClientCert: boolean;
  trustedProxies: string[];
  clientCertHeader: string;
}

export const SETTINGS: readonly SettingSpec[] = [
  { key: 'dataDir', kind: 'string', env: 'FLEETPASS_DATA_DIR', flag: 'data-dir', default: './fleetpass-data', help: 'Folder for the SQLite database, encrypted keys and the first admin token.' },
  { key: 'databaseUrl', kind: 'string', env: 'DATABASE_URL', flag: 'database-url', default: null, help: 'postgres://… to use PostgreSQL; default sqlite:<data-dir>/fleetpass.db.' },
  { key: 'dbPoolSize', kind: 'int', env: 'FLEETPASS_DB_POOL_SIZE', flag: 'db-pool-size', default: 10, range: [1, 200], help: 'PostgreSQL connections per process.' },
  { key: 'dbPreparedStatements', kind: 'bool', env: 'FLEETPASS_DB_PREPARED_STATEMENTS', default: true, help: 'PostgreSQL: run the statements of every registration as named prepared statements, parsed and planned once per connection. Set false behind a connection pooler that does not keep them (PgBouncer in transaction mode before 1.21).' },
  { key: 'host', kind: 'string', env: 'FLEETPASS_HOST', flag: 'host', default: '0.0.0.0', help: 'Address the HTTPS port binds to.' },
  { key: 'port', kind: 'int', env: 'FLEETPASS_PORT', flag: 'port', default: 8443, range: [0, 65535], help: 'HTTPS port for the device API, admin API, EST and /ca.pem (0 = any free port).' },
  { key: 'publicUrl', kind: 'string', env: 'FLEETPASS_PUBLIC_URL', flag: 'public-url', default: null, help: 'Base URL devices reach this server at (CRL URLs, endpoints); default https://localhost:<port>.' },
  { key: 'serverNames', kind: 'list', env: 'FLEETPASS_SERVER_NAMES', flag: 'server-names', default: [], help: 'Extra DNS names / IPs for the server TLS certificate (comma separated); localhost is always included.' },
  { key: 'caAlgorithm', kind: 'enum', env: 'FLEETPASS_CA_ALGORITHM', flag: 'ca-algorithm', default: 'ecdsa-p256', choices: ['ecdsa-p256', 'ecdsa-p384', 'rsa-3072'], help: 'Key algorithm of the root and issuing CA created on first start.' },
  { key: 'caOrganization', kind: 'string', env: 'FLEETPASS_CA_ORGANIZATION', flag: 'ca-organization', default: 'Fleetpass', help: 'Organization (O) in the CA certificates created on first start.' },
  { key: 'keyPassphrase', kind: 'string', env: 'FLEETPASS_KEY_PASSPHRASE', default: null, secret: true, help: 'Passphrase that encrypts CA keys at rest. Without it a generated key file is used (and a warning printed).' },
  { key: 'deviceCertValidityDays', kind: 'int', env: 'FLEETPASS_DEVICE_CERT_VALIDITY_DAYS', flag: 'device-cert-validity-days', default: 365, range: [1, 3650], help: 'Default validity of device certificates (a template profile may override).' },
  { key: 'renewalWindowDays', kind: 'int', env: 'FLEETPASS_RENEWAL_WINDOW_DAYS', flag: 'renewal-window-days', default: 30, range: [1, 3650], help: 'A device may renew its certificate (EST simplereenroll) only this many days before it expires, unless an operator forces renewal.' },
  { key: 'maxBodyBytes', kind: 'int', env: 'FLEETPASS_MAX_BODY_BYTES', flag: 'max-body-bytes', default: 65536, range: [1024, 10485760], help: 'Largest request body accepted.' },
  { key: 'requestTimeoutMs', kind: 'int', env: 'FLEETPASS_REQUEST_TIMEOUT_MS', flag: 'request-timeout-ms', default: 30000, range: [1000, 600000], help: 'A request (headers and body) must arrive within this long, or the connection is answered 408 and closed, so that stalled or deliberately slow clients cannot pile up open connections during a burst.' },
  { key: 'tlsHandshakeTimeoutMs', kind: 'int', env: 'FLEETPASS_TLS_HANDSHAKE_TIMEOUT_MS', flag: 'tls-handshake-timeout-ms', default: 30000, range: [1000, 600000], help: 'A TLS handshake must complete within this long, or the connection is closed (Node.js waits 120 s by default).' },
  { key: 'maxCsrBytes', kind: 'int', env: 'FLEETPASS_MAX_CSR_BYTES', flag: 'max-csr-bytes', default: 16384, range: [256, 1048576], help: 'Largest CSR accepted (DER bytes).' },
  { key: 'minRsaBits', kind: 'int', env: 'FLEETPASS_MIN_RSA_BITS', flag: 'min-rsa-bits', default: 2048, range: [2048, 16384], help: 'Smallest RSA key accepted in a CSR.' },
  { key: 'admissionMaxInFlight', kind: 'int', env: 'FLEETPASS_ADMISSION_MAX_IN_FLIGHT', flag: 'max-in-flight', default: 64, range: [1, 100000], help: 'Provisioning requests processed at once per process.' },
  { key: 'admissionMaxQueue', kind: 'int', env: 'FLEETPASS_ADMISSION_MAX_QUEUE', flag: 'max-queue', default: 1024, range: [0, 1000000], help: 'Requests allowed to wait for a slot; beyond it the answer is 429 with Retry-After.' },
  { key: 'admissionQueueTimeoutMs', kind: 'int', env: 'FLEETPASS_ADMISSION_QUEUE_TIMEOUT_MS', flag: 'queue-timeout-ms', default: 10000, range: [10, 600000], help: 'Longest wait for a slot before the answer is 503 with Retry-After.' },
  { key: 'retryAfterSeconds', kind: 'int', env: 'FLEETPASS_RETRY_AFTER_SECONDS', flag: 'retry-after-seconds', default: 2, range: [1, 3600], help: 'Base Retry-After for deferred requests (jittered up to 2x).' },
  { key: 'enrollmentTokenTtlHours', kind: 'int', env: 'FLEETPASS_ENROLLMENT_TOKEN_TTL_HOURS', flag: 'token-ttl-hours', default: 168, range: [1, 87600], help: 'Default lifetime of one-time enrollment tokens.' },
  { key: 'sasMaxLifetimeSeconds', kind: 'int', env: 'FLEETPASS_SAS_MAX_LIFETIME_SECONDS', flag: 'sas-max-lifetime-seconds', default: 31536000, range: [60, 315360000], help: 'Largest accepted distance of a SAS token expiry (se) into the future.' },
  { key: 'webhookTimeoutMs', kind: 'int', env: 'FLEETPASS_WEBHOOK_TIMEOUT_MS', flag: 'webhook-timeout-ms', default: 5000, range: [100, 60000], help: 'Timeout of the optional pre-provisioning webhook.' },
  { key: 'webhookSecret', kind: 'string', env: 'FLEETPASS_WEBHOOK_SECRET', default: null, secret: true, help: 'Signs every pre-provisioning webhook request (X-Fleetpass-Timestamp, X-Fleetpass-Signature: v1=HMAC-SHA256 of "<timestamp>.<body>"), so the webhook can tell Fleetpass from anyone else who finds its URL.' },
  { key: 'webhookSecretPrevious', kind: 'string', env: 'FLEETPASS_WEBHOOK_SECRET_PREVIOUS', default: null, secret: true, help: 'While rotating the webhook secret: the old one. Requests then carry a second signature, made with it (X-Fleetpass-Signature: v1=<new>,v1=<old>), so the webhook can switch to the new secret at any moment; unset it once it has.' },
  { key: 'crlValidityHours', kind: 'int', env: 'FLEETPASS_CRL_VALIDITY_HOURS', flag: 'crl-validity-hours', default: 24, range: [1, 720], help: 'nextUpdate distance of published CRLs.' },
  { key: 'mqttEndpoint', kind: 'string', env: 'FLEETPASS_MQTT_ENDPOINT', flag: 'mqtt-endpoint', default: null, help: 'MQTT endpoint returned to devices in `endpoints.mqtt` (unless the template sets one).' },
  { key: 'initialTenantName', kind: 'string', env: 'FLEETPASS_INITIAL_TENANT', flag: 'initial-tenant', default: 'default', help: 'Name of the tenant created on first start.' },
  { key: 'logLevel', kind: 'enum', env: 'FLEETPASS_LOG_LEVEL', flag: 'log-level', default: 'info', choices: ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'], help: 'Log level (JSON logs on stdout).' },
  { key: 'shutdownGraceMs', kind: 'int', env: 'FLEETPASS_SHUTDOWN_GRACE_MS', flag: 'shutdown-grace-ms', default: 10000, range: [0, 600000], help: 'How long in-flight requests may take to finish on SIGTERM/SIGINT.' },
  { key: 'workers', kind: 'int', env: 'FLEETPASS_WORKERS', flag: 'workers', default: 0, range: [0, 256], help: 'Server processes sharing the port (0 = one per CPU core). First-start work (migrations, CA) runs once before they start.' },
  { key: 'trustProxyClientCert', kind: 'bool', env: 'FLEETPASS_TRUST_PROXY_CLIENT_CERT', flag: 'trust-proxy-client-cert', default: false, help: 'Accept the client certificate from the clientCertHeader header when a load balancer terminates mTLS; only from trustedProxies.' },
  { key: 'trustedProxies', kind: 'list', env: 'FLEETPASS_TRUSTED_PROXIES', flag: 'trusted-proxies', default: [], help: 'Addresses (IPv4/IPv6, or CIDR blocks) of the proxies whose client-certificate header is believed (comma separated).' },
  { key: 'clientCertHeader', kind: 'string', env: 'FLEETPASS_CLIENT_CERT_HEADER', flag: 'client-cert-header', default: 'x-forwarded-client-cert', help: 'Header carrying the client certificate from a trusted proxy: Envoy XFCC (Cert="…"), URL-encoded PEM (nginx $ssl_client_escaped_cert) or base64 DER (HAProxy ssl_c_der,base64).' },
];
