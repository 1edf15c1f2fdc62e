/** Device key pairs made by the server (EST /serverkeygen): the same algorithm as the key the request names. */
import { generateKeyPair } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import type { PublicKeyInfo } from './types.js';

type Made = { spki: Buffer; pkcs8: Buffer };

function generate(type: 'rsa' | 'ec' | 'ed25519', options: { modulusLength?: number; namedCurve?: string }): Promise<Made> {
  return new Promise((resolve, reject) => {
    const done = (err: Error | null, publicKey: KeyObject, privateKey: KeyObject) => {
      if (err) return reject(err);
      resolve({ spki: publicKey.export({ type: 'spki', format: 'der' }), pkcs8: privateKey.export({ type: 'pkcs8', format: 'der' }) });
    };
    if (type === 'rsa') generateKeyPair('rsa', { modulusLength: options.modulusLength ?? 2048, publicExponent: 0x10001 }, done);
    else if (type === 'ec') generateKeyPair('ec', { namedCurve: options.namedCurve ?? 'P-256' }, done);
    else generateKeyPair('ed25519', {}, done);
  });
}

export interface GeneratedKeyPair {
  /** DER SubjectPublicKeyInfo. */
  spki: Buffer;
  /** DER PKCS#8 PrivateKeyInfo, unencrypted: hand it to the device and forget it. */
  pkcs8: Buffer;
  /** What was made, e.g. `EC P-256`. */
  description: string;
}

/**
 * A fresh key pair of the kind `like` describes: the same EC curve (P-256, P-384, P-521), Ed25519, or
 * RSA of the same size (never below `minRsaBits`); anything else gets P-256. Runs off the event loop.
 */
export async function generateKeyPairLike(like: PublicKeyInfo | undefined, minRsaBits = 2048): Promise<GeneratedKeyPair> {
  if (like?.type === 'rsa') {
    const modulusLength = Math.max(like.bits, minRsaBits, 2048);
    return { ...(await generate('rsa', { modulusLength })), description: `RSA ${modulusLength}` };
  }
  if (like?.type === 'ed25519') {
    return { ...(await generate('ed25519', {})), description: 'Ed25519' };
  }
  const curve = like?.type === 'ec' && (like.curve === 'P-384' || like.curve === 'P-521') ? like.curve : 'P-256';
  return { ...(await generate('ec', { namedCurve: curve })), description: `EC ${curve}` };
}
