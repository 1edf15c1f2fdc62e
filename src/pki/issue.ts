/**
 * Certificate issuance, the hot path. The TBSCertificate is assembled from pre-encoded DER pieces:
 * per issuer (name, AKI), per signer algorithm (AlgorithmIdentifier), per usage (key usage, EKU,
 * basic constraints) and per URL (CRL DP, AIA) everything is encoded once and cached; per
 * certificate only the serial, validity, subject, SAN, SKI and the signature are new.
 */
import { createHash, randomFillSync } from 'node:crypto';
import { isIP } from 'node:net';
import { FleetpassError } from '../core/errors.js';
import { sha256Hex } from '../core/ids.js';
import type { Signer } from '../kms/types.js';
import type { CertificateUsage, IssueRequest, IssuedCertificate, SubjectSpec } from './types.js';
import { TAG, TRUE_DER, bitString, children, ctxCons, ctxPrim, expectTag, decodeOid, octetString, oid, readExact, seq, time, tlv, uint } from './der.js';
import { keyIdentifier, parseSpki, signatureAlgorithmFor } from './algorithms.js';
import { buildName, formatSubjectSpec } from './name.js';
import { derToPem } from './pem.js';

const EXT = {
  subjectKeyIdentifier: '2.5.29.14',
  keyUsage: '2.5.29.15',
  subjectAltName: '2.5.29.17',
  basicConstraints: '2.5.29.19',
  crlDistributionPoints: '2.5.29.31',
  authorityKeyIdentifier: '2.5.29.35',
  extKeyUsage: '2.5.29.37',
  authorityInfoAccess: '1.3.6.1.5.5.7.1.1',
} as const;

const KP_SERVER_AUTH = '1.3.6.1.5.5.7.3.1';
const KP_CLIENT_AUTH = '1.3.6.1.5.5.7.3.2';
const AD_OCSP = '1.3.6.1.5.5.7.48.1';

export function extension(extOid: string, critical: boolean, valueDer: Buffer): Buffer {
  return critical ? seq(oid(extOid), TRUE_DER, octetString(valueDer)) : seq(oid(extOid), octetString(valueDer));
}

// KeyUsage BIT STRINGs, DER (trailing zero bits dropped, unused-bits count set accordingly).
// digitalSignature = bit 0 (0x80), keyEncipherment = bit 2 (0x20), keyCertSign = bit 5 (0x04),
// cRLSign = bit 6 (0x02).
const KU_CLIENT = extension(EXT.keyUsage, true, bitString(Buffer.from([0x80]), 7));
const KU_SERVER = extension(EXT.keyUsage, true, bitString(Buffer.from([0xa0]), 5));
// CA: digitalSignature too, so the CA key may sign OCSP responses directly (RFC 6960 §4.2.2.2).
const KU_CA = extension(EXT.keyUsage, true, bitString(Buffer.from([0x86]), 1));
const EKU_CLIENT = extension(EXT.extKeyUsage, false, seq(oid(KP_CLIENT_AUTH)));
const EKU_SERVER = extension(EXT.extKeyUsage, false, seq(oid(KP_SERVER_AUTH), oid(KP_CLIENT_AUTH)));
const BC_END_ENTITY = extension(EXT.basicConstraints, true, seq());

const caBasicConstraints = new Map<number, Buffer>();
function basicConstraintsCa(pathLength: number | undefined): Buffer {
  const key = pathLength ?? -1;
  let der = caBasicConstraints.get(key);
  if (!der) {
    if (pathLength !== undefined && (!Number.isInteger(pathLength) || pathLength < 0 || pathLength > 255)) {
      throw new FleetpassError('VALIDATION_FAILED', 'pathLength must be an integer 0..255');
    }
    der = extension(EXT.basicConstraints, true, pathLength === undefined ? seq(TRUE_DER) : seq(TRUE_DER, uint(pathLength)));
    caBasicConstraints.set(key, der);
  }
  return der;
}

