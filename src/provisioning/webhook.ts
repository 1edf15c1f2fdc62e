import { fail } from '../core/errors.js';

export interface HookRequest {
  tenantId: string;
  enrollmentId: string;
  registrationId: string;
  attestation: string;
  publicKeyFingerprint: string;
  parameters: Record<string, string>;
}

/**
 * Optional customer webhook before registration (like AWS's pre-provisioning hook). It answers
 * `{"allow": true|false, "reason"?: "…", "parameterOverrides"?: {…}}`; anything else is HOOK_FAILED.
 */
export async function callPreProvisioningHook(url: string, body: HookRequest, timeoutMs: number): Promise<Record<string, string>> {
  let res: Response;
  try {
    res = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body), signal: AbortSignal.timeout(timeoutMs) });
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
