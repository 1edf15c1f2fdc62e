import { createHash, createPublicKey, verify as cryptoVerify, constants as cryptoConstants } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import type { KeyAlgorithm } from '../kms/types.js';
import type { PublicKeyInfo } from './types.js';
import { NULL_DER, TAG, children, decodeOid, expectTag, integerMagnitude, oid, readExact, seq } from './der.js';
import type { DerNode } from './der.js';

export const OIDS = {
  ecPublicKey: '1.2.840.10045.2.1',
  rsaEncryption: '1.2.840.113549.1.1.1',
  rsassaPss: '1.2.840.113549.1.1.10',
  mgf1: '1.2.840.113549.1.1.8',
  ed25519: '1.3.101.112',
  ed448: '1.3.101.113',
  dsa: '1.2.840.10040.4.1',
  p256: '1.2.840.10045.3.1.7',
  p384: '1.3.132.0.34',
  p521: '1.3.132.0.35',
  secp256k1: '1.3.132.0.10',
  ecdsaSha1: '1.2.840.10045.4.1',
  ecdsaSha256: '1.2.840.10045.4.3.2',
  ecdsaSha384: '1.2.840.10045.4.3.3',
  ecdsaSha512: '1.2.840.10045.4.3.4',
  sha1Rsa: '1.2.840.113549.1.1.5',
  sha256Rsa: '1.2.840.113549.1.1.11',
  sha384Rsa: '1.2.840.113549.1.1.12',
  sha512Rsa: '1.2.840.113549.1.1.13',
  sha1: '1.3.14.3.2.26',
  sha256: '2.16.840.1.101.3.4.2.1',
  sha384: '2.16.840.1.101.3.4.2.2',
  sha512: '2.16.840.1.101.3.4.2.3',
} as const;

const CURVE_NAMES: Record<string, string> = {
  [OIDS.p256]: 'P-256',
  [OIDS.p384]: 'P-384',
  [OIDS.p521]: 'P-521',
  [OIDS.secp256k1]: 'secp256k1',
};

const CURVE_BITS: Record<string, number> = { 'P-256': 256, 'P-384': 384, 'P-521': 521, secp256k1: 256 };

const SIG_ALG_CACHE = new Map<KeyAlgorithm, Buffer>();

/** The AlgorithmIdentifier DER matching what a Signer of `algorithm` produces. */
export function signatureAlgorithmFor(algorithm: KeyAlgorithm): Buffer {
  let der = SIG_ALG_CACHE.get(algorithm);
  if (der) return der;
  switch (algorithm) {
    case 'ecdsa-p256':
      der = seq(oid(OIDS.ecdsaSha256));
      break;
    case 'ecdsa-p384':
      der = seq(oid(OIDS.ecdsaSha384));
      break;
    case 'rsa-2048':
    case 'rsa-3072':
    case 'rsa-4096':
      der = seq(oid(OIDS.sha256Rsa), NULL_DER);
      break;
    case 'ed25519':
      der = seq(oid(OIDS.ed25519));
      break;
    default:
      throw new Error(`unsupported key algorithm ${String(algorithm)}`);
  }
  SIG_ALG_CACHE.set(algorithm, der);
  return der;
}

export interface SpkiParts {
  algorithmOid: string;
  /** Raw DER of the algorithm parameters, if any. */
  parameters: DerNode | undefined;
  /** The subjectPublicKey BIT STRING content without the unused-bits octet. */
  publicKeyBits: Buffer;
}

/** Structural parse of a DER SubjectPublicKeyInfo. Throws on malformed input. */
export function parseSpki(spki: Buffer): SpkiParts {
  const root = readExact(spki, TAG.SEQUENCE);
  const [algId, bits, extra] = children(root);
  if (extra) throw new Error('SubjectPublicKeyInfo has extra fields');
  const algParts = children(expectTag(algId, TAG.SEQUENCE, 'SPKI algorithm'));
  const algorithmOid = decodeOid(expectTag(algParts[0], TAG.OID, 'SPKI algorithm OID').content);
  const bitNode = expectTag(bits, TAG.BIT_STRING, 'subjectPublicKey');
  if (bitNode.content.length < 2 || bitNode.content[0] !== 0) throw new Error('subjectPublicKey BIT STRING malformed');
  return { algorithmOid, parameters: algParts[1], publicKeyBits: bitNode.content.subarray(1) };
}

/** RFC 5280 method 1 key identifier: SHA-1 of the subjectPublicKey bits. */
export function keyIdentifier(spki: Buffer): Buffer {
  return createHash('sha1').update(parseSpki(spki).publicKeyBits).digest();
}

