/**
 * Path building and validation from a presented certificate to one of a set of trust anchors.
 * Names, AKI/SKI and key usage are matched by OpenSSL (X509Certificate.checkIssued), signatures by
 * X509Certificate.verify; validity windows, basicConstraints and pathLen are checked here.
 */
import type { X509Certificate } from 'node:crypto';
import { FleetpassError, fail } from '../core/errors.js';
import type { CertificateInfo, TrustAnchor } from './types.js';
import { loadCertificate } from './certinfo.js';
import type { CertificateDetails } from './certinfo.js';

/** Maximum number of certificates in a path, leaf and anchor included. */
export const MAX_CHAIN_DEPTH = 5;

interface Cert {
  x509: X509Certificate;
  info: CertificateDetails;
}

function load(der: Buffer): Cert {
  const { x509, details } = loadCertificate(der);
  return { x509, info: details };
}

function tryLoad(der: Buffer): Cert | undefined {
  try {
    return load(der);
  } catch {
    return undefined;
  }
}

function toInfo(c: Cert): CertificateInfo {
  const { pathLength: _p, publicKeySpki: _k, subjectDer: _s, issuerDer: _i, ...info } = c.info;
  return { ...info, dnsNames: [...info.dnsNames], uris: [...info.uris] };
}

type Failure = { code: 'CERTIFICATE_EXPIRED' | 'CERTIFICATE_UNTRUSTED'; message: string };

/** Checks a complete candidate path [leaf, ..., anchor]. */
function evaluate(path: Cert[], now: Date): Failure | undefined {
  for (let k = 1; k < path.length; k++) {
    const issuer = (path[k] as Cert).info;
    if (!issuer.isCa) return { code: 'CERTIFICATE_UNTRUSTED', message: `issuer "${issuer.subject}" is not a CA (basicConstraints CA:true missing)` };
    // Intermediates below this issuer, excluding the leaf.
    if (issuer.pathLength !== undefined && k - 1 > issuer.pathLength) {
      return { code: 'CERTIFICATE_UNTRUSTED', message: `path length constraint of "${issuer.subject}" (${issuer.pathLength}) exceeded` };
    }
  }
  const t = now.getTime();
  for (const c of path) {
    if (t < c.info.notBefore.getTime()) return { code: 'CERTIFICATE_EXPIRED', message: `certificate "${c.info.subject}" is not valid before ${c.info.notBefore.toISOString()}` };
    if (t > c.info.notAfter.getTime()) return { code: 'CERTIFICATE_EXPIRED', message: `certificate "${c.info.subject}" expired at ${c.info.notAfter.toISOString()}` };
  }
  return undefined;
}

/**
 * Builds and validates a path leaf → intermediates* → anchor. Returns the anchor's id and the chain
 * (leaf first, anchor last). Throws CERTIFICATE_EXPIRED when the only paths found contain an
 * expired or not-yet-valid certificate, CERTIFICATE_UNTRUSTED when there is no valid path.
 */
export function verifyChain(leafDer: Buffer, intermediates: Buffer[], anchors: TrustAnchor[], now: Date): { anchorId: string; chain: CertificateInfo[] } {
  let leaf: Cert;
  try {
    leaf = load(leafDer);
  } catch (err) {
    throw new FleetpassError('CERTIFICATE_UNTRUSTED', `presented certificate cannot be parsed: ${(err as Error).message}`, { cause: err });
  }
  const anchorCerts: { id: string; cert: Cert }[] = [];
  for (const a of anchors) {
    const cert = tryLoad(a.der);
    if (cert) anchorCerts.push({ id: a.id, cert });
  }
  const pool: Cert[] = [];
  for (const der of intermediates) {
    const cert = tryLoad(der);
    if (cert && !pool.some((p) => p.info.fingerprint === cert.info.fingerprint)) pool.push(cert);
  }

  const issuedMemo = new Map<string, boolean>();
  const issuedBy = (child: Cert, parent: Cert): boolean => {
    const key = `${child.info.fingerprint}>${parent.info.fingerprint}`;
    let r = issuedMemo.get(key);
    if (r === undefined) {
      try {
        r = child.x509.checkIssued(parent.x509) && child.x509.verify(parent.x509.publicKey);
      } catch {
        r = false;
      }
      issuedMemo.set(key, r);
    }
    return r;
  };

  let best: Failure | undefined;
  const consider = (f: Failure): void => {
    if (!best || (best.code === 'CERTIFICATE_UNTRUSTED' && f.code === 'CERTIFICATE_EXPIRED')) best = f;
  };

  // The presented certificate itself is an anchor (pinned certificate).
  for (const a of anchorCerts) {
    if (a.cert.info.fingerprint === leaf.info.fingerprint) {
      const f = evaluate([leaf], now);
      if (!f) return { anchorId: a.id, chain: [toInfo(leaf)] };
      consider(f);
    }
  }

  const search = (path: Cert[]): { anchorId: string; chain: Cert[] } | undefined => {
    const cur = path[path.length - 1] as Cert;
    if (path.length + 1 > MAX_CHAIN_DEPTH) {
      consider({ code: 'CERTIFICATE_UNTRUSTED', message: `no path within the maximum depth of ${MAX_CHAIN_DEPTH}` });
      return undefined;
    }
    for (const a of anchorCerts) {
      if (a.cert.info.fingerprint === cur.info.fingerprint) continue;
      if (!issuedBy(cur, a.cert)) continue;
      const chain = [...path, a.cert];
      const f = evaluate(chain, now);
      if (!f) return { anchorId: a.id, chain };
      consider(f);
    }
    for (const next of pool) {
      if (path.some((p) => p.info.fingerprint === next.info.fingerprint)) continue;
      if (!issuedBy(cur, next)) continue;
      const found = search([...path, next]);
      if (found) return found;
    }
    return undefined;
  };

  const found = search([leaf]);
  if (found) return { anchorId: found.anchorId, chain: found.chain.map(toInfo) };
  if (best) fail(best.code, best.message);
  fail('CERTIFICATE_UNTRUSTED', `no trusted CA issued "${leaf.info.subject}" (issuer "${leaf.info.issuer}")`);
}
