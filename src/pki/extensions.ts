/**
 * Decoders for the few X.509 extensions Fleetpass reads (RFC 5280 section 4.2), over the strict DER
 * reader. Every onboarding reads a device certificate's or CSR's extensions; the schema parser
 * (asn1-schema) cost ~0.4 ms per certificate for these four small structures.
 * Input is the extnValue OCTET STRING's content. Malformed input throws.
 */
import { TAG, children, decodeOid, expectTag, readExact, type DerNode } from './der.js';

export const EXT = {
  subjectAltName: '2.5.29.17',
  basicConstraints: '2.5.29.19',
  subjectKeyIdentifier: '2.5.29.14',
  authorityKeyIdentifier: '2.5.29.35',
} as const;

/**
 * The entries of an Extensions SEQUENCE (certificate tbsCertificate [3], CSR extensionRequest):
 * Extension ::= SEQUENCE { extnID OID, critical BOOLEAN DEFAULT FALSE, extnValue OCTET STRING }.
 */
export function readExtensions(extensions: DerNode): Array<{ id: string; value: Buffer }> {
  return children(expectTag(extensions, TAG.SEQUENCE, 'extensions')).map((ext) => {
    const parts = children(expectTag(ext, TAG.SEQUENCE, 'extension'));
    if (parts.length < 2 || parts.length > 3) throw new Error('extension has the wrong number of fields');
    return {
      id: decodeOid(expectTag(parts[0], TAG.OID, 'extension id').content),
      value: expectTag(parts[parts.length - 1], TAG.OCTET_STRING, 'extension value').content,
    };
  });
}

/** GeneralName tags (context-specific, implicit). */
const GN_DNS = 0x82;
const GN_URI = 0x86;

function ia5(content: Buffer, what: string): string {
  for (const b of content) if (b > 0x7f) throw new Error(`${what} is not IA5 (ASCII)`);
  return content.toString('latin1');
}

/** dNSName and uniformResourceIdentifier entries of a GeneralNames; other name forms are skipped. */
export function decodeSubjectAltName(value: Buffer): { dnsNames: string[]; uris: string[] } {
  const names = children(readExact(value, TAG.SEQUENCE));
  if (names.length === 0) throw new Error('subjectAltName is empty');
  const out = { dnsNames: [] as string[], uris: [] as string[] };
  for (const gn of names) {
    if (gn.tag === GN_DNS) out.dnsNames.push(ia5(gn.content, 'dNSName'));
    else if (gn.tag === GN_URI) out.uris.push(ia5(gn.content, 'uniformResourceIdentifier'));
    else if ((gn.tag & 0xc0) !== 0x80) throw new Error(`subjectAltName entry has tag 0x${gn.tag.toString(16)}, not a GeneralName`);
  }
  return out;
}

/** BasicConstraints ::= SEQUENCE { cA BOOLEAN DEFAULT FALSE, pathLenConstraint INTEGER (0..MAX) OPTIONAL } */
export function decodeBasicConstraints(value: Buffer): { cA: boolean; pathLength: number | undefined } {
  const fields = children(readExact(value, TAG.SEQUENCE));
  let i = 0;
  let cA = false;
  if (fields[i]?.tag === TAG.BOOLEAN) {
    const b = fields[i++]!.content;
    if (b.length !== 1 || (b[0] !== 0 && b[0] !== 0xff)) throw new Error('basicConstraints cA is not a DER BOOLEAN');
    cA = b[0] === 0xff;
  }
  let pathLength: number | undefined;
  if (fields[i] !== undefined) {
    const n = expectTag(fields[i++], TAG.INTEGER, 'pathLenConstraint').content;
    if (n.length === 0 || n.length > 4 || (n[0]! & 0x80) !== 0) throw new Error('pathLenConstraint out of range');
    pathLength = n.readUIntBE(0, n.length);
  }
  if (fields.length > i) throw new Error('basicConstraints has extra fields');
  return { cA, pathLength };
}

/** SubjectKeyIdentifier ::= OCTET STRING, as lower-case hex. */
export function decodeSubjectKeyIdentifier(value: Buffer): string {
  return readExact(value, TAG.OCTET_STRING).content.toString('hex');
}

/** AuthorityKeyIdentifier ::= SEQUENCE { keyIdentifier [0] IMPLICIT OCTET STRING OPTIONAL, ... } — the key identifier as hex. */
export function decodeAuthorityKeyIdentifier(value: Buffer): string | undefined {
  const fields = children(readExact(value, TAG.SEQUENCE));
  const kid = fields.find((f) => f.tag === 0x80);
  return kid ? kid.content.toString('hex') : undefined;
}
