import type { KeyAlgorithm, Signer } from '../kms/types.js';

export type PublicKeyInfo =
  | { type: 'ec'; curve: 'P-256' | 'P-384' | 'P-521' | string; bits: number }
  | { type: 'rsa'; bits: number }
  | { type: 'ed25519'; bits: 256 }
  | { type: 'other'; oid: string; bits: number };

export interface ParsedCsr {
  der: Buffer;
  /** RFC 4514-ish string of the subject as the device sent it (informational only). */
  subject: string;
  commonName: string | undefined;
  dnsNames: string[];
  publicKeySpki: Buffer;
  publicKey: PublicKeyInfo;
  /** sha256 hex of the DER SubjectPublicKeyInfo: the identity of the key across retries. */
  publicKeyFingerprint: string;
}

export interface CsrLimits {
  maxBytes: number;
  /** Minimum RSA modulus size; default 2048. */
  minRsaBits: number;
}

export interface SubjectSpec {
  commonName: string;
  organization?: string;
  organizationalUnit?: string;
  country?: string;
}

export type CertificateUsage = 'client' | 'server' | 'ca';

export interface IssueRequest {
  signer: Signer;
  /** DER of the issuing CA certificate (for issuer name and AKI). */
  issuerCertificateDer: Buffer;
  subject: SubjectSpec;
  dnsNames?: string[];
  uris?: string[];
  ipAddresses?: string[];
  publicKeySpki: Buffer;
  notBefore: Date;
  notAfter: Date;
  usage: CertificateUsage;
  /** For CA certificates: pathLenConstraint; undefined = none. */
  pathLength?: number;
  crlDistributionPointUrl?: string;
  ocspUrl?: string;
}

export interface IssuedCertificate {
  der: Buffer;
  pem: string;
  /** Lower-case hex, no leading zeros beyond what DER needs. */
  serialHex: string;
  subject: string;
  notBefore: Date;
  notAfter: Date;
  publicKeyFingerprint: string;
}

export interface CertificateInfo {
  der: Buffer;
  subject: string;
  issuer: string;
  commonName: string | undefined;
  dnsNames: string[];
  uris: string[];
  serialHex: string;
  notBefore: Date;
  notAfter: Date;
  isCa: boolean;
  fingerprint: string; // sha256 hex of DER
  publicKeyFingerprint: string; // sha256 hex of SPKI
  subjectKeyIdentifier: string | undefined;
  authorityKeyIdentifier: string | undefined;
}

export interface RevokedEntry {
  serialHex: string;
  revokedAt: Date;
  /** RFC 5280 CRLReason code. */
  reasonCode?: number;
}

export interface TrustAnchor {
  id: string;
  der: Buffer;
}

export type { KeyAlgorithm };
