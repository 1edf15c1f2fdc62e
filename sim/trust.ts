/**
 * What a device pins: the CA bundle from /ca.pem (or --ca). Used to check the server on every
 * connection and every certificate the server issues. Both checks are done with node:crypto on
 * pre-parsed anchors, so that they cost microseconds, not the milliseconds of building an OpenSSL
 * store per connection — the simulator shares the machine with the server it measures.
 */
import { X509Certificate, createPublicKey, verify, type KeyObject } from 'node:crypto';
import { isIP } from 'node:net';
import { certificateParts, fromPem, type CertificateParts } from './der.js';

/** An issued certificate whose signature is still to be checked. */
export interface IssuedSignature {
  certificatePem: string;
  parts: CertificateParts;
}

interface Anchor {
  x509: X509Certificate;
  subject: Buffer;
  key: KeyObject;
}

const HASH_OF: Record<string, string> = {
  '1.2.840.10045.4.3.2': 'sha256',
  '1.2.840.10045.4.3.3': 'sha384',
  '1.2.840.10045.4.3.4': 'sha512',
  '1.2.840.113549.1.1.11': 'sha256',
  '1.2.840.113549.1.1.12': 'sha384',
  '1.2.840.113549.1.1.13': 'sha512',
};

export class PinnedTrust {
  private readonly anchors: Anchor[];
  private readonly trustedServers = new Set<string>();

  constructor(bundlePem: string) {
    const pems = bundlePem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
    if (pems.length === 0) throw new Error('the CA bundle holds no certificate');
    this.anchors = pems.map((pem) => {
      const x509 = new X509Certificate(pem);
      return { x509, subject: certificateParts(fromPem(pem)).subject, key: createPublicKey(pem) };
    });
  }

  /**
   * Null when the server certificate chains to the bundle, is valid now and names the host; else why
   * not. Takes OpenSSL's already-decoded peer certificate (TLSSocket.getPeerX509Certificate): a server
   * certificate seen and checked before is recognised by its fingerprint.
   */
  checkServer(cert: X509Certificate | undefined, host: string): string | null {
    if (!cert) return 'the server presented no certificate';
    if (this.trustedServers.has(cert.fingerprint256)) return null;
    const now = Date.now();
    if (now < Date.parse(cert.validFrom) || now > Date.parse(cert.validTo)) return `the server certificate is not valid now (${cert.validFrom} – ${cert.validTo})`;
    const named = isIP(host) ? cert.checkIP(host) : cert.checkHost(host);
    if (!named) return `the server certificate does not name ${host}`;
    const issued = this.anchors.some((a) => a.x509.fingerprint256 === cert.fingerprint256 || (cert.checkIssued(a.x509) && cert.verify(a.x509.publicKey)));
    if (!issued) return 'the server certificate was not issued by a CA of the pinned bundle';
    this.trustedServers.add(cert.fingerprint256);
    return null;
  }

  /**
   * A certificate the server issued to a device, first half: it parses and is for the device's key.
   * The second, its signature by a CA of the bundle, is verifyIssued, which the fleet runner calls
   * once the clock has stopped (`signed` is null when a problem was already found).
   */
  inspectIssued(certificatePem: string, deviceSpki: Buffer): { serial: string; problem: string | null; signed: IssuedSignature | null } {
    let parts: CertificateParts;
    try {
      parts = certificateParts(fromPem(certificatePem));
    } catch (e) {
      return { serial: '', problem: `the certificate does not parse: ${(e as Error).message}`, signed: null };
    }
    if (!parts.spki.equals(deviceSpki)) return { serial: parts.serial, problem: 'the certificate is not for the key of the CSR', signed: null };
    return { serial: parts.serial, problem: null, signed: { certificatePem, parts } };
  }

  /** Null when the certificate is signed by a CA of the bundle; else why not. */
  verifyIssued({ certificatePem, parts }: IssuedSignature): string | null {
    const issuer = this.anchors.find((a) => a.subject.equals(parts.issuer));
    const hash = HASH_OF[parts.signatureAlgorithm];
    let ok: boolean;
    try {
      ok = issuer !== undefined && hash !== undefined && verify(hash, parts.tbs, issuer.key, parts.signature);
    } catch {
      ok = false;
    }
    if (!ok) {
      // Unusual algorithms (e.g. RSASSA-PSS): let OpenSSL decide.
      try {
        const x509 = new X509Certificate(certificatePem);
        ok = this.anchors.some((a) => x509.checkIssued(a.x509) && x509.verify(a.x509.publicKey));
      } catch {
        ok = false;
      }
    }
    return ok ? null : 'the certificate was not issued by a CA of the pinned bundle';
  }
}
