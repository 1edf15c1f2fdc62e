import { FleetpassError } from '../core/errors.js';

const PEM_BLOCK = /-----BEGIN ([A-Z0-9 ]+)-----([\s\S]*?)-----END \1-----/g;

function decodeBase64Strict(text: string, what: string): Buffer {
  const compact = text.replace(/\s+/g, '');
  if (compact.length === 0) throw new FleetpassError('VALIDATION_FAILED', `${what}: empty`);
  if (!/^[A-Za-z0-9+/\-_]+={0,2}$/.test(compact) || compact.replace(/=+$/, '').length % 4 === 1) {
    throw new FleetpassError('VALIDATION_FAILED', `${what}: not PEM or base64`);
  }
  const der = Buffer.from(compact, compact.includes('-') || compact.includes('_') ? 'base64url' : 'base64');
  if (der.length === 0) throw new FleetpassError('VALIDATION_FAILED', `${what}: empty`);
  return der;
}

/**
 * PEM (first block; when `label` is given, the first block with that label or one of those labels)
 * or bare base64 DER, whitespace tolerant. Throws FleetpassError('VALIDATION_FAILED') otherwise.
 */
export function pemToDer(pem: string, label?: string | readonly string[]): Buffer {
  const labels = label === undefined ? undefined : typeof label === 'string' ? [label] : label;
  if (pem.includes('-----BEGIN ')) {
    let sawLabel: string | undefined;
    for (const m of pem.matchAll(PEM_BLOCK)) {
      const blockLabel = m[1] as string;
      sawLabel ??= blockLabel;
      if (labels && !labels.includes(blockLabel)) continue;
      // RFC 7468 allows (legacy) encapsulated headers such as Proc-Type; they never occur in
      // the objects handled here, so reject them rather than mis-decode.
      const body = m[2] as string;
      if (body.includes(':')) throw new FleetpassError('VALIDATION_FAILED', `PEM ${blockLabel}: encapsulated headers (encrypted PEM?) are not supported`);
      return decodeBase64Strict(body, `PEM ${blockLabel}`);
    }
    if (sawLabel !== undefined) throw new FleetpassError('VALIDATION_FAILED', `expected PEM ${labels?.join(' or ')}, found ${sawLabel}`);
    throw new FleetpassError('VALIDATION_FAILED', 'PEM block is not terminated');
  }
  return decodeBase64Strict(pem, 'base64 DER');
}

/** DER → PEM with 64-character lines and a trailing newline. */
export function derToPem(der: Buffer, label: string): string {
  const b64 = der.toString('base64');
  let body = '';
  for (let i = 0; i < b64.length; i += 64) body += `${b64.slice(i, i + 64)}\n`;
  return `-----BEGIN ${label}-----\n${body}-----END ${label}-----\n`;
}

/** All `CERTIFICATE` blocks of a PEM bundle, in order (other blocks are skipped). */
export function splitPemChain(text: string, label = 'CERTIFICATE'): Buffer[] {
  const out: Buffer[] = [];
  for (const m of text.matchAll(PEM_BLOCK)) {
    if (m[1] !== label) continue;
    out.push(decodeBase64Strict(m[2] as string, `PEM ${label}`));
  }
  return out;
}