function usageExtensions(usage: CertificateUsage, pathLength: number | undefined): Buffer[] {
  switch (usage) {
    case 'client':
      return [BC_END_ENTITY, KU_CLIENT, EKU_CLIENT];
    case 'server':
      return [BC_END_ENTITY, KU_SERVER, EKU_SERVER];
    case 'ca':
      return [basicConstraintsCa(pathLength), KU_CA];
    default:
      throw new FleetpassError('VALIDATION_FAILED', `unknown certificate usage ${String(usage)}`);
  }
}

/** Small bounded cache: the same few URLs are used for millions of certificates. */
class BoundedCache<V> {
  private readonly map = new Map<string, V>();
  constructor(private readonly max: number) {}
  get(key: string, make: () => V): V {
    let v = this.map.get(key);
    if (v === undefined) {
      v = make();
      if (this.map.size >= this.max) {
        const first = this.map.keys().next();
        if (!first.done) this.map.delete(first.value);
      }
      this.map.set(key, v);
    }
    return v;
  }
}

function checkUri(uri: string, what: string): Buffer {
  try {
    new URL(uri);
  } catch {
    throw new FleetpassError('VALIDATION_FAILED', `${what} is not a valid URI: ${uri}`);
  }
  // IA5String: printable ASCII only (internationalised names must be punycoded by the caller).
  if (!/^[\x21-\x7e]+$/.test(uri)) throw new FleetpassError('VALIDATION_FAILED', `${what} must be printable ASCII: ${uri}`);
  return Buffer.from(uri, 'latin1');
}

const crlDpCache = new BoundedCache<Buffer>(64);
function crlDistributionPoint(url: string): Buffer {
  return crlDpCache.get(url, () => extension(EXT.crlDistributionPoints, false, seq(seq(ctxCons(0, ctxCons(0, ctxPrim(6, checkUri(url, 'crlDistributionPointUrl'))))))));
}

const aiaCache = new BoundedCache<Buffer>(64);
function authorityInfoAccess(ocspUrl: string): Buffer {
  return aiaCache.get(ocspUrl, () => extension(EXT.authorityInfoAccess, false, seq(seq(oid(AD_OCSP), ctxPrim(6, checkUri(ocspUrl, 'ocspUrl'))))));
}

function ipBytes(ip: string): Buffer {
  const v = isIP(ip);
  if (v === 4) return Buffer.from(ip.split('.').map((p) => Number(p)));
  if (v === 6) {
    let text = ip;
    // Embedded IPv4 tail (::ffff:1.2.3.4).
    const v4 = /(\d+\.\d+\.\d+\.\d+)$/.exec(text);
    if (v4) {
      const b = (v4[1] as string).split('.').map((p) => Number(p));
      text = `${text.slice(0, -(v4[1] as string).length)}${(((b[0] as number) << 8) | (b[1] as number)).toString(16)}:${(((b[2] as number) << 8) | (b[3] as number)).toString(16)}`;
    }
    const [head, tail] = text.includes('::') ? (text.split('::') as [string, string]) : [text, undefined];
    const h = head === '' ? [] : head.split(':');
    const t = tail === undefined || tail === '' ? [] : tail.split(':');
    const groups = tail === undefined ? h : [...h, ...new Array<string>(8 - h.length - t.length).fill('0'), ...t];
    const out = Buffer.alloc(16);
    groups.forEach((g, i) => out.writeUInt16BE(parseInt(g, 16), i * 2));
    return out;
  }
  throw new FleetpassError('VALIDATION_FAILED', `not an IP address: ${ip}`);
}

