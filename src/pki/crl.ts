/** X.509 v2 CRL construction (RFC 5280 §5). */
import { FleetpassError } from '../core/errors.js';
import type { Signer } from '../kms/types.js';
import type { RevokedEntry } from './types.js';
import { TAG, bitString, ctxCons, seq, time, tlv, uint, uintFromBytes } from './der.js';
import { signatureAlgorithmFor } from './algorithms.js';
import { extension, issuerContext } from './issue.js';

const ID_CE_CRL_NUMBER = '2.5.29.20';
const ID_CE_CRL_REASON = '2.5.29.21';
const V2 = Buffer.from([0x02, 0x01, 0x01]);

export interface BuildCrlOptions {
  signer: Signer;
  /** DER of the CA certificate whose key is `signer` (issuer name and AKI come from it). */
  issuerCertificateDer: Buffer;
  revoked: RevokedEntry[];
  thisUpdate: Date;
  nextUpdate: Date;
  /** Monotonically increasing CRL number (RFC 5280 §5.2.3), 0..2^159. */
  crlNumber: bigint;
}

function serialBytes(serialHex: string): Buffer {
  const h = serialHex.trim().toLowerCase().replace(/^0x/, '').replace(/:/g, '');
  if (!/^[0-9a-f]+$/.test(h) || h.length > 40) throw new FleetpassError('VALIDATION_FAILED', `revoked serial is not a hex serial number: ${serialHex}`);
  return Buffer.from(h.length % 2 ? `0${h}` : h, 'hex');
}

const reasonCache = new Map<number, Buffer>();
function reasonExtensions(code: number): Buffer {
  let der = reasonCache.get(code);
  if (!der) {
    if (!Number.isInteger(code) || code < 0 || code > 10 || code === 7) throw new FleetpassError('VALIDATION_FAILED', `invalid CRL reason code ${code}`);
    der = seq(extension(ID_CE_CRL_REASON, false, tlv(TAG.ENUMERATED, Buffer.from([code]))));
    reasonCache.set(code, der);
  }
  return der;
}

/** Builds and signs a DER v2 CRL with AKI and CRL number extensions and per-entry reason codes. */
export async function buildCrl(opts: BuildCrlOptions): Promise<Buffer> {
  const issuer = issuerContext(opts.issuerCertificateDer);
  if (!opts.signer.publicKeySpki.equals(issuer.spki)) throw new FleetpassError('INTERNAL_ERROR', `signer ${opts.signer.keyRef} does not hold the key of the CRL issuer certificate`);
  if (!(opts.nextUpdate.getTime() > opts.thisUpdate.getTime())) throw new FleetpassError('VALIDATION_FAILED', 'nextUpdate must be after thisUpdate');
  if (opts.crlNumber < 0n || opts.crlNumber >= 1n << 159n) throw new FleetpassError('VALIDATION_FAILED', 'crlNumber out of range');

  const sigAlg = signatureAlgorithmFor(opts.signer.algorithm);
  const entries: Buffer[] = [];
  for (const r of opts.revoked) {
    const parts = [uintFromBytes(serialBytes(r.serialHex)), time(r.revokedAt)];
    // RFC 5280 §5.3.1: reasonCode unspecified (0) SHOULD be absent.
    if (r.reasonCode !== undefined && r.reasonCode !== 0) parts.push(reasonExtensions(r.reasonCode));
    entries.push(seq(...parts));
  }
  const tbsParts: Buffer[] = [V2, sigAlg, issuer.nameDer, time(opts.thisUpdate), time(opts.nextUpdate)];
  if (entries.length > 0) tbsParts.push(tlv(TAG.SEQUENCE, Buffer.concat(entries)));
  tbsParts.push(ctxCons(0, seq(issuer.akiExtension, extension(ID_CE_CRL_NUMBER, false, uint(opts.crlNumber)))));
  const tbs = seq(...tbsParts);
  const signature = await opts.signer.sign(tbs);
  return seq(tbs, sigAlg, bitString(signature));
}

