/**
 * Software key manager: keys are encrypted PKCS#8 PEM files under `<dataDir>/keys/`, one per key,
 * readable only by the owner. The encryption secret is FLEETPASS_KEY_PASSPHRASE (passed in by the
 * caller) or, when absent, a random master key file next to the keys — which protects nothing
 * against someone who can read the folder, hence the loud warning.
 */
import { createCipheriv, createDecipheriv, createPrivateKey, createPublicKey, generateKeyPair, randomBytes, scrypt, sign as cryptoSign } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import { newId } from '../../core/ids.js';
import type { KeyAlgorithm, KeyBlobStore, KeyManager, SecretBox, Signer } from '../types.js';

export interface SoftKeyManagerOptions {
  dataDir: string;
  /** FLEETPASS_KEY_PASSPHRASE; when absent a generated master key file is used (and warned about). */
  passphrase?: string;
  logger?: { warn(msg: string): void };
  /** Shared copy of the encrypted key files (the database), for processes that share no disk. */
  blobs?: KeyBlobStore;
}

const KEY_REF_PREFIX = 'soft:';
const KEY_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
const MASTER_KEY_FILE = 'master.key';
const SECRETBOX_SALT = Buffer.from('fleetpass/secretbox/v1', 'utf8');

class SoftSigner implements Signer {
  readonly publicKeySpki: Buffer;
  private readonly hash: string | null;

  constructor(
    readonly keyRef: string,
    readonly algorithm: KeyAlgorithm,
    private readonly key: KeyObject,
  ) {
    this.publicKeySpki = createPublicKey(key).export({ format: 'der', type: 'spki' });
    this.hash = algorithm === 'ed25519' ? null : algorithm === 'ecdsa-p384' ? 'sha384' : 'sha256';
  }

  sign(data: Buffer): Promise<Buffer> {
    try {
      // Synchronous on purpose: an ECDSA signature takes tens of microseconds, less than a trip
      // through the thread pool. RSA uses PKCS#1 v1.5 (node's default), ECDSA DER (node's default).
      return Promise.resolve(cryptoSign(this.hash, data, this.key));
    } catch (err) {
      return Promise.reject(err instanceof Error ? err : new Error(String(err)));
    }
  }
}

function algorithmOf(key: KeyObject): KeyAlgorithm {
  const d = key.asymmetricKeyDetails;
  switch (key.asymmetricKeyType) {
    case 'ec':
      if (d?.namedCurve === 'prime256v1' || d?.namedCurve === 'P-256') return 'ecdsa-p256';
      if (d?.namedCurve === 'secp384r1' || d?.namedCurve === 'P-384') return 'ecdsa-p384';
      break;
    case 'rsa':
      if (d?.modulusLength === 2048) return 'rsa-2048';
      if (d?.modulusLength === 3072) return 'rsa-3072';
      if (d?.modulusLength === 4096) return 'rsa-4096';
      break;
    case 'ed25519':
      return 'ed25519';
    default:
      break;
  }
  throw new Error(`unsupported key type ${key.asymmetricKeyType ?? '?'} ${JSON.stringify(d ?? {})}`);
}

function generate(algorithm: KeyAlgorithm): Promise<KeyObject> {
  return new Promise((resolve, reject) => {
    const done = (err: Error | null, _pub: KeyObject, priv: KeyObject): void => (err ? reject(err) : resolve(priv));
    switch (algorithm) {
      case 'ecdsa-p256':
        generateKeyPair('ec', { namedCurve: 'P-256' }, done);
        break;
      case 'ecdsa-p384':
        generateKeyPair('ec', { namedCurve: 'P-384' }, done);
        break;
      case 'rsa-2048':
        generateKeyPair('rsa', { modulusLength: 2048 }, done);
        break;
      case 'rsa-3072':
        generateKeyPair('rsa', { modulusLength: 3072 }, done);
        break;
      case 'rsa-4096':
        generateKeyPair('rsa', { modulusLength: 4096 }, done);
        break;
      case 'ed25519':
        generateKeyPair('ed25519', {}, done);
        break;
      default:
        reject(new Error(`unsupported key algorithm ${String(algorithm)}`));
    }
  });
}

function slug(label: string): string {
  const s = label
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, '-')
    .replace(/^-+|-+$/g, '')
    .slice(0, 40)
    .replace(/-+$/, '');
  return s || 'key';
}

function isErrno(err: unknown, code: string): boolean {
  return typeof err === 'object' && err !== null && (err as { code?: unknown }).code === code;
}

export class SoftKeyManager implements KeyManager, SecretBox {
  private readonly signers = new Map<string, Promise<Signer>>();

  private constructor(
    private readonly keysDir: string,
    private readonly secret: Buffer,
    private readonly boxKey: Buffer,
    private readonly blobs: KeyBlobStore | undefined,
  ) {}