const DNS_NAME = /^(\*\.)?([A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)(\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*\.?$/;

function subjectAltName(dnsNames: readonly string[] | undefined, uris: readonly string[] | undefined, ips: readonly string[] | undefined): Buffer | undefined {
  const names: Buffer[] = [];
  for (const d of dnsNames ?? []) {
    if (d.length > 253 || !DNS_NAME.test(d)) throw new FleetpassError('VALIDATION_FAILED', `not a valid DNS name: ${d}`);
    names.push(ctxPrim(2, Buffer.from(d, 'latin1')));
  }
  for (const u of uris ?? []) names.push(ctxPrim(6, checkUri(u, 'URI SAN')));
  for (const ip of ips ?? []) names.push(ctxPrim(7, ipBytes(ip)));
  if (names.length === 0) return undefined;
  return extension(EXT.subjectAltName, false, seq(...names));
}

// ---------------------------------------------------------------------------------------------
// serial numbers
// ---------------------------------------------------------------------------------------------

const SERIAL_POOL = Buffer.alloc(16 * 256);
let serialPos = SERIAL_POOL.length;

/** 16 random bytes, top bit cleared and first byte non-zero: a positive, minimal DER INTEGER. */
export function randomSerial(): Buffer {
  if (serialPos >= SERIAL_POOL.length) {
    randomFillSync(SERIAL_POOL);
    serialPos = 0;
  }
  const s = Buffer.from(SERIAL_POOL.subarray(serialPos, serialPos + 16));
  SERIAL_POOL.fill(0, serialPos, serialPos + 16);
  serialPos += 16;
  s[0] = (s[0] as number) & 0x7f || 0x01;
  return s;
}

// ---------------------------------------------------------------------------------------------
// issuer context
// ---------------------------------------------------------------------------------------------

export interface IssuerContext {
  /** Exact DER of the issuer certificate's subject. */
  nameDer: Buffer;
  /** DER of the issuer certificate's SubjectPublicKeyInfo. */
  spki: Buffer;
  /** Pre-encoded AuthorityKeyIdentifier extension for certificates this issuer signs. */
  akiExtension: Buffer;
}

const issuerCache = new WeakMap<Buffer, IssuerContext>();
const issuerCacheByHash = new BoundedCache<IssuerContext>(256);

export function akiExtension(keyId: Buffer): Buffer {
  return extension(EXT.authorityKeyIdentifier, false, seq(ctxPrim(0, keyId)));
}

/** Extracts issuer name, SPKI and SKI from the CA certificate (cached per certificate). */
export function issuerContext(issuerCertDer: Buffer): IssuerContext {
  const hit = issuerCache.get(issuerCertDer);
  if (hit) return hit;
  const ctx = issuerCacheByHash.get(sha256Hex(issuerCertDer), () => {
    try {
      const cert = readExact(issuerCertDer, TAG.SEQUENCE);
      const tbs = expectTag(children(cert)[0], TAG.SEQUENCE, 'tbsCertificate');
      const fields = children(tbs);
      let i = fields[0]?.tag === 0xa0 ? 1 : 0;
      i += 2; // serial, signature
      expectTag(fields[i++], TAG.SEQUENCE, 'issuer');
      expectTag(fields[i++], TAG.SEQUENCE, 'validity');
      const subject = expectTag(fields[i++], TAG.SEQUENCE, 'subject');
      const spki = expectTag(fields[i++], TAG.SEQUENCE, 'subjectPublicKeyInfo');
      let ski: Buffer | undefined;
      for (; i < fields.length; i++) {
        const f = fields[i] as (typeof fields)[number];
        if (f.tag !== 0xa3) continue;
        for (const ext of children(expectTag(children(f)[0], TAG.SEQUENCE, 'extensions'))) {
          const parts = children(ext);
          if (decodeOid(expectTag(parts[0], TAG.OID, 'extension id').content) !== EXT.subjectKeyIdentifier) continue;
          const value = expectTag(parts[parts.length - 1], TAG.OCTET_STRING, 'extension value');
          ski = Buffer.from(readExact(value.content, TAG.OCTET_STRING).content);
        }
      }
      const spkiDer = Buffer.from(spki.raw);
      return { nameDer: Buffer.from(subject.raw), spki: spkiDer, akiExtension: akiExtension(ski ?? keyIdentifier(spkiDer)) };
    } catch (err) {
      throw new FleetpassError('VALIDATION_FAILED', `issuer certificate is malformed: ${(err as Error).message}`, { cause: err });
    }
  });
  issuerCache.set(issuerCertDer, ctx);
  return ctx;
}

// ---------------------------------------------------------------------------------------------
// issuance
// ---------------------------------------------------------------------------------------------

/** Truncates to whole seconds (what X.509 Time can carry). */
function toSeconds(d: Date): Date {
  return new Date(Math.floor(d.getTime() / 1000) * 1000);
}

/** Options accepted by issueCertificate; a missing or empty issuerCertificateDer means self-signed. */
export type IssueOptions = Omit<IssueRequest, 'issuerCertificateDer'> & { issuerCertificateDer?: Buffer };

/**
 * Issues an X.509 v3 certificate signed by `req.signer`. When `issuerCertificateDer` is missing or
 * empty the certificate is self-signed (the subject is the issuer, AKI = own SKI) and the signer's
 * key must be the subject key.
 */
export async function issueCertificate(req: IssueOptions): Promise<IssuedCertificate> {
  const { signer } = req;
  const notBefore = toSeconds(req.notBefore);
  const notAfter = toSeconds(req.notAfter);
  if (!(notAfter.getTime() > notBefore.getTime())) throw new FleetpassError('VALIDATION_FAILED', 'notAfter must be after notBefore');

  let spkiParts: ReturnType<typeof parseSpki>;
  try {
    spkiParts = parseSpki(req.publicKeySpki);
  } catch (err) {
    throw new FleetpassError('VALIDATION_FAILED', `publicKeySpki is not a DER SubjectPublicKeyInfo: ${(err as Error).message}`, { cause: err });
  }
  const ski = createHash('sha1').update(spkiParts.publicKeyBits).digest();
  const subjectDer = buildName(req.subject);

  let issuerName: Buffer;
  let aki: Buffer;
  const selfSigned = !req.issuerCertificateDer || req.issuerCertificateDer.length === 0;
  if (selfSigned) {
    if (!signer.publicKeySpki.equals(req.publicKeySpki)) throw new FleetpassError('VALIDATION_FAILED', 'self-signed certificate: the signer key must be the subject key');
    issuerName = subjectDer;
    aki = akiExtension(ski);
  } else {
    const issuer = issuerContext(req.issuerCertificateDer as Buffer);
    if (!signer.publicKeySpki.equals(issuer.spki)) {
      throw new FleetpassError('INTERNAL_ERROR', `signer ${signer.keyRef} does not hold the key of the issuer certificate`);
    }
    issuerName = issuer.nameDer;
    aki = issuer.akiExtension;
  }

  const exts: Buffer[] = usageExtensions(req.usage, req.pathLength);
  exts.push(extension(EXT.subjectKeyIdentifier, false, octetString(ski)), aki);
  const san = subjectAltName(req.dnsNames, req.uris, req.ipAddresses);
  if (san) exts.push(san);
  if (req.crlDistributionPointUrl) exts.push(crlDistributionPoint(req.crlDistributionPointUrl));
  if (req.ocspUrl) exts.push(authorityInfoAccess(req.ocspUrl));

  const serial = randomSerial();
  const sigAlg = signatureAlgorithmFor(signer.algorithm);
  const tbs = seq(
    V3,
    tlv(TAG.INTEGER, serial),
    sigAlg,
    issuerName,
    seq(time(notBefore), time(notAfter)),
    subjectDer,
    req.publicKeySpki,
    ctxCons(3, seq(...exts)),
  );
  const signature = await signer.sign(tbs);
  const der = seq(tbs, sigAlg, bitString(signature));
  return {
    der,
    pem: derToPem(der, 'CERTIFICATE'),
    serialHex: serial.toString('hex'),
    subject: formatSubjectSpec(req.subject),
    notBefore,
    notAfter,
    publicKeyFingerprint: sha256Hex(req.publicKeySpki),
  };
}

const V3 = ctxCons(0, Buffer.from([0x02, 0x01, 0x02]));

/** Self-signed certificate for any usage (the subject key is the signer's key). */
export function selfSignedCertificate(req: Omit<IssueRequest, 'issuerCertificateDer' | 'publicKeySpki'>): Promise<IssuedCertificate> {
  return issueCertificate({ ...req, publicKeySpki: req.signer.publicKeySpki });
}

/** Self-signed CA certificate (root). */
export function createSelfSignedCa(signer: Signer, subject: SubjectSpec, notBefore: Date, notAfter: Date, pathLength?: number): Promise<IssuedCertificate> {
  return selfSignedCertificate({ signer, subject, notBefore, notAfter, usage: 'ca', pathLength });
}
