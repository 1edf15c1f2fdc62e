import { BlockList, isIP } from 'node:net';
import type { X509Certificate } from 'node:crypto';
import type { TLSSocket } from 'node:tls';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { DeviceCredential } from '../../provisioning/attestation.js';
import { fail } from '../../core/errors.js';
import { loadCertificate, splitPemChain } from '../../pki/index.js';

/** A load balancer that terminates mTLS and forwards the client certificate in a header. */
export interface ProxyClientCertOptions {
  trustedProxies: string[];
  header: string;
}

interface ProxyState {
  header: string;
  trusted: BlockList;
}

const PROXY = Symbol('fleetpass.proxyClientCert');

/** Turns on forwarded client certificates for this app (off unless configured). */
export function enableProxyClientCert(app: FastifyInstance, opts: ProxyClientCertOptions): void {
  const trusted = new BlockList();
  for (const entry of opts.trustedProxies) {
    const [addr, prefix] = entry.split('/');
    const type = isIP(addr ?? '') === 6 ? 'ipv6' : 'ipv4';
    if (prefix !== undefined) trusted.addSubnet(addr!, Number(prefix), type);
    else trusted.addAddress(addr!, type);
  }
  (app as unknown as Record<symbol, ProxyState>)[PROXY] = { header: opts.header.toLowerCase(), trusted };
}

function isTrusted(state: ProxyState, address: string | undefined): boolean {
  if (!address) return false;
  const v4mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/.exec(address);
  if (v4mapped) return state.trusted.check(v4mapped[1]!, 'ipv4');
  return state.trusted.check(address, isIP(address) === 6 ? 'ipv6' : 'ipv4');
}

/**
 * Decodes a forwarded certificate: Envoy XFCC (`Cert="<url-encoded PEM>";Chain="…"`), URL-encoded
 * PEM (nginx `$ssl_client_escaped_cert`), plain PEM, or base64 DER (HAProxy `ssl_c_der,base64`).
 */
export function parseForwardedCertificate(value: string): Buffer[] {
  let v = value.trim();
  if (v === '') return [];
  const xfccCert = /(?:^|[;,])\s*Cert="([^"]*)"/i.exec(v);
  if (xfccCert) {
    const chain = /(?:^|[;,])\s*Chain="([^"]*)"/i.exec(v);
    // Chain (when the proxy forwards it) holds the leaf and its intermediates; Cert only the leaf.
    return splitPemChain(decodeURIComponent(chain?.[1] ?? xfccCert[1]!));
  }
  if (v.startsWith('%2D') || v.startsWith('%2d') || v.includes('%0A')) v = decodeURIComponent(v);
  if (v.startsWith('-----BEGIN')) {
    // Some proxies fold PEM onto one line with spaces or tabs in place of newlines.
    return splitPemChain(v.replace(/-----(BEGIN|END) CERTIFICATE-----|[ \t]+/g, (m) => (m.startsWith('-----') ? `\n${m}\n` : '\n')));
  }
  if (/^[A-Za-z0-9+/=\s]+$/.test(v)) return [Buffer.from(v.replace(/\s+/g, ''), 'base64')];
  return fail('ATTESTATION_FAILED', 'the forwarded client certificate header cannot be decoded');
}

/** The certificates the client presented, leaf first (empty without a client certificate). */
export function peerCertificateChain(request: FastifyRequest): Buffer[] {
  const proxy = (request.server as unknown as Record<symbol, ProxyState | undefined>)[PROXY];
  if (proxy && isTrusted(proxy, request.raw.socket.remoteAddress)) {
    // Behind the proxy the TLS peer is the proxy itself: only the header speaks for the device.
    const raw = request.headers[proxy.header];
    const value = Array.isArray(raw) ? raw[0] : raw;
    return value ? parseForwardedCertificate(value) : [];
  }
  // From anywhere else the header is ignored: a device could forge it.
  // getPeerX509Certificate hands over OpenSSL's already-decoded certificates; decoding them again
  // (getPeerCertificate, new X509Certificate) cost ~0.5 ms per device.
  const socket = request.raw.socket as Partial<TLSSocket>;
  if (typeof socket.getPeerX509Certificate !== 'function') return [];
  const out: Buffer[] = [];
  const seen = new Set<string>();
  let c: X509Certificate | undefined = socket.getPeerX509Certificate();
  while (c && !seen.has(c.fingerprint256) && out.length < 6) {
    const der = c.raw;
    out.push(der);
    seen.add(c.fingerprint256);
    primeParsed(der, c);
    c = c.issuerCertificate;
  }
  return out;
}

/** Leaves OpenSSL's decoding in the certificate cache for attestation; a certificate we reject is reported there. */
function primeParsed(der: Buffer, x509: X509Certificate): void {
  try {
    loadCertificate(der, x509);
  } catch {
    // attestation parses it again and answers with the coded error
  }
}

/** Credential from the wire: an Authorization header wins over a TLS client certificate. */
export function credentialFrom(request: FastifyRequest): DeviceCredential {
  const auth = request.headers.authorization;
  if (auth) {
    if (auth.startsWith('SharedAccessSignature ')) return { type: 'sas', authorization: auth };
    const m = /^Bearer\s+(\S+)\s*$/i.exec(auth);
    if (m) return { type: 'token', token: m[1]! };
  }
  const chain = peerCertificateChain(request);
  if (chain.length > 0) return { type: 'client-certificate', chainDer: chain };
  return { type: 'none' };
}