/**
 * Classifies a public key. Never throws for well-formed SPKI; unknown algorithms come back as
 * `{ type: 'other' }` so policy can decide.
 */
export function describePublicKey(spki: Buffer, key?: KeyObject): PublicKeyInfo {
  const parts = parseSpki(spki);
  switch (parts.algorithmOid) {
    case OIDS.ecPublicKey: {
      const p = parts.parameters;
      if (!p || p.tag !== TAG.OID) return { type: 'ec', curve: 'explicit-parameters', bits: 0 };
      const curveOid = decodeOid(p.content);
      const curve = CURVE_NAMES[curveOid] ?? curveOid;
      return { type: 'ec', curve, bits: CURVE_BITS[curve] ?? 0 };
    }
    case OIDS.rsaEncryption:
      return { type: 'rsa', bits: key?.asymmetricKeyDetails?.modulusLength ?? rsaModulusBits(parts.publicKeyBits) };
    case OIDS.rsassaPss: {
      const k = key ?? createPublicKey({ key: spki, format: 'der', type: 'spki' });
      const bits = k.asymmetricKeyDetails?.modulusLength ?? 0;
      if (parts.algorithmOid === OIDS.rsassaPss) return { type: 'other', oid: parts.algorithmOid, bits };
      return { type: 'rsa', bits };
    }
    case OIDS.ed25519:
      return { type: 'ed25519', bits: 256 };
    default:
      return { type: 'other', oid: parts.algorithmOid, bits: parts.publicKeyBits.length * 8 };
  }
}

/** Bit length of an RSAPublicKey's modulus (RFC 8017 A.1.1), read from its DER. */
function rsaModulusBits(rsaPublicKey: Buffer): number {
  const [n] = children(readExact(rsaPublicKey, TAG.SEQUENCE));
  const c = integerMagnitude(expectTag(n, TAG.INTEGER, 'RSA modulus'));
  if (c.length === 0 || c[0] === 0) return 0;
  return (c.length - 1) * 8 + (32 - Math.clz32(c[0]!));
}

const HASH_BY_OID: Record<string, string> = {
  [OIDS.sha1]: 'sha1',
  [OIDS.sha256]: 'sha256',
  [OIDS.sha384]: 'sha384',
  [OIDS.sha512]: 'sha512',
};

export class UnsupportedSignatureAlgorithm extends Error {}

/**
 * Verifies `signature` over `data` as described by the AlgorithmIdentifier `algId`.
 * Supports ECDSA (SHA-256/384/512), RSA PKCS#1 v1.5 (SHA-256/384/512), RSASSA-PSS and Ed25519.
 * Throws UnsupportedSignatureAlgorithm for anything else (SHA-1 included); returns false on a bad
 * signature or a key/algorithm mismatch.
 */
export function verifySignature(algId: DerNode, data: Buffer, signature: Buffer, key: KeyObject): boolean {
  const parts = children(expectTag(algId, TAG.SEQUENCE, 'signature algorithm'));
  const algOid = decodeOid(expectTag(parts[0], TAG.OID, 'signature algorithm OID').content);
  let hash: string | null;
  let options: { padding?: number; saltLength?: number } = {};
  let expectKey: string;
  switch (algOid) {
    case OIDS.ecdsaSha256:
      hash = 'sha256';
      expectKey = 'ec';
      break;
    case OIDS.ecdsaSha384:
      hash = 'sha384';
      expectKey = 'ec';
      break;
    case OIDS.ecdsaSha512:
      hash = 'sha512';
      expectKey = 'ec';
      break;
    case OIDS.sha256Rsa:
      hash = 'sha256';
      expectKey = 'rsa';
      break;
    case OIDS.sha384Rsa:
      hash = 'sha384';
      expectKey = 'rsa';
      break;
    case OIDS.sha512Rsa:
      hash = 'sha512';
      expectKey = 'rsa';
      break;
    case OIDS.ed25519:
      hash = null;
      expectKey = 'ed25519';
      break;
    case OIDS.rsassaPss: {
      const pss = parsePssParams(parts[1]);
      hash = pss.hash;
      options = { padding: cryptoConstants.RSA_PKCS1_PSS_PADDING, saltLength: pss.saltLength };
      expectKey = 'rsa';
      break;
    }
    default:
      throw new UnsupportedSignatureAlgorithm(`signature algorithm ${algOid} is not accepted (use ECDSA with SHA-256/384, RSA with SHA-256 or Ed25519)`);
  }
  const keyType = key.asymmetricKeyType;
  if (!(keyType === expectKey || (expectKey === 'rsa' && keyType === 'rsa-pss'))) return false;
  try {
    return cryptoVerify(hash, data, { key, ...options }, signature);
  } catch {
    return false;
  }
}

