/**
 * EST (RFC 7030 / RFC 8951) simpleenroll, as docs/protocols/est.md describes Fleetpass's EST door: the
 * CSR as base64 DER (application/pkcs10), template parameters and the registration ID in the query
 * string, the answer a certs-only PKCS#7 in base64. A device authenticates with its factory
 * certificate over TLS, or with HTTP Basic: registration ID and one-time token, or registration ID
 * and its group-derived key on the label path of its enrollment group. Errors are text/plain
 * "<CODE>: <message>"; a deferral is 202 with Retry-After.
 */
import { X509Certificate } from 'node:crypto';
import { certificatesFromPkcs7, fromPem, toPem } from '../der.js';
import { retryAfterMs, type AttemptOptions, type AttemptResult, type DeviceCredential, type DeviceProtocol, type OnboardRequest } from './types.js';
import { exchange, type ResolvedTarget } from './transport.js';

export function certificateFromEstAnswer(body: Buffer): { certificatePem: string; serial: string } {
  const text = body.toString('latin1').trim();
  // Base64 (with or without line breaks), or PEM / raw DER from lenient servers.
  const der = body[0] === 0x30 ? body : text.includes('-----BEGIN') ? fromPem(text) : Buffer.from(text.replace(/\s+/g, ''), 'base64');
  const [first] = certificatesFromPkcs7(der);
  if (!first) throw new Error('the PKCS#7 answer holds no certificate');
  const cert = new X509Certificate(first);
  return { certificatePem: toPem('CERTIFICATE', first), serial: cert.serialNumber.toLowerCase().replace(/^0+(?=.)/, '') };
}

/** "<CODE>: <message>" (Fleetpass's EST errors); HTTP_<status> for anything else. */
export function estError(status: number, headers: Record<string, string | string[] | undefined>, body: Buffer): AttemptResult {
  const text = body.toString('utf8').slice(0, 500);
  const m = /^([A-Z][A-Z0-9_]+):\s?([\s\S]*)$/.exec(text.trim());
  return { kind: 'error', status, code: m ? m[1]! : `HTTP_${status}`, retryAfterMs: retryAfterMs(headers['retry-after']), message: m ? m[2]! : text };
}

function basic(user: string, password: string): string {
  return `Basic ${Buffer.from(`${user}:${password}`, 'utf8').toString('base64')}`;
}

/** Path prefix and headers for a credential: Basic for tokens and group keys (on the group's label path). */
function authFor(registrationId: string, c: DeviceCredential): { label: string | null; headers: Record<string, string> } {
  if (c.type === 'token') return { label: null, headers: { authorization: basic(registrationId, c.token) } };
  if (c.type === 'sas') return { label: c.group, headers: { authorization: basic(registrationId, c.deviceKey) } };
  return { label: null, headers: {} };
}

export class EstProtocol implements DeviceProtocol {
  readonly name = 'est';
  readonly carriesParameters = true;
  constructor(private readonly target: ResolvedTarget) {}

  async attempt(req: OnboardRequest, opts: AttemptOptions): Promise<AttemptResult> {
    const { label, headers } = authFor(req.registrationId, req.credential);
    const query = new URLSearchParams({ registrationId: req.registrationId, ...req.parameters }).toString();
    const res = await exchange(this.target, {
      method: 'POST',
      path: `/.well-known/est/${label ? `${encodeURIComponent(label)}/` : ''}simpleenroll?${query}`,
      headers: { 'content-type': 'application/pkcs10', 'content-transfer-encoding': 'base64', accept: 'application/pkcs7-mime', ...headers },
      body: fromPem(req.csrPem).toString('base64').replace(/(.{64})/g, '$1\n'),
      ...(req.credential.type === 'client-certificate' ? { clientCertificate: req.credential } : {}),
      resetBeforeSend: opts.resetBeforeSend,
      timeoutMs: opts.timeoutMs,
    });
    if (!res.ok) return { kind: 'network', code: res.code, message: res.message };
    if (res.status === 200) {
      try {
        const { certificatePem, serial } = certificateFromEstAnswer(res.body);
        return { kind: 'issued', status: 200, deviceId: null, certificatePem, serial };
      } catch (e) {
        return { kind: 'error', status: 200, code: 'BAD_ANSWER', retryAfterMs: null, message: `200 without a usable PKCS#7: ${(e as Error).message}` };
      }
    }
    return estError(res.status, res.headers, res.body);
  }

  close(): void {
    this.target.agent?.destroy();
  }
}
