import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createPublicKey, verify as cryptoVerify } from 'node:crypto';
import { mkdtempSync, readdirSync, rmSync, statSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SoftKeyManager } from '../../src/kms/index.js';
import type { KeyAlgorithm } from '../../src/kms/index.js';

function tempDir(t: { after(fn: () => void): void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'fleetpass-kms-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

const quiet = { warn: (): void => undefined };
const HASH: Record<KeyAlgorithm, string | null> = {
  'ecdsa-p256': 'sha256',
  'ecdsa-p384': 'sha384',
  'rsa-2048': 'sha256',
  'rsa-3072': 'sha256',
  'rsa-4096': 'sha256',
  ed25519: null,
};

test('soft keys: every algorithm signs verifiably and survives reopen', async (t) => {
  const dataDir = tempDir(t);
  const km = await SoftKeyManager.open({ dataDir, passphrase: 'correct horse battery staple', logger: quiet });
  const algorithms: KeyAlgorithm[] = ['ecdsa-p256', 'ecdsa-p384', 'rsa-2048', 'ed25519'];
  const refs = new Map<KeyAlgorithm, { keyRef: string; spki: Buffer }>();
  const data = Buffer.from('to be signed');
  for (const alg of algorithms) {
    const signer = await km.createKey(alg, `Test ${alg} key`);
    assert.match(signer.keyRef, /^soft:[a-z0-9-]+_[0-9a-z]+$/);
    assert.equal(signer.algorithm, alg);
    const sig = await signer.sign(data);
    const pub = createPublicKey({ key: signer.publicKeySpki, format: 'der', type: 'spki' });
    assert.ok(cryptoVerify(HASH[alg], data, pub, sig), `${alg} signature verifies`);
    if (alg.startsWith('ecdsa')) assert.equal(sig[0], 0x30, 'ECDSA signatures are DER');
    refs.set(alg, { keyRef: signer.keyRef, spki: signer.publicKeySpki });
    assert.equal(await km.getSigner(signer.keyRef), signer, 'cached signer is returned');
  }
  await km.close();

  const reopened = await SoftKeyManager.open({ dataDir, passphrase: 'correct horse battery staple', logger: quiet });
  for (const [alg, { keyRef, spki }] of refs) {
    const signer = await reopened.getSigner(keyRef);
    assert.equal(signer.algorithm, alg);
    assert.deepEqual(signer.publicKeySpki, spki);
    const sig = await signer.sign(data);
    assert.ok(cryptoVerify(HASH[alg], data, createPublicKey({ key: spki, format: 'der', type: 'spki' }), sig));
  }
  await reopened.close();
});

test('soft keys: files are 0600 in a 0700 folder, encrypted PKCS#8', async (t) => {
  const dataDir = tempDir(t);
  const km = await SoftKeyManager.open({ dataDir, passphrase: 'pw', logger: quiet });
  const signer = await km.createKey('ecdsa-p256', 'root');
  const keysDir = join(dataDir, 'keys');
  assert.equal(statSync(keysDir).mode & 0o777, 0o700);
  const file = join(keysDir, `${signer.keyRef.slice('soft:'.length)}.pem`);
  assert.equal(statSync(file).mode & 0o777, 0o600);
  const { readFileSync } = await import('node:fs');
  assert.match(readFileSync(file, 'utf8'), /^-----BEGIN ENCRYPTED PRIVATE KEY-----/);
  assert.ok(!existsSync(join(keysDir, 'master.key')), 'no master key when a passphrase is given');
});

test('soft keys: wrong passphrase fails clearly; unknown and malformed refs fail', async (t) => {
  const dataDir = tempDir(t);
  const km = await SoftKeyManager.open({ dataDir, passphrase: 'right', logger: quiet });
  const signer = await km.createKey('ecdsa-p256', 'x');
  const wrong = await SoftKeyManager.open({ dataDir, passphrase: 'wrong', logger: quiet });
  await assert.rejects(wrong.getSigner(signer.keyRef), (err: Error) => {
    assert.equal(err.message, `cannot decrypt key ${signer.keyRef}: wrong FLEETPASS_KEY_PASSPHRASE?`);
    return true;
  });
  await assert.rejects(km.getSigner('soft:missing_key'), /not found/);
  await assert.rejects(km.getSigner('soft:../../etc/passwd'), /invalid soft key id/);
  await assert.rejects(km.getSigner('pkcs11:token=x'), /not a soft key reference/);
});

test('soft keys: without a passphrase a master key file is created and loudly warned about', async (t) => {
  const dataDir = tempDir(t);
  const warnings: string[] = [];
  const km = await SoftKeyManager.open({ dataDir, logger: { warn: (m) => warnings.push(m) } });
  const master = join(dataDir, 'keys', 'master.key');
  assert.equal(statSync(master).size, 32);
  assert.equal(statSync(master).mode & 0o777, 0o600);
  assert.equal(warnings.length, 1);
  assert.match(warnings[0] as string, /FLEETPASS_KEY_PASSPHRASE/);
  assert.match(warnings[0] as string, /master\.key/);
  assert.match(warnings[0] as string, /only as safe as that file/);
  const signer = await km.createKey('ed25519', 'k');
  const sealed = km.seal(Buffer.from('group key'));

  const again = await SoftKeyManager.open({ dataDir, logger: quiet });
  assert.deepEqual((await again.getSigner(signer.keyRef)).publicKeySpki, signer.publicKeySpki);
  assert.equal(again.open(sealed).toString(), 'group key');
  assert.deepEqual(
    readdirSync(join(dataDir, 'keys')).filter((f) => f.endsWith('.tmp')),
    [],
    'no temporary files left behind',
  );
});

test('secret box: round trip, compact format, tamper and wrong secret fail', async (t) => {
  const dataDir = tempDir(t);
  const km = await SoftKeyManager.open({ dataDir, passphrase: 'pw', logger: quiet });
  for (const plain of [Buffer.alloc(0), Buffer.from('s3cr3t enrollment key'), Buffer.alloc(4096, 7)]) {
    const sealed = km.seal(plain);
    assert.match(sealed, /^v1\.[A-Za-z0-9_-]{16}\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]{22}$/);
    assert.deepEqual(km.open(sealed), plain);
  }
  const a = km.seal(Buffer.from('same'));
  assert.notEqual(a, km.seal(Buffer.from('same')), 'random IV per seal');

  const [v, iv, ct, tag] = a.split('.') as [string, string, string, string];
  const flip = (s: string): string => {
    const b = Buffer.from(s, 'base64url');
    b[0] = (b[0] as number) ^ 1;
    return b.toString('base64url');
  };
  assert.throws(() => km.open([v, iv, flip(ct), tag].join('.')), /authentication failed/);
  assert.throws(() => km.open([v, flip(iv), ct, tag].join('.')), /authentication failed/);
  assert.throws(() => km.open([v, iv, ct, flip(tag)].join('.')), /authentication failed/);
  assert.throws(() => km.open(['v2', iv, ct, tag].join('.')), /unknown format/);
  assert.throws(() => km.open('garbage'), /unknown format/);

  const same = await SoftKeyManager.open({ dataDir: tempDir(t), passphrase: 'pw', logger: quiet });
  assert.equal(same.open(a).toString(), 'same', 'the passphrase alone derives the box key (shared across nodes)');
  const other = await SoftKeyManager.open({ dataDir, passphrase: 'other', logger: quiet });
  assert.throws(() => other.open(a), /authentication failed/);
});
