import { createHash } from 'node:crypto';
import type { AuditEvent } from './types.js';

export const AUDIT_GENESIS_HASH = '0'.repeat(64);

/** Deterministic JSON: object keys sorted at every depth, so the hash does not depend on key order. */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== 'object') return JSON.stringify(value ?? null);
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  const entries = Object.entries(value as Record<string, unknown>)
    .filter(([, v]) => v !== undefined)
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(',')}}`;
}

/** hash = sha256(prevHash || canonical(event without hash fields)). Each row commits to its predecessor. */
export function auditEventHash(event: Omit<AuditEvent, 'hash'>): string {
  const { prevHash, ...rest } = event;
  return createHash('sha256').update(prevHash).update(canonicalJson(rest)).digest('hex');
}