/** RSASSA-PSS-params; only MGF1 with the same hash as the message digest is accepted. */
function parsePssParams(node: DerNode | undefined): { hash: string; saltLength: number } {
  let hash = 'sha1';
  let mgfHash = 'sha1';
  let saltLength = 20;
  if (node && node.tag === TAG.SEQUENCE) {
    for (const field of children(node)) {
      const inner = children(field)[0];
      if (!inner) continue;
      if (field.tag === 0xa0) {
        const h = HASH_BY_OID[decodeOid(expectTag(children(inner)[0], TAG.OID, 'PSS hash').content)];
        if (!h) throw new UnsupportedSignatureAlgorithm('RSASSA-PSS hash not supported');
        hash = h;
      } else if (field.tag === 0xa1) {
        const [mgfOid, mgfParams] = children(inner);
        if (decodeOid(expectTag(mgfOid, TAG.OID, 'MGF').content) !== OIDS.mgf1) throw new UnsupportedSignatureAlgorithm('RSASSA-PSS MGF not supported');
        const h = HASH_BY_OID[decodeOid(expectTag(children(expectTag(mgfParams, TAG.SEQUENCE, 'MGF1 params'))[0], TAG.OID, 'MGF1 hash').content)];
        if (!h) throw new UnsupportedSignatureAlgorithm('RSASSA-PSS MGF1 hash not supported');
        mgfHash = h;
      } else if (field.tag === 0xa2) {
        const n = expectTag(inner, TAG.INTEGER, 'PSS salt length').content;
        if (n.length > 2) throw new UnsupportedSignatureAlgorithm('RSASSA-PSS salt length too large');
        saltLength = n.readUIntBE(0, n.length);
      }
    }
  }
  if (hash === 'sha1' || hash !== mgfHash) throw new UnsupportedSignatureAlgorithm(`RSASSA-PSS with ${hash}/MGF1-${mgfHash} is not accepted`);
  return { hash, saltLength };
}

const JWK_CURVES: Record<string, number> = { 'P-256': 32, 'P-384': 48, 'P-521': 66 };

/**
 * A KeyObject for a DER SubjectPublicKeyInfo. OpenSSL 3.0's DER decoders cost ~0.25 ms per key here;
 * the same key handed over as a JWK (EC: the point's coordinates, checked to lie on the curve; RSA:
 * modulus and exponent) imports in a half (EC) to a twentieth (RSA) of that. Anything else, and any
 * encoding the JWK route does not cover (compressed points), goes through the DER decoder.
 */
export function importPublicKey(spki: Buffer, info: PublicKeyInfo): KeyObject {
  const der = (): KeyObject => createPublicKey({ key: spki, format: 'der', type: 'spki' });
  const parts = parseSpki(spki);
  const bits = parts.publicKeyBits;
  if (info.type === 'ec') {
    const size = JWK_CURVES[info.curve];
    if (size === undefined || bits.length !== 1 + 2 * size || bits[0] !== 0x04) return der();
    return createPublicKey({
      format: 'jwk',
      key: { kty: 'EC', crv: info.curve, x: bits.subarray(1, 1 + size).toString('base64url'), y: bits.subarray(1 + size).toString('base64url') },
    });
  }
  if (info.type === 'rsa' && parts.algorithmOid === OIDS.rsaEncryption) {
    const [n, e, extra] = children(readExact(bits, TAG.SEQUENCE));
    if (extra) throw new Error('RSAPublicKey has extra fields');
    const unsigned = (node: DerNode | undefined, what: string): string => {
      const int = expectTag(node, TAG.INTEGER, what);
      if (int.content.length === 0 || (int.content[0]! & 0x80) !== 0) throw new Error(`RSA ${what} is not a positive INTEGER`);
      return integerMagnitude(int).toString('base64url');
    };
    return createPublicKey({ format: 'jwk', key: { kty: 'RSA', n: unsigned(n, 'modulus'), e: unsigned(e, 'publicExponent') } });
  }
  if (info.type === 'ed25519' && bits.length === 32) {
    return createPublicKey({ format: 'jwk', key: { kty: 'OKP', crv: 'Ed25519', x: bits.toString('base64url') } });
  }
  return der();
}
