export type { KeyAlgorithm, KeyManager, SecretBox, Signer } from './types.js';
export { SoftKeyManager } from './soft/soft-key-manager.js';
export type { SoftKeyManagerOptions } from './soft/soft-key-manager.js';
