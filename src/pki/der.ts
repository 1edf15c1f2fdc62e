/**
 * Minimal DER encoder and reader. Issuance builds certificates from pre-encoded pieces with these
 * helpers (an order of magnitude faster than schema-driven encoders); the reader slices exact DER out
 * of received structures (names, SPKI, signed parts) without re-encoding them.
 */

// ---------------------------------------------------------------------------------------------
// encoding
// ---------------------------------------------------------------------------------------------

export const TAG = {
  BOOLEAN: 0x01,
  INTEGER: 0x02,
  BIT_STRING: 0x03,
  OCTET_STRING: 0x04,
  NULL: 0x05,
  OID: 0x06,
  ENUMERATED: 0x0a,
  UTF8_STRING: 0x0c,
  PRINTABLE_STRING: 0x13,
  T61_STRING: 0x14,
  IA5_STRING: 0x16,
  UTC_TIME: 0x17,
  GENERALIZED_TIME: 0x18,
  UNIVERSAL_STRING: 0x1c,
  BMP_STRING: 0x1e,
  SEQUENCE: 0x30,
  SET: 0x31,
} as const;

function lengthBytes(len: number): Buffer {
  if (len < 0x80) return Buffer.from([len]);
  if (len < 0x100) return Buffer.from([0x81, len]);
  if (len < 0x10000) return Buffer.from([0x82, len >> 8, len & 0xff]);
  if (len < 0x1000000) return Buffer.from([0x83, len >> 16, (len >> 8) & 0xff, len & 0xff]);
  return Buffer.from([0x84, (len >>> 24) & 0xff, (len >> 16) & 0xff, (len >> 8) & 0xff, len & 0xff]);
}

/** Encodes one TLV whose content is the concatenation of `parts`. */
export function tlv(tag: number, ...parts: Buffer[]): Buffer {
  let len = 0;
  for (const p of parts) len += p.length;
  const header = lengthBytes(len);
  const out = Buffer.allocUnsafe(1 + header.length + len);
  out[0] = tag;
  header.copy(out, 1);
  let pos = 1 + header.length;
  for (const p of parts) {
    p.copy(out, pos);
    pos += p.length;
  }
  return out;
}

export const seq = (...parts: Buffer[]): Buffer => tlv(TAG.SEQUENCE, ...parts);
export const set = (...parts: Buffer[]): Buffer => tlv(TAG.SET, ...parts);
export const octetString = (b: Buffer): Buffer => tlv(TAG.OCTET_STRING, b);
export const bitString = (b: Buffer, unusedBits = 0): Buffer => tlv(TAG.BIT_STRING, Buffer.from([unusedBits]), b);
export const utf8 = (s: string): Buffer => tlv(TAG.UTF8_STRING, Buffer.from(s, 'utf8'));
export const printable = (s: string): Buffer => tlv(TAG.PRINTABLE_STRING, Buffer.from(s, 'latin1'));
export const ia5 = (s: string): Buffer => tlv(TAG.IA5_STRING, Buffer.from(s, 'latin1'));
export const NULL_DER = Buffer.from([0x05, 0x00]);
export const TRUE_DER = Buffer.from([0x01, 0x01, 0xff]);
/** Context-specific constructed [n] (EXPLICIT tagging, or IMPLICIT of a constructed type). */
export const ctxCons = (n: number, ...parts: Buffer[]): Buffer => tlv(0xa0 | n, ...parts);
/** Context-specific primitive [n] (IMPLICIT of a primitive type). */
export const ctxPrim = (n: number, content: Buffer): Buffer => tlv(0x80 | n, content);

/** Encodes a non-negative INTEGER from unsigned big-endian magnitude bytes. */
export function uintFromBytes(magnitude: Buffer): Buffer {
  let start = 0;
  while (start < magnitude.length - 1 && magnitude[start] === 0) start++;
  let m = magnitude.subarray(start);
  if (m.length === 0) m = Buffer.from([0]);
  if ((m[0] as number) & 0x80) m = Buffer.concat([Buffer.from([0]), m]);
  return tlv(TAG.INTEGER, m);
}

export function uint(value: number | bigint): Buffer {
  let v = BigInt(value);
  if (v < 0n) throw new RangeError('negative integer');
  const bytes: number[] = [];
  do {
    bytes.unshift(Number(v & 0xffn));
    v >>= 8n;
  } while (v > 0n);
  return uintFromBytes(Buffer.from(bytes));
}

const oidCache = new Map<string, Buffer>();

/** Encodes an OBJECT IDENTIFIER (cached: OIDs repeat on every certificate). */
export function oid(dotted: string): Buffer {
  const hit = oidCache.get(dotted);
  if (hit) return hit;
  const arcs = dotted.split('.').map((a) => BigInt(a));
  if (arcs.length < 2) throw new RangeError(`bad OID ${dotted}`);
  const bytes: number[] = [];
  const encodeArc = (arc: bigint): void => {
    const chunk: number[] = [Number(arc & 0x7fn)];
    arc >>= 7n;
    while (arc > 0n) {
      chunk.unshift(Number(arc & 0x7fn) | 0x80);
      arc >>= 7n;
    }
    bytes.push(...chunk);
  };
  encodeArc((arcs[0] as bigint) * 40n + (arcs[1] as bigint));
  for (let i = 2; i < arcs.length; i++) encodeArc(arcs[i] as bigint);
  const out = tlv(TAG.OID, Buffer.from(bytes));
  oidCache.set(dotted, out);
  return out;
}

