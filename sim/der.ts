/**
 * Just enough DER to build certificates and CSRs (encoder) and to read a certs-only PKCS#7 answer
 * (reader). Hand-rolled so that 100,000 factory certificates cost milliseconds, and so that the
 * simulator can build deliberately broken structures.
 */

function lengthBytes(n: number): Buffer {
  if (n < 0x80) return Buffer.from([n]);
  const bytes: number[] = [];
  for (let v = n; v > 0; v = Math.floor(v / 256)) bytes.unshift(v & 0xff);
  return Buffer.from([0x80 | bytes.length, ...bytes]);
}

export function tlv(tag: number, content: Buffer): Buffer {
  return Buffer.concat([Buffer.from([tag]), lengthBytes(content.length), content]);
}

export const seq = (...items: Buffer[]): Buffer => tlv(0x30, Buffer.concat(items));
export const set = (...items: Buffer[]): Buffer => tlv(0x31, Buffer.concat(items));
export const NULL = Buffer.from([0x05, 0x00]);
export const TRUE = Buffer.from([0x01, 0x01, 0xff]);
export const utf8 = (s: string): Buffer => tlv(0x0c, Buffer.from(s, 'utf8'));
export const octets = (b: Buffer): Buffer => tlv(0x04, b);
/** A BIT STRING with no unused bits (keys, signatures) or with `unused` trailing bits (key usage). */
export const bits = (b: Buffer, unused = 0): Buffer => tlv(0x03, Buffer.concat([Buffer.from([unused]), b]));
/** Context-specific constructed [n]. */
export const ctx = (n: number, content: Buffer): Buffer => tlv(0xa0 | n, content);

export function integer(value: Buffer | number): Buffer {
  let b = typeof value === 'number' ? Buffer.from([value & 0xff]) : value;
  let i = 0;
  while (i < b.length - 1 && b[i] === 0 && (b[i + 1]! & 0x80) === 0) i++;
  b = b.subarray(i);
  if ((b[0]! & 0x80) !== 0) b = Buffer.concat([Buffer.from([0]), b]);
  return tlv(0x02, b);
}

export function oid(dotted: string): Buffer {
  const parts = dotted.split('.').map(Number);
  const out: number[] = [40 * parts[0]! + parts[1]!];
  for (const p of parts.slice(2)) {
    const chunk: number[] = [p & 0x7f];
    for (let v = Math.floor(p / 128); v > 0; v = Math.floor(v / 128)) chunk.unshift((v & 0x7f) | 0x80);
    out.push(...chunk);
  }
  return tlv(0x06, Buffer.from(out));
}

/** UTCTime for 1950–2049, GeneralizedTime otherwise (RFC 5280 §4.1.2.5). */
export function time(d: Date): Buffer {
  const iso = d.toISOString();
  const digits = iso.slice(0, 19).replace(/[-:T]/g, '');
  const y = d.getUTCFullYear();
  if (y >= 1950 && y < 2050) return tlv(0x17, Buffer.from(`${digits.slice(2)}Z`, 'ascii'));
  return tlv(0x18, Buffer.from(`${digits}Z`, 'ascii'));
}

/** Name with the given attributes, each in its own RDN: [['2.5.4.10','Acme'], ['2.5.4.3','SN-1']]. */
export function name(attrs: ReadonlyArray<readonly [string, string]>): Buffer {
  return seq(...attrs.map(([type, value]) => set(seq(oid(type), utf8(value)))));
}

export const OID = {
  commonName: '2.5.4.3',
  organization: '2.5.4.10',
  ecdsaWithSha256: '1.2.840.10045.4.3.2',
  sha256WithRsa: '1.2.840.113549.1.1.11',
  basicConstraints: '2.5.29.19',
  keyUsage: '2.5.29.15',
  extKeyUsage: '2.5.29.37',
  subjectKeyIdentifier: '2.5.29.14',
  authorityKeyIdentifier: '2.5.29.35',
  clientAuth: '1.3.6.1.5.5.7.3.2',
  signedData: '1.2.840.113549.1.7.2',
} as const;

