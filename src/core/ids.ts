import { randomBytes, createHash } from 'node:crypto';

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
  const rnd = randomBytes(10);
  let r = '';
  for (let i = 0; i < rnd.length; i++) r += ALPHABET[rnd[i]! % 32];
  return `${prefix}_${t}${r}`;
}

export function randomToken(bytes = 32): string {
  return randomBytes(bytes).toString('base64url');
}

export function sha256Hex(data: string | Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}
