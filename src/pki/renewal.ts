/**
 * Renewal names (RFC 7030 section 4.2.2): a re-enrollment CSR must carry exactly the subject and
 * subjectAltName of the certificate it renews, and the renewed certificate carries them again.
 */
import { AsnConvert } from '@peculiar/asn1-schema';
import { CertificationRequest } from '@peculiar/asn1-csr';
import { Certificate, Extensions, Name, SubjectAlternativeName, id_ce_subjectAltName } from '@peculiar/asn1-x509';
import type { GeneralName } from '@peculiar/asn1-x509';
import { FleetpassError } from '../core/errors.js';
import { parseCertificateDetails } from './certinfo.js';
import type { ParsedCsr, SubjectSpec } from './types.js';

const ID_EXTENSION_REQUEST = '1.2.840.113549.1.9.14';

/** One comparable string per GeneralName: `DNS:…` (lower-cased), `URI:…`, `email:…`, `IP:…`, else `other:<DER hex>`. */
function generalNameStrings(names: Iterable<GeneralName>): string[] {
  const out: string[] = [];
  for (const gn of names) {
    if (gn.dNSName !== undefined) out.push(`DNS:${gn.dNSName.toLowerCase()}`);
    else if (gn.uniformResourceIdentifier !== undefined) out.push(`URI:${gn.uniformResourceIdentifier}`);
    else if (gn.rfc822Name !== undefined) out.push(`email:${gn.rfc822Name}`);
    else if (gn.iPAddress !== undefined) out.push(`IP:${gn.iPAddress}`);
    else out.push(`other:${Buffer.from(AsnConvert.serialize(gn)).toString('hex')}`);
  }
  return [...new Set(out)].sort();
}

function sanOf(extensions: Extensions | undefined): string[] {
  for (const ext of extensions ?? []) {
    if (ext.extnID === id_ce_subjectAltName) return generalNameStrings(AsnConvert.parse(ext.extnValue, SubjectAlternativeName));
  }
  return [];
}

/** The subjectAltName entries a CSR requests (in its extensionRequest attribute), normalised and sorted. */
export function csrSubjectAltNames(csrDer: Buffer): string[] {
  const csr = AsnConvert.parse(csrDer, CertificationRequest);
  const out: string[] = [];
  for (const attr of csr.certificationRequestInfo.attributes ?? []) {
    if (attr.type !== ID_EXTENSION_REQUEST) continue;
    for (const value of attr.values) out.push(...sanOf(AsnConvert.parse(value, Extensions)));
  }
  return [...new Set(out)].sort();
}

/** The subjectAltName entries of a certificate (PEM or DER), normalised and sorted. */
export function certificateSubjectAltNames(certificate: string | Buffer): string[] {
  const der = parseCertificateDetails(certificate).der;
  return sanOf(AsnConvert.parse(der, Certificate).tbsCertificate.extensions);
}

/**
 * Why `csr` may not renew `certificate` (PEM or DER), or undefined when its subject and
 * subjectAltName are identical to the certificate's. CSR_INVALID when the CSR's extensions are malformed.
 */
export function renewalNameMismatch(csr: ParsedCsr, certificate: string | Buffer): string | undefined {
  const cert = parseCertificateDetails(certificate);
  if (csr.subject !== cert.subject) return `the CSR subject "${csr.subject}" differs from the certificate's "${cert.subject}"`;
  let requested: string[];
  try {
    requested = csrSubjectAltNames(csr.der);
  } catch (err) {
    throw new FleetpassError('CSR_INVALID', `the CSR's extensionRequest is malformed: ${(err as Error).message}`, { cause: err });
  }
  const current = certificateSubjectAltNames(cert.der);
  if (requested.join('\n') !== current.join('\n')) {
    return `the CSR subjectAltName [${requested.join(', ')}] differs from the certificate's [${current.join(', ')}]`;
  }
  return undefined;
}

const SUBJECT_FIELDS: Record<string, 'commonName' | 'organization' | 'organizationalUnit'> = { '2.5.4.3': 'commonName', '2.5.4.10': 'organization', '2.5.4.11': 'organizationalUnit' };

/**
 * The subject and SANs a renewal of `certificate` carries again: the subject as a SubjectSpec (the
 * CN, O and OU that Fleetpass device certificates are made of) and the DNS and URI names. Throws
 * INTERNAL_ERROR for a subject or SAN outside that shape (not a certificate Fleetpass issued).
 */
export function renewalNamesOf(certificate: string | Buffer): { subject: SubjectSpec; dnsNames: string[]; uris: string[] } {
  const cert = parseCertificateDetails(certificate);
  const spec: Partial<Record<'commonName' | 'organization' | 'organizationalUnit', string>> = {};
  for (const rdn of AsnConvert.parse(cert.subjectDer, Name)) {
    for (const atv of rdn) {
      const field = SUBJECT_FIELDS[atv.type];
      if (!field || spec[field] !== undefined) throw new FleetpassError('INTERNAL_ERROR', `cannot renew a certificate whose subject has attribute ${atv.type}: ${cert.subject}`);
      spec[field] = atv.value.toString();
    }
  }
  if (spec.commonName === undefined) throw new FleetpassError('INTERNAL_ERROR', `cannot renew a certificate without a CN: ${cert.subject}`);
  const sans = certificateSubjectAltNames(cert.der);
  const other = sans.filter((s) => !s.startsWith('DNS:') && !s.startsWith('URI:'));
  if (other.length > 0) throw new FleetpassError('INTERNAL_ERROR', `cannot renew a certificate with SAN ${other.join(', ')}`);
  return {
    subject: spec as SubjectSpec,
    dnsNames: cert.dnsNames,
    uris: cert.uris,
  };
}
