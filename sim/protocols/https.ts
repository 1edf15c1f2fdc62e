/** The native HTTPS device API: POST /v1/provision with a JSON body (README, docs/reason-codes.md). */
import { exchange, type ResolvedTarget } from './transport.js';
import { retryAfterMs, type AttemptOptions, type AttemptResult, type DeviceCredential, type DeviceProtocol, type OnboardRequest } from './types.js';
import { sasAuthorization } from '../crypto.js';

/** Authorization for a device: the SAS is signed per attempt, with a fresh expiry. */
export function deviceAuthorization(registrationId: string, c: DeviceCredential): Record<string, string> {
  if (c.type === 'token') return { authorization: `Bearer ${c.token}` };
  if (c.type === 'sas') return { authorization: sasAuthorization(c.idScope, registrationId, c.deviceKey) };
  return {};
}

interface ErrorBody {
  error?: { code?: unknown; message?: unknown };
}

/** The error answer of any Fleetpass door that speaks JSON errors. */
export function errorResult(status: number, headers: Record<string, string | string[] | undefined>, body: Buffer): AttemptResult {
  let code = `HTTP_${status}`;
  let message = body.toString('utf8').slice(0, 300);
  try {
    const j = JSON.parse(body.toString('utf8')) as ErrorBody;
    if (typeof j.error?.code === 'string') code = j.error.code;
    if (typeof j.error?.message === 'string') message = j.error.message;
  } catch {
    // not JSON: keep the status-derived code
  }
  return { kind: 'error', status, code, retryAfterMs: retryAfterMs(headers['retry-after']), message };
}

export class HttpsProtocol implements DeviceProtocol {
  readonly name = 'https';
  readonly carriesParameters = true;
  constructor(private readonly target: ResolvedTarget) {}

  async attempt(req: OnboardRequest, opts: AttemptOptions): Promise<AttemptResult> {
    const body = JSON.stringify({ registrationId: req.registrationId, csr: req.csrPem, parameters: req.parameters });
    const res = await exchange(this.target, {
      method: 'POST',
      path: '/v1/provision',
      headers: { 'content-type': 'application/json', accept: 'application/json', ...deviceAuthorization(req.registrationId, req.credential) },
      body,
      ...(req.credential.type === 'client-certificate' ? { clientCertificate: req.credential } : {}),
      resetBeforeSend: opts.resetBeforeSend,
      timeoutMs: opts.timeoutMs,
    });
    if (!res.ok) return { kind: 'network', code: res.code, message: res.message };
    if (res.status === 200) {
      try {
        const j = JSON.parse(res.body.toString('utf8')) as { deviceId?: unknown; certificatePem?: unknown; certificateSerial?: unknown };
        if (typeof j.certificatePem !== 'string') throw new Error('no certificatePem');
        return { kind: 'issued', status: 200, deviceId: typeof j.deviceId === 'string' ? j.deviceId : null, certificatePem: j.certificatePem, serial: typeof j.certificateSerial === 'string' ? j.certificateSerial.toLowerCase() : null };
      } catch (e) {
        return { kind: 'error', status: 200, code: 'BAD_ANSWER', retryAfterMs: null, message: `200 without a usable body: ${(e as Error).message}` };
      }
    }
    return errorResult(res.status, res.headers, res.body);
  }

  close(): void {
    this.target.agent?.destroy();
  }
}