// --- reader ------------------------------------------------------------------------------------

export interface DerNode {
  tag: number;
  /** The whole TLV. */
  raw: Buffer;
  content: Buffer;
}

export function read(buf: Buffer, offset = 0): DerNode {
  const tag = buf[offset];
  let len = buf[offset + 1];
  if (tag === undefined || len === undefined) throw new Error('DER: truncated header');
  let p = offset + 2;
  if (len & 0x80) {
    const n = len & 0x7f;
    if (n === 0 || n > 4) throw new Error('DER: unsupported length');
    len = 0;
    for (let i = 0; i < n; i++) {
      const b = buf[p++];
      if (b === undefined) throw new Error('DER: truncated length');
      len = len * 256 + b;
    }
  }
  if (p + len > buf.length) throw new Error('DER: truncated content');
  return { tag, raw: buf.subarray(offset, p + len), content: buf.subarray(p, p + len) };
}

export function children(node: DerNode): DerNode[] {
  const out: DerNode[] = [];
  for (let p = 0; p < node.content.length; ) {
    const c = read(node.content, p);
    out.push(c);
    p += c.raw.length;
  }
  return out;
}

/** The certificates of a PKCS#7 / CMS SignedData (certs-only, as EST answers), DER each. */
export function certificatesFromPkcs7(der: Buffer): Buffer[] {
  const contentInfo = read(der);
  const [type, explicit] = children(contentInfo);
  if (!type || !explicit || type.tag !== 0x06 || !type.raw.equals(oid(OID.signedData))) throw new Error('PKCS#7: not SignedData');
  const signedData = children(explicit)[0];
  if (!signedData) throw new Error('PKCS#7: empty SignedData');
  const certs = children(signedData).find((c) => c.tag === 0xa0);
  return certs ? children(certs).map((c) => Buffer.from(c.raw)) : [];
}

export function toPem(label: string, der: Buffer): string {
  return `-----BEGIN ${label}-----\n${der.toString('base64').replace(/(.{64})/g, '$1\n').replace(/\n$/, '')}\n-----END ${label}-----\n`;
}

export function fromPem(pem: string): Buffer {
  return Buffer.from(pem.replace(/-----(BEGIN|END) [^-]+-----/g, '').replace(/\s+/g, ''), 'base64');
}

export interface CertificateParts {
  tbs: Buffer;
  /** Lower-case hex, no leading zeros. */
  serial: string;
  issuer: Buffer;
  subject: Buffer;
  spki: Buffer;
  signatureAlgorithm: string;
  signature: Buffer;
}

export function decodeOid(content: Buffer): string {
  const parts: number[] = [];
  let v = 0;
  for (const b of content) {
    v = v * 128 + (b & 0x7f);
    if ((b & 0x80) === 0) {
      if (parts.length === 0) parts.push(Math.min(2, Math.floor(v / 40)), v - Math.min(2, Math.floor(v / 40)) * 40);
      else parts.push(v);
      v = 0;
    }
  }
  return parts.join('.');
}

/** The pieces of an X.509 certificate a device checks, without a full parse. */
export function certificateParts(der: Buffer): CertificateParts {
  const [tbsNode, alg, sig] = children(read(der));
  if (!tbsNode || !alg || !sig || sig.tag !== 0x03) throw new Error('not an X.509 certificate');
  const fields = children(tbsNode);
  const f = fields[0]?.tag === 0xa0 ? fields.slice(1) : fields;
  const [serial, , issuer, , subject, spki] = f;
  const algOid = children(alg)[0];
  if (!serial || !issuer || !subject || !spki || !algOid) throw new Error('X.509 TBSCertificate is incomplete');
  return {
    tbs: Buffer.from(tbsNode.raw),
    serial: serial.content.toString('hex').replace(/^0+(?=.)/, ''),
    issuer: Buffer.from(issuer.raw),
    subject: Buffer.from(subject.raw),
    spki: Buffer.from(spki.raw),
    signatureAlgorithm: decodeOid(algOid.content),
    signature: Buffer.from(sig.content.subarray(1)),
  };
}
