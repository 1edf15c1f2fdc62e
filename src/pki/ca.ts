/** CA bootstrap helpers: a root and an issuing CA, and the server's own TLS certificate. */
import { generateKeyPairSync } from 'node:crypto';
import { isIP } from 'node:net';
import type { KeyAlgorithm, KeyManager, Signer } from '../kms/types.js';
import type { IssuedCertificate } from './types.js';
import { createSelfSignedCa, issueCertificate } from './issue.js';
import { derToPem } from './pem.js';

export interface CaMaterial {
  signer: Signer;
  der: Buffer;
  pem: string;
}

export interface CreateCaOptions {
  algorithm: KeyAlgorithm;
  organization: string;
  /** Default 20. */
  rootValidityYears?: number;
  /** Default 10. */
  issuingValidityYears?: number;
  now?: Date;
}

/** Tolerance for clocks that run behind ours. */
const BACKDATE_MS = 5 * 60 * 1000;

function addYears(d: Date, years: number): Date {
  const out = new Date(d.getTime());
  out.setUTCFullYear(out.getUTCFullYear() + years);
  return out;
}

/**
 * Creates a root CA (self-signed, pathLen 1) and an issuing CA (signed by the root, pathLen 0),
 * each with a fresh key in `km`.
 */
export async function createRootAndIssuingCa(km: KeyManager, opts: CreateCaOptions): Promise<{ root: CaMaterial; issuing: CaMaterial }> {
  const now = opts.now ?? new Date();
  const notBefore = new Date(now.getTime() - BACKDATE_MS);
  const rootSigner = await km.createKey(opts.algorithm, `${opts.organization} root CA`);
  const rootNotAfter = addYears(now, opts.rootValidityYears ?? 20);
  const root = await createSelfSignedCa(rootSigner, { commonName: `${opts.organization} Root CA`, organization: opts.organization }, notBefore, rootNotAfter, 1);

  const issuingSigner = await km.createKey(opts.algorithm, `${opts.organization} issuing CA`);
  let issuingNotAfter = addYears(now, opts.issuingValidityYears ?? 10);
  if (issuingNotAfter > root.notAfter) issuingNotAfter = root.notAfter;
  const issuing = await issueCertificate({
    signer: rootSigner,
    issuerCertificateDer: root.der,
    subject: { commonName: `${opts.organization} Issuing CA`, organization: opts.organization },
    publicKeySpki: issuingSigner.publicKeySpki,
    notBefore,
    notAfter: issuingNotAfter,
    usage: 'ca',
    pathLength: 0,
  });
  return {
    root: { signer: rootSigner, der: root.der, pem: root.pem },
    issuing: { signer: issuingSigner, der: issuing.der, pem: issuing.pem },
  };
}

export interface ServerCertificateOptions {
  /** The CA that signs the server certificate (normally the issuing CA). */
  issuer: { signer: Signer; der: Buffer; pem?: string };
  /** Extra host names or IP addresses; localhost, 127.0.0.1 and ::1 are always included. */
  hostnames?: string[];
  /** Default: the first host name, else "localhost". */
  commonName?: string;
  organization?: string;
  /** Default 397 days. */
  validityDays?: number;
  now?: Date;
  /** The server's public key; when omitted a P-256 key pair is generated and returned. */
  publicKeySpki?: Buffer;
  crlDistributionPointUrl?: string;
  ocspUrl?: string;
}

export interface ServerCertificate extends IssuedCertificate {
  /** PKCS#8 PEM of the generated key (only when no publicKeySpki was given). */
  privateKeyPem: string | undefined;
  /** Server certificate followed by the issuer certificate, PEM (what a TLS server sends). */
  chainPem: string;
}

/** Issues the HTTPS/MQTTS server's own TLS certificate (serverAuth + clientAuth). */
export async function issueServerCertificate(opts: ServerCertificateOptions): Promise<ServerCertificate> {
  const now = opts.now ?? new Date();
  const dnsNames = new Set<string>(['localhost']);
  const ipAddresses = new Set<string>(['127.0.0.1', '::1']);
  for (const h of opts.hostnames ?? []) {
    const name = h.trim();
    if (!name) continue;
    if (isIP(name)) ipAddresses.add(name);
    else dnsNames.add(name.toLowerCase());
  }
  const firstHost = (opts.hostnames ?? []).map((h) => h.trim()).find((h) => h && !isIP(h));
  let publicKeySpki = opts.publicKeySpki;
  let privateKeyPem: string | undefined;
  if (!publicKeySpki) {
    const kp = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    publicKeySpki = kp.publicKey.export({ format: 'der', type: 'spki' });
    privateKeyPem = kp.privateKey.export({ format: 'pem', type: 'pkcs8' }).toString();
  }
  const cert = await issueCertificate({
    signer: opts.issuer.signer,
    issuerCertificateDer: opts.issuer.der,
    subject: { commonName: opts.commonName ?? firstHost ?? 'localhost', ...(opts.organization ? { organization: opts.organization } : {}) },
    dnsNames: [...dnsNames],
    ipAddresses: [...ipAddresses],
    publicKeySpki,
    notBefore: new Date(now.getTime() - BACKDATE_MS),
    notAfter: new Date(now.getTime() + (opts.validityDays ?? 397) * 86_400_000),
    usage: 'server',
    crlDistributionPointUrl: opts.crlDistributionPointUrl,
    ocspUrl: opts.ocspUrl,
  });
  const issuerPem = opts.issuer.pem ?? derToPem(opts.issuer.der, 'CERTIFICATE');
  return { ...cert, privateKeyPem, chainPem: cert.pem + issuerPem };
}
