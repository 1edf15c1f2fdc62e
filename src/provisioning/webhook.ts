import { createHmac } from 'node:crypto';
import { fail } from '../core/errors.js';

export interface HookRequest {
  tenantId: string;
  enrollmentId: string;
  registrationId: string;
  attestation: string;
  publicKeyFingerprint: string;
  parameters: Record<string, string>;
}

export interface HookOptions {
  timeoutMs: number;
  /**
   * FLEETPASS_WEBHOOK_SECRET, then FLEETPASS_WEBHOOK_SECRET_PREVIOUS while rotating: every request
   * is signed with each (signWebhookRequest); none, no signature.
   */
  secrets: readonly string[];
  now: Date;
}

/**
 * The signature headers of a webhook request: `X-Fleetpass-Timestamp` (Unix seconds) and
 * `X-Fleetpass-Signature: v1=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`, one `v1=` entry per
 * secret, comma separated (two while the secret is rotated: the webhook accepts the request if any
 * entry matches the secret it holds). The timestamp is signed with the body, so a receiver that also
 * rejects stale timestamps (say, older than 5 minutes) rejects a recorded request replayed later,
 * not only a forged one.
 */
export function signWebhookRequest(secrets: readonly string[], body: string, now: Date): Record<string, string> {
  const timestamp = String(Math.floor(now.getTime() / 1000));
  const signatures = secrets.map((secret) => `v1=${createHmac('sha256', secret).update(`${timestamp}.${body}`, 'utf8').digest('hex')}`);
  return { 'x-fleetpass-timestamp': timestamp, 'x-fleetpass-signature': signatures.join(',') };
}

/**
 * Optional customer webhook before registration (like AWS's pre-provisioning hook). It answers
 * `{"allow": true|false, "reason"?: "…", "parameterOverrides"?: {…}}`; anything else is HOOK_FAILED.
 */
export async function callPreProvisioningHook(url: string, request: HookRequest, opts: HookOptions): Promise<Record<string, string>> {
  const body = JSON.stringify(request);
  const headers: Record<string, string> = { 'content-type': 'application/json', ...(opts.secrets.length > 0 ? signWebhookRequest(opts.secrets, body, opts.now) : {}) };
  let res: Response;
  try {
    res = await fetch(url, { method: 'POST', headers, body, signal: AbortSignal.timeout(opts.timeoutMs) });
  } catch (e) {
    fail('HOOK_FAILED', `webhook ${new URL(url).host} unreachable: ${(e as Error).message}`);
  }
  if (!res.ok) fail('HOOK_FAILED', `webhook answered HTTP ${res.status}`);
  let answer: unknown;
  try {
    answer = await res.json();
  } catch {
    fail('HOOK_FAILED', 'webhook answer is not JSON');
  }
  if (typeof answer !== 'object' || answer === null || typeof (answer as { allow?: unknown }).allow !== 'boolean') fail('HOOK_FAILED', 'webhook answer lacks a boolean "allow"');
  const a = answer as { allow: boolean; reason?: unknown; parameterOverrides?: unknown };
  if (!a.allow) fail('HOOK_REJECTED', typeof a.reason === 'string' ? `webhook: ${a.reason.slice(0, 200)}` : undefined);
  const out: Record<string, string> = {};
  if (a.parameterOverrides && typeof a.parameterOverrides === 'object') {
    for (const [k, v] of Object.entries(a.parameterOverrides)) if (typeof v === 'string') out[k] = v;
  }
  return out;
}
