/**
 * Device-side cryptography of the simulator: key pairs, PKCS#10 CSRs, a manufacturer CA and its
 * factory certificates, and Azure-DPS-style shared access signatures. node:crypto does the maths;
 * sim/der.ts the encoding.
 */
import { createHash, createHmac, generateKeyPair, randomBytes, sign, type KeyObject } from 'node:crypto';
import { promisify } from 'node:util';
import { NULL, OID, TRUE, bits, ctx, integer, name, octets, oid, seq, time, tlv, toPem } from './der.js';

const generateKeyPairAsync = promisify(generateKeyPair);

export interface KeyPair {
  privateKey: KeyObject;
  /** SubjectPublicKeyInfo, DER. */
  spki: Buffer;
  kind: 'ec' | 'rsa';
  /** EC keys: the private scalar and public point, for cheap encoding. */
  ec?: { d: Buffer; point: Buffer };
}

// SubjectPublicKeyInfo of a P-256 key, up to the uncompressed point: SEQ { SEQ { ecPublicKey, prime256v1 }, BIT STRING }.
const P256_SPKI_PREFIX = Buffer.from('3059301306072a8648ce3d020106082a8648ce3d030107034200', 'hex');
const P256_OID = '1.2.840.10045.3.1.7';

/**
 * An EC P-256 key pair, generated on the libuv thread pool. The encodings are assembled from the JWK
 * form: KeyObject.export to SPKI or PKCS#8 costs ~0.2 ms of main-thread time each, JWK ~0.01 ms —
 * which matters for 100,000 devices sharing a machine with the server.
 */
export async function newEcKey(): Promise<KeyPair> {
  const { privateKey } = await generateKeyPairAsync('ec', { namedCurve: 'P-256' });
  const jwk = privateKey.export({ format: 'jwk' });
  const x = Buffer.from(jwk.x ?? '', 'base64url');
  const y = Buffer.from(jwk.y ?? '', 'base64url');
  const d = Buffer.from(jwk.d ?? '', 'base64url');
  if (x.length !== 32 || y.length !== 32 || d.length !== 32) throw new Error('unexpected P-256 JWK');
  const point = Buffer.concat([Buffer.from([0x04]), x, y]);
  // Its own memory, not a slice of Node's shared 8 KiB pool: a device keeps its SPKI for the whole
  // run, and 100,000 pool slices would pin hundreds of MB of slabs.
  const spki = Buffer.alloc(P256_SPKI_PREFIX.length + point.length);
  P256_SPKI_PREFIX.copy(spki);
  point.copy(spki, P256_SPKI_PREFIX.length);
  return { privateKey, spki, kind: 'ec', ec: { d, point } };
}

/** An RSA key pair; 1024 bits is the simulator's "weak key" fault. */
export async function newRsaKey(bitsLength: number): Promise<KeyPair> {
  const { privateKey, publicKey } = await generateKeyPairAsync('rsa', { modulusLength: bitsLength });
  return { privateKey, spki: publicKey.export({ type: 'spki', format: 'der' }), kind: 'rsa' };
}

/** SHA-256 of the SubjectPublicKeyInfo DER, lower-case hex: the fingerprint Fleetpass stores. */
export const keyFingerprint = (spki: Buffer): string => createHash('sha256').update(spki).digest('hex');

/** The private key as PEM for TLS: SEC 1 "EC PRIVATE KEY" for EC keys (RFC 5915), PKCS#8 otherwise. */
export function privateKeyPem(k: KeyPair): string {
  if (!k.ec) return k.privateKey.export({ type: 'pkcs8', format: 'pem' }) as string;
  return toPem('EC PRIVATE KEY', seq(integer(1), octets(k.ec.d), ctx(0, oid(P256_OID)), ctx(1, bits(k.ec.point))));
}

function signatureAlgorithm(k: KeyPair): Buffer {
  return k.kind === 'ec' ? seq(oid(OID.ecdsaWithSha256)) : seq(oid(OID.sha256WithRsa), NULL);
}

function signWith(k: KeyPair, data: Buffer): Buffer {
  return sign('sha256', data, k.privateKey);
}

/** A PKCS#10 CSR with subject CN=commonName, signed by the key it carries (proof of possession). */
export function buildCsr(key: KeyPair, commonName: string): Buffer {
  const info = seq(integer(0), name([[OID.commonName, commonName]]), key.spki, ctx(0, Buffer.alloc(0)));
  return seq(info, signatureAlgorithm(key), bits(signWith(key, info)));
}

