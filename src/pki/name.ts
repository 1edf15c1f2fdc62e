import { FleetpassError } from '../core/errors.js';
import type { SubjectSpec } from './types.js';
import { TAG, children, decodeOid, expectTag, oid, printable, readExact, seq, set, utf8 } from './der.js';
import type { DerNode } from './der.js';

export const OID_CN = '2.5.4.3';
const OID_C = '2.5.4.6';
const OID_O = '2.5.4.10';
const OID_OU = '2.5.4.11';

/** Short names for RFC 4514 formatting (RFC 4514 table plus a few common extras). */
const SHORT_NAMES: Record<string, string> = {
  '2.5.4.3': 'CN',
  '2.5.4.4': 'SN',
  '2.5.4.5': 'serialNumber',
  '2.5.4.6': 'C',
  '2.5.4.7': 'L',
  '2.5.4.8': 'ST',
  '2.5.4.9': 'STREET',
  '2.5.4.10': 'O',
  '2.5.4.11': 'OU',
  '2.5.4.12': 'title',
  '2.5.4.42': 'GN',
  '2.5.4.46': 'dnQualifier',
  '0.9.2342.19200300.100.1.1': 'UID',
  '0.9.2342.19200300.100.1.25': 'DC',
  '1.2.840.113549.1.9.1': 'emailAddress',
};

function decodeString(node: DerNode): string | undefined {
  switch (node.tag) {
    case TAG.UTF8_STRING:
      return node.content.toString('utf8');
    case TAG.PRINTABLE_STRING:
    case TAG.IA5_STRING:
    case TAG.T61_STRING:
    case 0x1a: // VisibleString
      return node.content.toString('latin1');
    case TAG.BMP_STRING: {
      const b = Buffer.from(node.content);
      if (b.length % 2) return undefined;
      b.swap16();
      return b.toString('utf16le');
    }
    case TAG.UNIVERSAL_STRING: {
      if (node.content.length % 4) return undefined;
      let s = '';
      for (let i = 0; i < node.content.length; i += 4) s += String.fromCodePoint(node.content.readUInt32BE(i));
      return s;
    }
    default:
      return undefined;
  }
}

function escapeValue(v: string): string {
  let out = v.replace(/[\\,+"<>;=]/g, (c) => `\\${c}`);
  if ([...out].some((c) => c.charCodeAt(0) < 0x20)) {
    out = [...out].map((c) => (c.charCodeAt(0) < 0x20 ? `\\${c.charCodeAt(0).toString(16).padStart(2, '0')}` : c)).join('');
  }
  if (out.startsWith('#') || out.startsWith(' ')) out = `\\${out}`;
  if (out.endsWith(' ') && out.length > 1) out = `${out.slice(0, -1)}\\ `;
  return out;
}

export interface NameParts {
  /** RFC 4514 string: most specific RDN first, e.g. `CN=dev-1,O=Acme,C=DE`. */
  text: string;
  /** The last (most specific) CN in the name. */
  commonName: string | undefined;
}

/** Formats a DER Name (RDNSequence). Throws on malformed input. */
export function formatName(nameDer: Buffer): NameParts {
  const root = readExact(nameDer, TAG.SEQUENCE);
  const rdns: string[] = [];
  let commonName: string | undefined;
  for (const rdn of children(root)) {
    expectTag(rdn, TAG.SET, 'RDN');
    const parts: string[] = [];
    for (const atv of children(rdn)) {
      expectTag(atv, TAG.SEQUENCE, 'AttributeTypeAndValue');
      const [typeNode, valueNode] = children(atv);
      const type = decodeOid(expectTag(typeNode, TAG.OID, 'attribute type').content);
      if (!valueNode) throw new Error('attribute value missing');
      const value = decodeString(valueNode);
      const key = SHORT_NAMES[type] ?? type;
      parts.push(value === undefined ? `${key}=#${valueNode.raw.toString('hex')}` : `${key}=${escapeValue(value)}`);
      if (type === OID_CN && value !== undefined) commonName = value;
    }
    rdns.push(parts.join('+'));
  }
  return { text: rdns.reverse().join(','), commonName };
}

function checkLength(field: string, v: string, max: number): void {
  if (v.length === 0 || v.length > max) throw new FleetpassError('VALIDATION_FAILED', `subject ${field} must be 1..${max} characters`);
}

/** The RFC 4514 string of the Name buildName(spec) encodes (same as formatName of it, without the parse). */
export function formatSubjectSpec(spec: SubjectSpec): string {
  const parts = [`CN=${escapeValue(spec.commonName)}`];
  if (spec.organizationalUnit !== undefined) parts.push(`OU=${escapeValue(spec.organizationalUnit)}`);
  if (spec.organization !== undefined) parts.push(`O=${escapeValue(spec.organization)}`);
  if (spec.country !== undefined) parts.push(`C=${escapeValue(spec.country.toUpperCase())}`);
  return parts.join(',');
}

/** Builds a subject Name in C, O, OU, CN order (UTF8String; countryName as PrintableString per RFC 5280). */
export function buildName(spec: SubjectSpec): Buffer {
  const rdns: Buffer[] = [];
  const atv = (type: string, value: Buffer): Buffer => set(seq(oid(type), value));
  if (spec.country !== undefined) {
    if (!/^[A-Za-z]{2}$/.test(spec.country)) throw new FleetpassError('VALIDATION_FAILED', 'subject country must be a two-letter ISO 3166 code');
    rdns.push(atv(OID_C, printable(spec.country.toUpperCase())));
  }
  if (spec.organization !== undefined) {
    checkLength('organization', spec.organization, 64);
    rdns.push(atv(OID_O, utf8(spec.organization)));
  }
  if (spec.organizationalUnit !== undefined) {
    checkLength('organizationalUnit', spec.organizationalUnit, 64);
    rdns.push(atv(OID_OU, utf8(spec.organizationalUnit)));
  }
  // RFC 5280 ub-common-name is 64, but registration IDs may be up to 128 characters and no
  // mainstream verifier enforces the bound, so allow 128.
  checkLength('commonName', spec.commonName, 128);
  rdns.push(atv(OID_CN, utf8(spec.commonName)));
  return seq(...rdns);
}
