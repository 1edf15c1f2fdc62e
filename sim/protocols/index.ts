import { EstProtocol } from './est.js';
import { HttpsProtocol } from './https.js';
import type { ResolvedTarget } from './transport.js';
import type { DeviceProtocol } from './types.js';

export type ProtocolName = 'https' | 'est';
export const PROTOCOLS: readonly ProtocolName[] = ['https', 'est'];

/** The registry of device doors: add a protocol here and it is available as --protocol <name>. */
export function createProtocol(name: ProtocolName, target: ResolvedTarget): DeviceProtocol {
  switch (name) {
    case 'https':
      return new HttpsProtocol(target);
    case 'est':
      return new EstProtocol(target);
  }
}