  static async open(opts: SoftKeyManagerOptions): Promise<SoftKeyManager> {
    const keysDir = join(opts.dataDir, 'keys');
    await fs.mkdir(keysDir, { recursive: true, mode: 0o700 });
    await fs.chmod(keysDir, 0o700);
    let secret: Buffer;
    if (opts.passphrase !== undefined && opts.passphrase !== '') {
      secret = Buffer.from(opts.passphrase, 'utf8');
    } else {
      const masterPath = join(keysDir, MASTER_KEY_FILE);
      secret = await loadOrCreateMasterKey(masterPath);
      const warn = opts.logger?.warn.bind(opts.logger) ?? ((m: string): void => void process.stderr.write(`${m}\n`));
      warn(
        `!!! WARNING: FLEETPASS_KEY_PASSPHRASE is not set. CA private keys and enrollment secrets are encrypted ` +
          `with the generated master key ${masterPath}; they are only as safe as that file: anyone who can read ` +
          `${keysDir} can use your CA keys. Set FLEETPASS_KEY_PASSPHRASE (from a secret store) or use an HSM in production. !!!`,
      );
    }
    const boxKey = await new Promise<Buffer>((resolve, reject) =>
      scrypt(secret, SECRETBOX_SALT, 32, { N: 1 << 15, r: 8, p: 1, maxmem: 64 * 1024 * 1024 }, (err, key) => (err ? reject(err) : resolve(key))),
    );
    return new SoftKeyManager(keysDir, secret, boxKey, opts.blobs);
  }

  async createKey(algorithm: KeyAlgorithm, label: string): Promise<Signer> {
    const key = await generate(algorithm);
    const id = newId(slug(label));
    const keyRef = `${KEY_REF_PREFIX}${id}`;
    const pem = key.export({ type: 'pkcs8', format: 'pem', cipher: 'aes-256-cbc', passphrase: this.secret }) as string;
    // 'wx': never overwrite an existing key.
    await fs.writeFile(this.pathOf(id), pem, { mode: 0o600, flag: 'wx' });
    await this.blobs?.putKeyBlob(id, pem);
    const signer = new SoftSigner(keyRef, algorithm, key);
    this.signers.set(keyRef, Promise.resolve(signer));
    return signer;
  }

  getSigner(keyRef: string): Promise<Signer> {
    let p = this.signers.get(keyRef);
    if (!p) {
      p = this.load(keyRef);
      this.signers.set(keyRef, p);
      p.catch(() => this.signers.delete(keyRef));
    }
    return p;
  }

  private async load(keyRef: string): Promise<Signer> {
    if (!keyRef.startsWith(KEY_REF_PREFIX)) throw new Error(`not a soft key reference: ${keyRef}`);
    const id = keyRef.slice(KEY_REF_PREFIX.length);
    if (!KEY_ID.test(id)) throw new Error(`invalid soft key id in ${keyRef}`);
    let pem: string;
    try {
      pem = await fs.readFile(this.pathOf(id), 'utf8');
    } catch (err) {
      if (!isErrno(err, 'ENOENT')) throw err;
      // Another process created the key: take the encrypted copy from the shared store.
      const replicated = await this.blobs?.getKeyBlob(id);
      if (replicated === undefined) throw new Error(`key ${keyRef} not found in ${this.keysDir}${this.blobs ? ' nor in the database' : ''}`, { cause: err });
      pem = replicated;
    }
    let key: KeyObject;
    try {
      key = createPrivateKey({ key: pem, format: 'pem', passphrase: this.secret });
    } catch (err) {
      throw new Error(`cannot decrypt key ${keyRef}: wrong FLEETPASS_KEY_PASSPHRASE?`, { cause: err });
    }
    return new SoftSigner(keyRef, algorithmOf(key), key);
  }

  private pathOf(id: string): string {
    return join(this.keysDir, `${id}.pem`);
  }

  seal(plaintext: Buffer): string {
    const iv = randomBytes(12);
    const cipher = createCipheriv('aes-256-gcm', this.boxKey, iv);
    const ct = Buffer.concat([cipher.update(plaintext), cipher.final()]);
    const tag = cipher.getAuthTag();
    return `v1.${iv.toString('base64url')}.${ct.toString('base64url')}.${tag.toString('base64url')}`;
  }

  open(sealed: string): Buffer {
    const parts = sealed.split('.');
    if (parts.length !== 4 || parts[0] !== 'v1') throw new Error('sealed secret: unknown format');
    const b64 = /^[A-Za-z0-9_-]*$/;
    if (!parts.every((p, i) => i === 0 || b64.test(p))) throw new Error('sealed secret: bad encoding');
    const iv = Buffer.from(parts[1] as string, 'base64url');
    const ct = Buffer.from(parts[2] as string, 'base64url');
    const tag = Buffer.from(parts[3] as string, 'base64url');
    if (iv.length !== 12 || tag.length !== 16) throw new Error('sealed secret: bad encoding');
    try {
      const decipher = createDecipheriv('aes-256-gcm', this.boxKey, iv, { authTagLength: 16 });
      decipher.setAuthTag(tag);
      return Buffer.concat([decipher.update(ct), decipher.final()]);
    } catch (err) {
      throw new Error('sealed secret: authentication failed (tampered, or sealed under another FLEETPASS_KEY_PASSPHRASE)', { cause: err });
    }
  }

  close(): Promise<void> {
    this.signers.clear();
    return Promise.resolve();
  }
}

async function loadOrCreateMasterKey(path: string): Promise<Buffer> {
  // Write a temporary file and hard-link it into place: the link either fails (another process won
  // the race, its file is complete) or publishes a complete file atomically.
  const tmp = `${path}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`;
  await fs.writeFile(tmp, randomBytes(32), { mode: 0o600, flag: 'wx' });
  try {
    await fs.link(tmp, path);
  } catch (err) {
    if (!isErrno(err, 'EEXIST')) throw err;
  } finally {
    await fs.unlink(tmp).catch(() => undefined);
  }
  const key = await fs.readFile(path);
  if (key.length !== 32) throw new Error(`master key file ${path} is corrupt (expected 32 bytes, found ${key.length})`);
  return key;
}
