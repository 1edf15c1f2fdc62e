/**
 * CMS (RFC 5652) structures EST (RFC 7030) carries: the certs-only SignedData — "degenerate PKCS#7",
 * no content and no signers — used for /cacerts, /simpleenroll and /serverkeygen answers, and the
 * CsrAttrs answer of /csrattrs (RFC 7030 section 4.5.2).
 */
import { FleetpassError } from '../core/errors.js';
import { OIDS } from './algorithms.js';
import { TAG, ctxCons, oid, seq, set, uint } from './der.js';

const OID_SIGNED_DATA = '1.2.840.113549.1.7.2';
const OID_DATA = '1.2.840.113549.1.7.1';

/**
 * ContentInfo { signedData, SignedData { version 1, digestAlgorithms {}, encapContentInfo { id-data },
 * certificates [0] { … }, signerInfos {} } } holding `certificatesDer` (DER X.509 certificates).
 * The certificates SET OF is sorted as DER requires; readers (openssl pkcs7 -print_certs, EST
 * clients) do not depend on the order.
 */
export function certsOnlyPkcs7(certificatesDer: readonly Buffer[]): Buffer {
  if (certificatesDer.length === 0) throw new FleetpassError('INTERNAL_ERROR', 'a certs-only PKCS#7 needs at least one certificate');
  for (const c of certificatesDer) {
    if (c.length < 2 || c[0] !== TAG.SEQUENCE) throw new FleetpassError('INTERNAL_ERROR', 'certsOnlyPkcs7 takes DER certificates');
  }
  const certificates = [...certificatesDer].sort(Buffer.compare);
  const signedData = seq(uint(1), set(), seq(oid(OID_DATA)), ctxCons(0, ...certificates), set());
  return seq(oid(OID_SIGNED_DATA), ctxCons(0, signedData));
}

/** The key a CSR should carry, as a /csrattrs answer states it. */
export type CsrKeyRequest = { type: 'ec'; curve: 'P-256' | 'P-384' } | { type: 'rsa'; bits: number } | { type: 'ed25519' };

/**
 * CsrAttrs ::= SEQUENCE OF AttrOrOID. States the signature algorithm to sign the CSR with (an OID)
 * and the key type as an attribute (id-ecPublicKey with the curve, rsaEncryption with the modulus
 * size, or id-Ed25519), as in the examples of RFC 7030 section 4.5.2 and RFC 8295 section 3.
 */
export function csrAttributes(key: CsrKeyRequest, extraOids: readonly string[] = []): Buffer {
  const items: Buffer[] = [];
  switch (key.type) {
    case 'ec':
      items.push(oid(key.curve === 'P-384' ? OIDS.ecdsaSha384 : OIDS.ecdsaSha256));
      items.push(seq(oid(OIDS.ecPublicKey), set(oid(key.curve === 'P-384' ? OIDS.p384 : OIDS.p256))));
      break;
    case 'rsa':
      items.push(oid(OIDS.sha256Rsa));
      items.push(seq(oid(OIDS.rsaEncryption), set(uint(key.bits))));
      break;
    case 'ed25519':
      items.push(oid(OIDS.ed25519));
      break;
  }
  for (const o of extraOids) items.push(oid(o));
  return seq(...items);
}
