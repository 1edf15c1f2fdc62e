import type { TLSSocket, DetailedPeerCertificate } from 'node:tls';
import type { FastifyRequest } from 'fastify';

/** The certificates the client sent over TLS, leaf first (empty without a client certificate). */
export function peerCertificateChain(request: FastifyRequest): Buffer[] {
  const socket = request.raw.socket as Partial<TLSSocket>;
  if (typeof socket.getPeerCertificate !== 'function') return [];
  const leaf = socket.getPeerCertificate(true) as DetailedPeerCertificate | null;
  if (!leaf || !leaf.raw) return [];
  const out: Buffer[] = [];
  const seen = new Set<string>();
  let c: DetailedPeerCertificate | undefined = leaf;
  while (c && c.raw && !seen.has(c.fingerprint256) && out.length < 6) {
    out.push(c.raw);
    seen.add(c.fingerprint256);
    c = c.issuerCertificate;
  }
  return out;
}
