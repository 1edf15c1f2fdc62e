/**
 * PKCS#10 parsing and checks: well-formedness, proof of possession (the CSR signature verifies with
 * the key it carries) and key policy.
 */
import type { KeyObject } from 'node:crypto';
import { FleetpassError, fail } from '../core/errors.js';
import { sha256Hex } from '../core/ids.js';
import type { CsrLimits, ParsedCsr, PublicKeyInfo } from './types.js';
import { TAG, children, decodeOid, expectTag, readExact } from './der.js';
import { EXT, decodeSubjectAltName, readExtensions } from './extensions.js';
import { OIDS, UnsupportedSignatureAlgorithm, describePublicKey, importPublicKey, verifySignature } from './algorithms.js';
import { formatName } from './name.js';
import { pemToDer } from './pem.js';

const CSR_LABELS = ['CERTIFICATE REQUEST', 'NEW CERTIFICATE REQUEST'] as const;
const ID_EXTENSION_REQUEST = '1.2.840.113549.1.9.14';

export const DEFAULT_CSR_LIMITS: CsrLimits = { maxBytes: 16 * 1024, minRsaBits: 2048 };

function toDer(input: string | Buffer): Buffer {
  if (Buffer.isBuffer(input)) {
    // Raw DER starts with a SEQUENCE tag; anything else is treated as text (PEM or base64).
    if (input.length > 0 && input[0] === TAG.SEQUENCE) return input;
    return toDer(input.toString('utf8'));
  }
  try {
    return pemToDer(input, CSR_LABELS);
  } catch (err) {
    const msg = err instanceof Error ? err.message : String(err);
    throw new FleetpassError('CSR_INVALID', `CSR is not PEM or base64 DER: ${msg}`, { cause: err });
  }
}

/** Applies the key policy; returns normally when the key is acceptable. */
export function checkKeyPolicy(key: PublicKeyInfo, limits: Pick<CsrLimits, 'minRsaBits'>): void {
  switch (key.type) {
    case 'ec':
      if (key.curve === 'P-256' || key.curve === 'P-384' || key.curve === 'P-521') return;
      return fail('KEY_UNSUPPORTED', `EC curve ${key.curve} is not supported; use P-256 or P-384`);
    case 'rsa': {
      const min = limits.minRsaBits || 2048;
      if (key.bits < min) fail('KEY_TOO_WEAK', `RSA key of ${key.bits} bits is below the minimum of ${min}`);
      return;
    }
    case 'ed25519':
      return;
    default: {
      const names: Record<string, string> = { [OIDS.dsa]: 'DSA', [OIDS.ed448]: 'Ed448', [OIDS.rsassaPss]: 'RSASSA-PSS-only RSA' };
      fail('KEY_UNSUPPORTED', `${names[key.oid] ?? `key algorithm ${key.oid}`} is not supported; use P-256, P-384, Ed25519 or RSA >= 2048`);
    }
  }
}

/**
 * Parses and checks a PKCS#10 CSR given as PEM ("CERTIFICATE REQUEST" or "NEW CERTIFICATE
 * REQUEST"), base64 DER (with or without line breaks) or raw DER.
 *
 * Errors: CSR_INVALID (size, encoding, structure), KEY_UNSUPPORTED / KEY_TOO_WEAK (key policy),
 * CSR_SIGNATURE_INVALID (no proof of possession).
 */
