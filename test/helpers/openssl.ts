import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** Thin helpers around the real `openssl` binary: the device side of the end-to-end tests. */
export function openssl(args: string[], opts: { cwd?: string; input?: string } = {}): string {
  return execFileSync('openssl', args, { cwd: opts.cwd, input: opts.input, encoding: 'utf8', stdio: ['pipe', 'pipe', 'pipe'] });
}

export function tempDir(prefix = 'fp-test-'): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

/** A self-signed CA (e.g. a manufacturer CA): writes <name>.key/.pem in dir, returns the PEM. */
export function makeCa(dir: string, name: string, subject = `/O=Acme Devices/CN=${name}`): string {
  openssl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', `${name}.key`, '-out', `${name}.pem`, '-days', '3650', '-subj', subject,
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign'], { cwd: dir });
  return readFileSync(join(dir, `${name}.pem`), 'utf8');
}

/** A key + certificate with CN=cn signed by CA `ca` (a factory / claim certificate). */
export function makeLeaf(dir: string, ca: string, name: string, cn: string, days = 365): { certPem: string; keyPem: string; certFile: string; keyFile: string } {
  openssl(['req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${cn}`], { cwd: dir });
  writeFileSync(join(dir, `${name}.ext`), 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n');
  openssl(['x509', '-req', '-in', `${name}.csr`, '-CA', `${ca}.pem`, '-CAkey', `${ca}.key`, '-CAcreateserial', '-out', `${name}.pem`, '-days', String(days), '-extfile', `${name}.ext`], { cwd: dir });
  return { certPem: readFileSync(join(dir, `${name}.pem`), 'utf8'), keyPem: readFileSync(join(dir, `${name}.key`), 'utf8'), certFile: join(dir, `${name}.pem`), keyFile: join(dir, `${name}.key`) };
}

export type CsrKey = 'p256' | 'p384' | 'rsa2048' | 'rsa1024' | 'ed25519' | 'secp256k1';

/** A fresh key and PKCS#10 CSR made by openssl. */
export function makeCsr(dir: string, name: string, key: CsrKey = 'p256', cn = 'device'): { csrPem: string; keyPem: string; keyFile: string; csrFile: string } {
  const keyArgs: Record<CsrKey, string[]> = {
    p256: ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256'],
    p384: ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-384'],
    secp256k1: ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:secp256k1'],
    rsa2048: ['-newkey', 'rsa:2048'],
    rsa1024: ['-newkey', 'rsa:1024'],
    ed25519: ['-newkey', 'ed25519'],
  };
  openssl(['req', '-new', ...keyArgs[key], '-nodes', '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${cn}`], { cwd: dir });
  return { csrPem: readFileSync(join(dir, `${name}.csr`), 'utf8'), keyPem: readFileSync(join(dir, `${name}.key`), 'utf8'), keyFile: join(dir, `${name}.key`), csrFile: join(dir, `${name}.csr`) };
}

/** `openssl verify` of a leaf against a CA bundle (root + intermediates); returns [ok, output]. */
export function opensslVerify(dir: string, caBundlePem: string, leafPem: string): [boolean, string] {
  const ca = join(dir, `verify-ca-${Math.random().toString(36).slice(2)}.pem`);
  const leaf = join(dir, `verify-leaf-${Math.random().toString(36).slice(2)}.pem`);
  writeFileSync(ca, caBundlePem);
  writeFileSync(leaf, leafPem);
  try {
    return [true, openssl(['verify', '-CAfile', ca, '-purpose', 'sslclient', leaf])];
  } catch (e) {
    return [false, String((e as { stdout?: string }).stdout ?? '') + String((e as { stderr?: string }).stderr ?? '')];
  }
}
