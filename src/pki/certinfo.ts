/** Certificate parsing into the flat CertificateInfo shape used across Fleetpass. */
import { X509Certificate } from 'node:crypto';
import { FleetpassError } from '../core/errors.js';
import { sha256Hex } from '../core/ids.js';
import type { CertificateInfo } from './types.js';
import { TAG, children, decodeTime, expectTag, integerHex, readExact } from './der.js';
import { EXT, decodeAuthorityKeyIdentifier, decodeBasicConstraints, decodeSubjectAltName, decodeSubjectKeyIdentifier, readExtensions } from './extensions.js';
import { formatName } from './name.js';
import { pemToDer } from './pem.js';

/** CertificateInfo plus the details path validation needs. */
export interface CertificateDetails extends CertificateInfo {
  /** basicConstraints pathLenConstraint, when present. */
  pathLength: number | undefined;
  publicKeySpki: Buffer;
  /** Exact DER of the subject and issuer names. */
  subjectDer: Buffer;
  issuerDer: Buffer;
}

function toDer(input: string | Buffer): Buffer {
  if (Buffer.isBuffer(input)) {
    if (input.length > 0 && input[0] === TAG.SEQUENCE) return input;
    return pemToDer(input.toString('utf8'), 'CERTIFICATE');
  }
  return pemToDer(input, 'CERTIFICATE');
}

export interface LoadedCertificate {
  x509: X509Certificate;
  details: CertificateDetails;
}

/**
 * Parsed certificates by DER hash. The same CA certificates are parsed on every request (attestation,
 * chain building, re-enrolment), a device's own certificate a few times within its request;
 * X509Certificate construction alone costs ~0.25 ms (OpenSSL 3.0's key decoders). Entries are
 * immutable; least recently used is evicted first, so the few CA certificates stay while a burst of
 * device certificates passes through. Small on purpose: each entry holds an OpenSSL certificate, and
 * 4,096 of them were ~15 MB per worker for device certificates never seen again.
 */
const loaded = new Map<string, LoadedCertificate>();
const LOADED_MAX = 512;

/**
 * Parses (or finds already parsed) a certificate; OpenSSL's view and ours, both validated.
 * `parsed`: OpenSSL's object for these exact bytes when the caller has one already (the TLS peer
 * certificate), which saves decoding the certificate a second time.
 */
export function loadCertificate(input: string | Buffer, parsed?: X509Certificate): LoadedCertificate {
  let der: Buffer;
  try {
    der = toDer(input);
  } catch (err) {
    throw new FleetpassError('VALIDATION_FAILED', `not a certificate: ${(err as Error).message}`, { cause: err });
  }
  const key = sha256Hex(der);
  let c = loaded.get(key);
  if (c) {
    loaded.delete(key);
  } else {
    c = loadUncached(der, key, parsed);
    if (loaded.size >= LOADED_MAX) {
      const first = loaded.keys().next();
      if (!first.done) loaded.delete(first.value);
    }
  }
  loaded.set(key, c);
  return c;
}

/** Parses a certificate (PEM, base64 DER or DER). Garbage → FleetpassError('VALIDATION_FAILED'). */
export function parseCertificateDetails(input: string | Buffer): CertificateDetails {
  return loadCertificate(input).details;
}

function loadUncached(der: Buffer, fingerprint: string, parsed: X509Certificate | undefined): LoadedCertificate {
  let x509: X509Certificate;
  try {
    // OpenSSL must accept it too (it is what verifies chains and serves TLS).
    x509 = parsed ?? new X509Certificate(der);
  } catch (err) {
    if (err instanceof FleetpassError) throw new FleetpassError('VALIDATION_FAILED', `not a certificate: ${err.message}`, { cause: err });
    throw new FleetpassError('VALIDATION_FAILED', `not a certificate: ${(err as Error).message}`, { cause: err });
  }
  try {
    const cert = readExact(der, TAG.SEQUENCE);
    const fields = children(expectTag(children(cert)[0], TAG.SEQUENCE, 'tbsCertificate'));
    let i = fields[0]?.tag === 0xa0 ? 1 : 0;
    const serialHex = integerHex(expectTag(fields[i++], TAG.INTEGER, 'serialNumber'));
    i++; // signature
    const issuerDer = Buffer.from(expectTag(fields[i++], TAG.SEQUENCE, 'issuer').raw);
    const [nb, na] = children(expectTag(fields[i++], TAG.SEQUENCE, 'validity'));
    if (!nb || !na) throw new Error('validity malformed');
    const subjectDer = Buffer.from(expectTag(fields[i++], TAG.SEQUENCE, 'subject').raw);
    const publicKeySpki = Buffer.from(expectTag(fields[i++], TAG.SEQUENCE, 'subjectPublicKeyInfo').raw);
    const subject = formatName(subjectDer);
    const info: CertificateDetails = {
      der: Buffer.from(der),
      subject: subject.text,
      issuer: formatName(issuerDer).text,
      commonName: subject.commonName,
      dnsNames: [],
      uris: [],
      serialHex,
      notBefore: decodeTime(nb),
      notAfter: decodeTime(na),
      isCa: false,
      fingerprint,
      publicKeyFingerprint: sha256Hex(publicKeySpki),
      subjectKeyIdentifier: undefined,
      authorityKeyIdentifier: undefined,
      pathLength: undefined,
      publicKeySpki,
      subjectDer,
      issuerDer,
    };
    for (; i < fields.length; i++) {
      const f = fields[i] as (typeof fields)[number];
      if (f.tag !== 0xa3) continue;
      for (const { id, value } of readExtensions(children(f)[0]!)) {
        switch (id) {
          case EXT.subjectAltName: {
            const san = decodeSubjectAltName(value);
            info.dnsNames.push(...san.dnsNames);
            info.uris.push(...san.uris);
            break;
          }
          case EXT.basicConstraints: {
            const bc = decodeBasicConstraints(value);
            info.isCa = bc.cA;
            info.pathLength = bc.pathLength;
            break;
          }
          case EXT.subjectKeyIdentifier:
            info.subjectKeyIdentifier = decodeSubjectKeyIdentifier(value);
            break;
          case EXT.authorityKeyIdentifier:
            info.authorityKeyIdentifier = decodeAuthorityKeyIdentifier(value);
            break;
          default:
            break;
        }
      }
    }
    return { x509, details: info };
  } catch (err) {
    throw new FleetpassError('VALIDATION_FAILED', `certificate is malformed: ${(err as Error).message}`, { cause: err });
  }
}

/** Parses a certificate (PEM, base64 DER or DER). Garbage → FleetpassError('VALIDATION_FAILED'). */
export function parseCertificate(input: string | Buffer): CertificateInfo {
  const { pathLength: _p, publicKeySpki: _k, subjectDer: _s, issuerDer: _i, ...info } = parseCertificateDetails(input);
  return info;
}
