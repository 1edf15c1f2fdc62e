/**
 * One HTTPS exchange as a device makes it: by default over its own fresh TLS connection (no session
 * reuse), presenting its client certificate when it has one, with an overall timeout, and with the
 * "reset before send" fault done for real (the TLS handshake completes, then the socket is destroyed
 * before a byte of the request is written).
 */
import { lookup } from 'node:dns/promises';
import { Agent, request } from 'node:https';
import { isIP, connect } from 'node:net';
import { createSecureContext, type ConnectionOptions, type SecureContext, type TLSSocket } from 'node:tls';
import { PinnedTrust } from '../trust.js';
import type { ProtocolTarget } from './types.js';

export interface ResolvedTarget extends ProtocolTarget {
  /** Address to connect to (resolved once, so that 10,000 devices do not cost 10,000 DNS lookups). */
  address: string;
  /** TLS server name to verify, when the target is a host name. */
  servername: string | undefined;
  hostHeader: string;
  port: number;
  basePath: string;
  agent: Agent | undefined;
  trust: PinnedTrust;
  /** Host name or IP the server certificate must name. */
  verifyHost: string;
  /** TLS context of devices without a client certificate, built once. */
  sharedContext: SecureContext;
}

async function reachable(address: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect({ host: address, port, timeout: 3000 });
    const done = (ok: boolean) => {
      s.destroy();
      resolve(ok);
    };
    s.once('connect', () => done(true));
    s.once('error', () => done(false));
    s.once('timeout', () => done(false));
  });
}

/** Resolves the host once and picks the first address that accepts a TCP connection. */
export async function resolveTarget(target: ProtocolTarget): Promise<ResolvedTarget> {
  const { url } = target;
  if (url.protocol !== 'https:') throw new Error(`--target must be an https:// URL (got ${url.protocol})`);
  const hostname = url.hostname.replace(/^\[|\]$/g, '');
  const port = url.port ? Number(url.port) : 443;
  let address = hostname;
  if (!isIP(hostname)) {
    const addrs = await lookup(hostname, { all: true });
    const found: string[] = [];
    for (const a of addrs) if (await reachable(a.address, port)) found.push(a.address);
    address = found[0] ?? addrs[0]?.address ?? hostname;
  }
  const agent = target.keepAlive ? new Agent({ keepAlive: true, maxSockets: target.maxSockets, maxFreeSockets: target.maxSockets, timeout: 30_000, scheduling: 'lifo' }) : undefined;
  return {
    ...target,
    address,
    servername: isIP(hostname) ? undefined : hostname,
    hostHeader: url.host,
    port,
    basePath: url.pathname.replace(/\/+$/, ''),
    agent,
    trust: new PinnedTrust(target.caPem),
    verifyHost: hostname,
    sharedContext: createSecureContext({ minVersion: 'TLSv1.2' }),
  };
}

export interface ExchangeRequest {
  method: string;
  path: string;
  headers: Record<string, string>;
  body: string | Buffer;
  clientCertificate?: { certPem: string; keyPem: string };
  resetBeforeSend: boolean;
  timeoutMs: number;
}

export type ExchangeResult =
  | { ok: true; status: number; headers: Record<string, string | string[] | undefined>; body: Buffer }
  | { ok: false; code: string; message: string };

export const INJECTED_RESET = 'INJECTED_RESET';

const verifiedSockets = new WeakSet<object>();

/** tls.connect's `secureContext`, which node:https passes on but does not declare. */
const withContext = (secureContext: SecureContext): Pick<ConnectionOptions, 'secureContext'> => ({ secureContext });

/**
 * Frees a SecureContext's OpenSSL context now: the native `close` Node's own TLS code has, without a
 * public name. Should a Node version lack it, the garbage collector frees the context as before.
 */
function closeContext(ctx: SecureContext): void {
  const native = (ctx as SecureContext & { context?: { close?: () => void } }).context;
  if (typeof native?.close === 'function') native.close();
}

/**
 * The server is checked against the pinned bundle by PinnedTrust once the handshake is done, and the
 * request is written only after that check: OpenSSL's own verification would need the bundle loaded
 * into a fresh certificate store for every connection, and Node's identity check a full decode of
 * the peer chain — together several milliseconds of CPU per device.
 */
export function exchange(t: ResolvedTarget, r: ExchangeRequest): Promise<ExchangeResult> {
  return new Promise((resolve) => {
    let settled = false;
    const finish = (res: ExchangeResult) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve(res);
    };
    // A connection that presented a device's client certificate is that device's alone: not pooled.
    const fresh = r.resetBeforeSend || !t.agent || r.clientCertificate !== undefined;
    // The device's own TLS context, freed as soon as its connection has closed: left to the garbage
    // collector, the contexts of thousands of devices were freed inside its pauses (a Mark-Compact
    // of an 11 MB heap took 220 ms, every ~20 s, in a 70-second run of bare handshakes), during which
    // the device side of a burst stood still.
    const deviceContext = r.clientCertificate ? createSecureContext({ cert: r.clientCertificate.certPem, key: r.clientCertificate.keyPem }) : undefined;
    const req = request({
      host: t.address,
      port: t.port,
      ...(t.servername ? { servername: t.servername } : {}),
      method: r.method,
      path: `${t.basePath}${r.path}`,
      headers: { host: t.hostHeader, 'content-length': String(Buffer.byteLength(r.body)), ...r.headers },
      rejectUnauthorized: false,
      // Devices without a client certificate share one TLS context (built once).
      ...withContext(deviceContext ?? t.sharedContext),
      agent: fresh ? false : t.agent,
    });
    const timer = setTimeout(() => {
      req.destroy(Object.assign(new Error(`no answer within ${r.timeoutMs} ms`), { code: 'TIMEOUT' }));
    }, r.timeoutMs);
    req.on('error', (e: NodeJS.ErrnoException) => {
      finish({ ok: false, code: e.code ?? 'NETWORK_ERROR', message: e.message });
    });
    req.on('response', (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => finish({ ok: true, status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
      res.on('error', (e: NodeJS.ErrnoException) => finish({ ok: false, code: e.code ?? 'NETWORK_ERROR', message: e.message }));
    });
    req.on('socket', (s) => {
      const socket = s as TLSSocket;
      // Only once the socket is closed: OpenSSL's connection holds its own reference to the context,
      // but Node's TLS wrapper may still reach it through the SecureContext until then.
      if (deviceContext) socket.once('close', () => closeContext(deviceContext));
      if (verifiedSockets.has(socket)) {
        req.end(r.body); // a kept-alive connection, checked when it was opened
        return;
      }
      socket.once('secureConnect', () => {
        if (r.resetBeforeSend) {
          // The handshake is done; the request is never written.
          req.destroy(Object.assign(new Error('connection reset before the request was sent (injected)'), { code: INJECTED_RESET }));
          return;
        }
        const problem = t.trust.checkServer(socket.getPeerX509Certificate(), t.verifyHost);
        if (problem) {
          req.destroy(Object.assign(new Error(problem), { code: 'SERVER_UNTRUSTED' }));
          return;
        }
        verifiedSockets.add(socket);
        req.end(r.body);
      });
    });
  });
}