/** Decodes the content octets of an OBJECT IDENTIFIER. */
export function decodeOid(content: Buffer): string {
  if (content.length === 0) throw new Error('empty OID');
  const arcs: bigint[] = [];
  let v = 0n;
  let first = true;
  for (let i = 0; i < content.length; i++) {
    const b = content[i] as number;
    if (v === 0n && b === 0x80) throw new Error('non-minimal OID arc');
    v = (v << 7n) | BigInt(b & 0x7f);
    if ((b & 0x80) === 0) {
      if (first) {
        const a = v < 40n ? 0n : v < 80n ? 1n : 2n;
        arcs.push(a, v - a * 40n);
        first = false;
      } else arcs.push(v);
      v = 0n;
    } else if (i === content.length - 1) throw new Error('truncated OID');
  }
  return arcs.join('.');
}

const pad2 = (n: number): string => (n < 10 ? `0${n}` : String(n));

/** RFC 5280 Time: UTCTime for 1950..2049, GeneralizedTime otherwise; seconds precision. */
export function time(d: Date): Buffer {
  const y = d.getUTCFullYear();
  const rest = `${pad2(d.getUTCMonth() + 1)}${pad2(d.getUTCDate())}${pad2(d.getUTCHours())}${pad2(d.getUTCMinutes())}${pad2(d.getUTCSeconds())}Z`;
  if (y >= 1950 && y < 2050) return tlv(TAG.UTC_TIME, Buffer.from(`${pad2(y % 100)}${rest}`, 'latin1'));
  return tlv(TAG.GENERALIZED_TIME, Buffer.from(`${String(y).padStart(4, '0')}${rest}`, 'latin1'));
}

/** Parses the content of a UTCTime / GeneralizedTime TLV. */
export function decodeTime(node: DerNode): Date {
  const s = node.content.toString('latin1');
  let m: RegExpMatchArray | null;
  let year: number;
  if (node.tag === TAG.UTC_TIME) {
    m = /^(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})?Z$/.exec(s);
    if (!m) throw new Error(`bad UTCTime ${s}`);
    const yy = Number(m[1]);
    year = yy >= 50 ? 1900 + yy : 2000 + yy;
  } else if (node.tag === TAG.GENERALIZED_TIME) {
    m = /^(\d{4})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})?(?:\.\d+)?Z$/.exec(s);
    if (!m) throw new Error(`bad GeneralizedTime ${s}`);
    year = Number(m[1]);
  } else throw new Error(`expected a time, got tag 0x${node.tag.toString(16)}`);
  return new Date(Date.UTC(year, Number(m[2]) - 1, Number(m[3]), Number(m[4]), Number(m[5]), Number(m[6] ?? '0')));
}

// ---------------------------------------------------------------------------------------------
// reading
// ---------------------------------------------------------------------------------------------

export interface DerNode {
  tag: number;
  /** The whole TLV (header + content) as a view into the source buffer. */
  raw: Buffer;
  /** The content octets as a view into the source buffer. */
  content: Buffer;
}

/** Reads one TLV at `offset`. Rejects indefinite and non-minimal lengths and overruns. */
export function readNode(buf: Buffer, offset = 0): DerNode {
  if (offset + 2 > buf.length) throw new Error('DER truncated');
  const tag = buf[offset] as number;
  if ((tag & 0x1f) === 0x1f) throw new Error('DER high tag numbers are not supported');
  let len = buf[offset + 1] as number;
  let hdr = 2;
  if (len & 0x80) {
    const n = len & 0x7f;
    if (n === 0) throw new Error('DER indefinite length');
    if (n > 4) throw new Error('DER length too large');
    if (offset + 2 + n > buf.length) throw new Error('DER truncated');
    len = 0;
    for (let i = 0; i < n; i++) len = len * 256 + (buf[offset + 2 + i] as number);
    if (len < 0x80 || (n > 1 && buf[offset + 2] === 0)) throw new Error('DER non-minimal length');
    hdr += n;
  }
  const end = offset + hdr + len;
  if (end > buf.length) throw new Error('DER truncated');
  return { tag, raw: buf.subarray(offset, end), content: buf.subarray(offset + hdr, end) };
}

/** Reads a TLV that must span the whole buffer. */
export function readExact(buf: Buffer, expectTag?: number): DerNode {
  const node = readNode(buf, 0);
  if (node.raw.length !== buf.length) throw new Error('DER has trailing data');
  if (expectTag !== undefined && node.tag !== expectTag) throw new Error(`expected tag 0x${expectTag.toString(16)}, got 0x${node.tag.toString(16)}`);
  return node;
}

/** The children of a constructed node. */
export function children(node: DerNode): DerNode[] {
  const out: DerNode[] = [];
  let pos = 0;
  while (pos < node.content.length) {
    const child = readNode(node.content, pos);
    out.push(child);
    pos += child.raw.length;
  }
  return out;
}

export function expectTag(node: DerNode | undefined, tag: number, what: string): DerNode {
  if (!node) throw new Error(`${what} missing`);
  if (node.tag !== tag) throw new Error(`${what}: expected tag 0x${tag.toString(16)}, got 0x${node.tag.toString(16)}`);
  return node;
}

/** An INTEGER's content without redundant leading zero bytes (a non-negative INTEGER's magnitude). */
export function integerMagnitude(node: DerNode): Buffer {
  let c = node.content;
  while (c.length > 1 && c[0] === 0) c = c.subarray(1);
  return c;
}

/** Lower-case hex of an INTEGER's content without redundant leading zero bytes. */
export function integerHex(node: DerNode): string {
  return integerMagnitude(node).toString('hex');
}
