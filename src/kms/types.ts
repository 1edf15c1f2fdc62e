/**
 * Key manager interfaces. The CA core only ever sees a Signer; where the key lives (encrypted file,
 * HSM) is the key manager's business. One small interface per capability.
 */
export type KeyAlgorithm = 'ecdsa-p256' | 'ecdsa-p384' | 'rsa-2048' | 'rsa-3072' | 'rsa-4096' | 'ed25519';

export interface Signer {
  /** Stable reference to the key, e.g. `soft:<id>` or an RFC 7512 `pkcs11:` URI. */
  readonly keyRef: string;
  readonly algorithm: KeyAlgorithm;
  /** DER SubjectPublicKeyInfo of the key. */
  readonly publicKeySpki: Buffer;
  /**
   * Signs `data` with the algorithm's default hash (SHA-256 for P-256/RSA, SHA-384 for P-384,
   * none for Ed25519). ECDSA signatures are DER-encoded (as X.509 wants them).
   */
  sign(data: Buffer): Promise<Buffer>;
}

export interface KeyManager {
  /** Generates a new key pair, persists it, and returns its signer. */
  createKey(algorithm: KeyAlgorithm, label: string): Promise<Signer>;
  /** Loads the signer for a key created earlier; throws if it is missing or cannot be decrypted. */
  getSigner(keyRef: string): Promise<Signer>;
  close(): Promise<void>;
}

/** Encrypts small secrets (symmetric enrollment keys) at rest. AES-256-GCM in the soft backend. */
export interface SecretBox {
  seal(plaintext: Buffer): string;
  open(sealed: string): Buffer;
}

/**
 * Where the soft key manager replicates its encrypted key files, so that several Fleetpass processes
 * sharing one database (scale-out) can load the CA keys without sharing a disk. Blobs are the
 * passphrase-encrypted PKCS#8 PEM: the database never sees a usable key.
 */
export interface KeyBlobStore {
  getKeyBlob(id: string): Promise<string | undefined>;
  putKeyBlob(id: string, encryptedPem: string): Promise<void>;
}