export const csrPem = (der: Buffer): string => toPem('CERTIFICATE REQUEST', der);

/** A CSR that is not well-formed PKCS#10: the DER is cut short (a flash write that did not finish). */
export function malformedCsrPem(der: Buffer): string {
  return toPem('CERTIFICATE REQUEST', der.subarray(0, Math.floor(der.length / 2)));
}

function extension(id: string, critical: boolean, value: Buffer): Buffer {
  return critical ? seq(oid(id), TRUE, octets(value)) : seq(oid(id), octets(value));
}

const keyId = (spki: Buffer): Buffer => createHash('sha1').update(spki).digest();

function serialNumber(): Buffer {
  const b = randomBytes(16);
  b[0] = (b[0]! & 0x7f) | 0x10; // positive, no leading zero
  return b;
}

export interface CertificateAuthority {
  key: KeyPair;
  /** Encoded subject Name. */
  subject: Buffer;
  keyId: Buffer;
  der: Buffer;
  pem: string;
}

/** A self-signed CA (a manufacturer CA). */
export async function createCa(organization: string, commonName: string, notBefore = new Date(Date.now() - 3600_000), notAfter = new Date(Date.now() + 10 * 365 * 86400_000)): Promise<CertificateAuthority> {
  const key = await newEcKey();
  const subject = name([[OID.organization, organization], [OID.commonName, commonName]]);
  const kid = keyId(key.spki);
  const exts = [
    extension(OID.basicConstraints, true, seq(TRUE)),
    extension(OID.keyUsage, true, bits(Buffer.from([0x06]), 1)), // keyCertSign, cRLSign
    extension(OID.subjectKeyIdentifier, false, octets(kid)),
  ];
  const tbs = seq(ctx(0, integer(2)), integer(serialNumber()), signatureAlgorithm(key), subject, seq(time(notBefore), time(notAfter)), subject, key.spki, ctx(3, seq(...exts)));
  const der = seq(tbs, signatureAlgorithm(key), bits(signWith(key, tbs)));
  return { key, subject, keyId: kid, der, pem: toPem('CERTIFICATE', der) };
}

// Extensions shared by every factory certificate, encoded once.
const LEAF_BASIC_CONSTRAINTS = extension(OID.basicConstraints, true, seq());
const LEAF_KEY_USAGE = extension(OID.keyUsage, true, bits(Buffer.from([0x80]), 7)); // digitalSignature
const LEAF_EKU = extension(OID.extKeyUsage, false, seq(oid(OID.clientAuth)));

/** A factory (bootstrap) certificate CN=commonName for `subjectSpki`, signed by `ca`. PEM. */
export function issueFactoryCertificate(ca: CertificateAuthority, subjectSpki: Buffer, commonName: string, notBefore: Date, notAfter: Date): string {
  const aki = extension(OID.authorityKeyIdentifier, false, seq(tlv(0x80, ca.keyId)));
  const exts = ctx(3, seq(LEAF_BASIC_CONSTRAINTS, LEAF_KEY_USAGE, LEAF_EKU, aki));
  const tbs = seq(ctx(0, integer(2)), integer(serialNumber()), signatureAlgorithm(ca.key), ca.subject, seq(time(notBefore), time(notAfter)), name([[OID.commonName, commonName]]), subjectSpki, exts);
  return toPem('CERTIFICATE', seq(tbs, signatureAlgorithm(ca.key), bits(signWith(ca.key, tbs))));
}

/** Azure DPS per-device key from a group key: base64(HMAC-SHA256(base64-decode(groupKey), registrationId)). */
export function deriveDeviceKey(groupKeyB64: string, registrationId: string): string {
  return createHmac('sha256', Buffer.from(groupKeyB64, 'base64')).update(registrationId, 'utf8').digest('base64');
}

/** `SharedAccessSignature sr=…&sig=…&se=…&skn=registration`, signed over the URL-encoded sr as the Azure SDKs do. */
export function sasAuthorization(idScope: string, registrationId: string, deviceKeyB64: string, ttlSeconds = 3600): string {
  const sr = encodeURIComponent(`${idScope}/registrations/${registrationId}`);
  const se = Math.floor(Date.now() / 1000) + ttlSeconds;
  const sig = createHmac('sha256', Buffer.from(deviceKeyB64, 'base64')).update(`${sr}\n${se}`, 'utf8').digest('base64');
  return `SharedAccessSignature sr=${sr}&sig=${encodeURIComponent(sig)}&se=${se}&skn=registration`;
}
