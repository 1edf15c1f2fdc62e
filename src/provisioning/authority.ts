import { generateKeyPairSync } from 'node:crypto';
import type { Clock } from '../core/clock.js';
import { newId } from '../core/ids.js';
import type { KeyAlgorithm, KeyManager, Signer } from '../kms/types.js';
import { buildCrl, createRootAndIssuingCa, issueCertificate, parseCertificate, pemToDer } from '../pki/index.js';
import type { IssuedCertificate, RevokedEntry } from '../pki/types.js';
import type { Store } from '../registry/store.js';
import { StoreConflictError } from '../registry/store.js';
import type { CaRecord } from '../registry/types.js';

const SETTING_KEY = 'ca.active';

export interface DeviceCertificateSpec {
  publicKeySpki: Buffer;
  commonName: string;
  organization?: string;
  organizationalUnit?: string;
  dnsNames: string[];
  uris: string[];
  validityDays: number;
}

/**
 * The platform's own CA: the root (kept offline in spirit: only used to sign the issuing CA) and the
 * issuing CA that signs device and server certificates. Keys stay behind the key manager.
 */
export class CertificateAuthority {
  readonly chainPem: string;
  readonly issuingDer: Buffer;

  constructor(
    readonly root: CaRecord,
    readonly issuing: CaRecord,
    private readonly signer: Signer,
    private readonly publicUrl: string,
    private readonly clock: Clock,
  ) {
    this.issuingDer = pemToDer(issuing.certificatePem);
    this.chainPem = `${issuing.certificatePem.trim()}\n${root.certificatePem.trim()}\n`;
  }

  crlUrl(): string {
    return `${this.publicUrl}/crl/${this.issuing.id}.crl`;
  }

  async issueDeviceCertificate(spec: DeviceCertificateSpec): Promise<IssuedCertificate> {
    // Backdate a little: device clocks drift, and a certificate "not yet valid" for a minute strands a device.
    const notBefore = new Date(this.clock.now().getTime() - 5 * 60_000);
    const caNotAfter = new Date(this.issuing.notAfter);
    let notAfter = new Date(notBefore.getTime() + spec.validityDays * 86_400_000);
    if (notAfter > caNotAfter) notAfter = caNotAfter; // never outlive the issuer
    return issueCertificate({
      signer: this.signer,
      issuerCertificateDer: this.issuingDer,
      subject: {
        commonName: spec.commonName,
        ...(spec.organization ? { organization: spec.organization } : {}),
        ...(spec.organizationalUnit ? { organizationalUnit: spec.organizationalUnit } : {}),
      },
      dnsNames: spec.dnsNames,
      uris: spec.uris,
      publicKeySpki: spec.publicKeySpki,
      notBefore,
      notAfter,
      usage: 'client',
      crlDistributionPointUrl: this.crlUrl(),
    });
  }

  async signCrl(revoked: RevokedEntry[], thisUpdate: Date, nextUpdate: Date, crlNumber: bigint): Promise<Buffer> {
    return buildCrl({ signer: this.signer, issuerCertificateDer: this.issuingDer, revoked, thisUpdate, nextUpdate, crlNumber });
  }

  /** A fresh TLS key and certificate for this process's HTTPS port, issued by the issuing CA. */
  async issueServerTls(names: string[]): Promise<{ keyPem: string; certPem: string }> {
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const spki = publicKey.export({ type: 'spki', format: 'der' });
    const dns = [...new Set(['localhost', ...names.filter((n) => !isIp(n))])];
    const ips = [...new Set(['127.0.0.1', '::1', ...names.filter(isIp)])];
    const now = this.clock.now();
    const issued = await issueCertificate({
      signer: this.signer,
      issuerCertificateDer: this.issuingDer,
      subject: { commonName: dns[0] ?? 'localhost', organization: 'Fleetpass server' },
      dnsNames: dns,
      ipAddresses: ips,
      publicKeySpki: spki,
      notBefore: new Date(now.getTime() - 5 * 60_000),
      notAfter: new Date(Math.min(now.getTime() + 90 * 86_400_000, new Date(this.issuing.notAfter).getTime())),
      usage: 'server',
    });
    // Leaf and issuing CA, not the root: a client must hold the root as its trust anchor anyway
    // (RFC 8446 section 4.4.2), and each certificate sent is one more for every device to decode
    // (~0.25 ms with OpenSSL 3.0) on every connection.
    return { keyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(), certPem: `${issued.pem.trim()}\n${this.issuing.certificatePem.trim()}\n` };
  }
}

function isIp(s: string): boolean {
  return /^\d{1,3}(\.\d{1,3}){3}$/.test(s) || s.includes(':');
}

function caRecord(kind: 'root' | 'issuing', name: string, pem: string, keyRef: string, parentId: string | null, createdAt: string): CaRecord {
  const info = parseCertificate(pem);
  return {
    id: newId('ca'),
    tenantId: null,
    kind,
    name,
    certificatePem: pem,
    subject: info.subject,
    fingerprint: info.fingerprint,
    keyRef,
    parentId,
    notBefore: info.notBefore.toISOString(),
    notAfter: info.notAfter.toISOString(),
    createdAt,
  };
}

/**
 * Loads the active root and issuing CA, creating them on first start. Several processes may start
 * at once on one database: the first to record its CA wins, the others load the winner's.
 */
export async function openAuthority(opts: {
  store: Store;
  keys: KeyManager;
  algorithm: KeyAlgorithm;
  organization: string;
  publicUrl: string;
  clock: Clock;
  log?: { info(msg: string): void };
}): Promise<CertificateAuthority> {
  const { store, keys } = opts;
  const load = async (): Promise<CertificateAuthority | undefined> => {
    const raw = await store.getSetting(SETTING_KEY);
    if (!raw) return undefined;
    const ids = JSON.parse(raw) as { rootId: string; issuingId: string };
    const root = await store.getCa(null, ids.rootId);
    const issuing = await store.getCa(null, ids.issuingId);
    if (!root || !issuing || !issuing.keyRef) throw new Error(`setting ${SETTING_KEY} names CAs that are missing from the store`);
    const signer = await keys.getSigner(issuing.keyRef);
    return new CertificateAuthority(root, issuing, signer, opts.publicUrl, opts.clock);
  };
  const existing = await load();
  if (existing) return existing;

  const created = await createRootAndIssuingCa(keys, { algorithm: opts.algorithm, organization: opts.organization, now: opts.clock.now() });
  const at = opts.clock.now().toISOString();
  const root = caRecord('root', `${opts.organization} Root CA`, created.root.pem, created.root.signer.keyRef, null, at);
  const issuing = caRecord('issuing', `${opts.organization} Issuing CA`, created.issuing.pem, created.issuing.signer.keyRef, root.id, at);
  try {
    await store.transaction(async (tx) => {
      await tx.createCa(root);
      await tx.createCa(issuing);
      if (!(await tx.putSettingIfAbsent(SETTING_KEY, JSON.stringify({ rootId: root.id, issuingId: issuing.id })))) {
        throw new StoreConflictError('another process created the CA first');
      }
    });
    opts.log?.info(`created root CA ${root.subject} and issuing CA ${issuing.subject} (${opts.algorithm})`);
  } catch (e) {
    if (!(e instanceof StoreConflictError)) throw e;
  }
  const loaded = await load();
  if (!loaded) throw new Error('CA bootstrap failed: no CA recorded');
  return loaded;
}