export function parseCsr(input: string | Buffer, limits: CsrLimits = DEFAULT_CSR_LIMITS): ParsedCsr {
  const inputSize = Buffer.isBuffer(input) ? input.length : Buffer.byteLength(input, 'utf8');
  if (inputSize > limits.maxBytes) fail('CSR_INVALID', `CSR is ${inputSize} bytes, more than the limit of ${limits.maxBytes} bytes`);
  if (inputSize === 0) fail('CSR_INVALID', 'CSR is empty');
  const der = toDer(input);

  // Structure: read with the strict DER reader (exact lengths, exact tags), which also gives the exact
  // bytes of the signed part and subject (never re-encoded). A schema parser (asn1-schema) cost ~1 ms
  // per CSR here, the largest single cost of an onboarding; it now only sees the small SAN extension.
  let attributes: ReturnType<typeof readExact> | undefined;
  let criDer: Buffer;
  let sigAlg: ReturnType<typeof readExact>;
  let signature: Buffer;
  let subjectDer: Buffer;
  let spki: Buffer;
  try {
    const root = readExact(der, TAG.SEQUENCE);
    const [cri, alg, sig, extra] = children(root);
    if (extra) throw new Error('extra fields after the signature');
    criDer = Buffer.from(expectTag(cri, TAG.SEQUENCE, 'certificationRequestInfo').raw);
    sigAlg = expectTag(alg, TAG.SEQUENCE, 'signatureAlgorithm');
    const sigBits = expectTag(sig, TAG.BIT_STRING, 'signature');
    if (sigBits.content.length < 2 || sigBits.content[0] !== 0) throw new Error('signature BIT STRING malformed');
    signature = Buffer.from(sigBits.content.subarray(1));
    const criFields = children(expectTag(cri, TAG.SEQUENCE, 'certificationRequestInfo'));
    const version = expectTag(criFields[0], TAG.INTEGER, 'version');
    if (version.content.length !== 1 || version.content[0] !== 0) throw new Error('version must be v1 (0)');
    subjectDer = Buffer.from(expectTag(criFields[1], TAG.SEQUENCE, 'subject').raw);
    spki = Buffer.from(expectTag(criFields[2], TAG.SEQUENCE, 'subjectPKInfo').raw);
    if (criFields.length > 4) throw new Error('extra fields in certificationRequestInfo');
    if (criFields[3] !== undefined) attributes = expectTag(criFields[3], 0xa0, 'attributes');
  } catch (err) {
    const msg = err instanceof Error ? err.message : String(err);
    throw new FleetpassError('CSR_INVALID', `CSR is not a well-formed PKCS#10 request: ${msg}`, { cause: err });
  }

  let subject: ReturnType<typeof formatName>;
  let dnsNames: string[];
  let publicKey: PublicKeyInfo;
  try {
    subject = formatName(subjectDer);
    dnsNames = attributes ? extractDnsNames(attributes) : [];
    publicKey = describePublicKey(spki);
  } catch (err) {
    if (err instanceof FleetpassError) throw err;
    const msg = err instanceof Error ? err.message : String(err);
    throw new FleetpassError('CSR_INVALID', `CSR is not a well-formed PKCS#10 request: ${msg}`, { cause: err });
  }

  checkKeyPolicy(publicKey, limits);

  let key: KeyObject;
  try {
    key = importPublicKey(spki, publicKey);
  } catch (err) {
    throw new FleetpassError('CSR_INVALID', 'CSR public key cannot be decoded', { cause: err });
  }
  let ok: boolean;
  try {
    ok = verifySignature(sigAlg, criDer, signature, key);
  } catch (err) {
    if (err instanceof UnsupportedSignatureAlgorithm) throw new FleetpassError('CSR_SIGNATURE_INVALID', `CSR ${err.message}`, { cause: err });
    throw new FleetpassError('CSR_INVALID', `CSR signature algorithm is malformed: ${(err as Error).message}`, { cause: err });
  }
  if (!ok) fail('CSR_SIGNATURE_INVALID', 'CSR signature does not verify with the public key it carries (no proof of possession)');

  return {
    der: Buffer.from(der),
    subject: subject.text,
    commonName: subject.commonName,
    dnsNames,
    publicKeySpki: spki,
    publicKey,
    publicKeyFingerprint: sha256Hex(spki),
  };
}

/** DNS names of a subjectAltName in the extensionRequest attribute (informational: names come from templates). */
function extractDnsNames(attributes: ReturnType<typeof readExact>): string[] {
  const out: string[] = [];
  for (const attr of children(attributes)) {
    const [type, values] = children(expectTag(attr, TAG.SEQUENCE, 'attribute'));
    if (decodeOid(expectTag(type, TAG.OID, 'attribute type').content) !== ID_EXTENSION_REQUEST) continue;
    for (const value of children(expectTag(values, TAG.SET, 'attribute values'))) {
      for (const ext of readExtensions(value)) {
        if (ext.id === EXT.subjectAltName) out.push(...decodeSubjectAltName(ext.value).dnsNames);
      }
    }
  }
  return out;
}
