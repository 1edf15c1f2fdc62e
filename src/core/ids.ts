import { randomBytes, randomFillSync, createHash } from 'node:crypto';

/** Sortable, URL-safe resource IDs: `<prefix>_<time-ordered base32>`. Time order keeps B-tree inserts local. */
const ALPHABET = '0123456789abcdefghjkmnpqrstvwxyz';

export function newId(prefix: string): string {
  const time = Date.now();
  let t = '';
  let n = time;
  for (let i = 0; i < 10; i++) {
    t = ALPHABET[n % 32] + t;
    n = Math.floor(n / 32);
  }
  let r = '';
  for (let i = 0; i < 10; i++) r += ALPHABET[randomByte() % 32];
  return `${prefix}_${t}${r}`;
}

// Several IDs are made per onboarding; one call into OpenSSL per 4 KiB instead of one per ID (the
// same pooling node:crypto does for randomUUID).
const POOL = Buffer.alloc(4096);
let poolAt = POOL.length;

function randomByte(): number {
  if (poolAt === POOL.length) {
    randomFillSync(POOL);
    poolAt = 0;
  }
  return POOL[poolAt++]!;
}

export function randomToken(bytes = 32): string {
  return randomBytes(bytes).toString('base64url');
}

export function sha256Hex(data: string | Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}
