/**
 * Everything a fleet needs before it boots, done the way an operator and a factory would: the CA
 * bundle devices pin, a manufacturer CA and its enrollment group, a symmetric-key group, one-time
 * tokens, a template — all through the admin API — and each device's keys, CSR and bootstrap
 * credential.
 */
import { request } from 'node:https';
import type { AdminClient } from './admin.js';
import { buildCsr, createCa, csrPem, deriveDeviceKey, issueFactoryCertificate, keyFingerprint, malformedCsrPem, newEcKey, newRsaKey, privateKeyPem, type CertificateAuthority } from './crypto.js';
import { ALLOWED_REGIONS, MIN_FIRMWARE, type DevicePlan, type FleetPlan } from './plan.js';
import { mapLimit } from './pool.js';
import type { DeviceCredential } from './protocols/types.js';

/** GET /ca.pem without verification (trust on first use, like `curl -k $FP/ca.pem` in the README). */
export function fetchCaBundle(url: URL): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = request(new URL(`${url.pathname.replace(/\/+$/, '')}/ca.pem`, url), { method: 'GET', rejectUnauthorized: false, agent: false, timeout: 15_000 }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        if (res.statusCode !== 200 || !text.includes('-----BEGIN CERTIFICATE-----')) reject(new Error(`GET ${url.origin}/ca.pem answered ${res.statusCode}: ${text.slice(0, 200)}`));
        else resolve(text);
      });
    });
    req.on('timeout', () => req.destroy(new Error(`GET ${url.origin}/ca.pem: no answer within 15 s`)));
    req.on('error', reject);
    req.end();
  });
}

export interface ManufacturedDevice {
  plan: DevicePlan;
  csrPem: string;
  /** SHA-256 of the operational key's SubjectPublicKeyInfo (what Fleetpass stores on the device). */
  keyFingerprint: string;
  /** The operational key's SubjectPublicKeyInfo, DER: the issued certificate must carry exactly this. */
  spki: Buffer;
  credential: DeviceCredential;
}

export interface FleetSetup {
  /** Group name every device of this run gets from the template: the cross-check lists by it. */
  deviceGroup: string;
  templateId: string;
  enrollmentIds: string[];
  idScope: string | null;
  devices: ManufacturedDevice[];
  timings: { adminMs: number; manufacturingMs: number; tokensMs: number };
}

interface Created {
  id: string;
  primaryKey?: string;
  idScope?: string;
  token?: string;
}

export async function setUpFleet(admin: AdminClient, plan: FleetPlan, opts: { carriesParameters: boolean; adminConcurrency: number; onProgress?: (what: string, done: number, total: number) => void }): Promise<FleetSetup> {
  const t0 = performance.now();
  const { runId } = plan;
  const deviceGroup = `sim-${runId}`;
  const has = (s: DevicePlan['scenario']) => plan.devices.some((d) => d.scenario === s);

  const template = await admin.call<Created>('POST', '/templates', {
    name: `sim-${runId}`,
    template: {
      deviceName: '${registrationId}',
      groups: [deviceGroup],
      attributes: { simulation: runId },
      configuration: { telemetryIntervalSeconds: 60, simulation: runId },
      ...(opts.carriesParameters ? { validation: { allowedRegions: ALLOWED_REGIONS, minFirmware: { '*': MIN_FIRMWARE } } } : {}),
    },
  });
  const enrollmentIds: string[] = [];

  let manufacturer: CertificateAuthority | undefined;
  let rogue: CertificateAuthority | undefined;
  if (has('x509')) {
    manufacturer = await createCa('Fleetpass Simulator Devices', `Sim Factory CA ${runId}`);
    // Same name as the trusted CA, another key: what a mis-provisioned production line looks like.
    rogue = await createCa('Fleetpass Simulator Devices', `Sim Factory CA ${runId}`);
    const g = await admin.call<Created>('POST', '/enrollment-groups', { name: `sim-${runId}-x509`, attestation: { type: 'x509-ca', caCertificatePem: manufacturer.pem }, templateId: template.id });
    enrollmentIds.push(g.id);
  }
  let groupKey: string | undefined;
  const sasGroupName = `sim-${runId}-sas`;
  let idScope: string | null = null;
  if (has('symmetric-key')) {
    const g = await admin.call<Created>('POST', '/enrollment-groups', { name: sasGroupName, attestation: { type: 'symmetric-key' }, templateId: template.id });
    enrollmentIds.push(g.id);
    groupKey = g.primaryKey;
    idScope = g.idScope ?? (await admin.call<{ idScope: string }>('GET', '/tenants/current')).idScope;
    if (!groupKey) throw new Error('the symmetric-key enrollment group did not answer a primaryKey');
  }
  const adminMs = performance.now() - t0;

  // Manufacturing: keys on the libuv pool, certificates and CSRs in between.
  const t1 = performance.now();
  const now = Date.now();
  const validFrom = new Date(now - 3600_000);
  const validTo = new Date(now + 5 * 365 * 86400_000);
  let made = 0;
  const devices = await mapLimit(plan.devices, 64, async (d): Promise<ManufacturedDevice> => {
    const key = d.fault === 'weak-key' ? await newRsaKey(1024) : await newEcKey();
    const der = buildCsr(key, d.registrationId);
    const csr = d.fault === 'malformed-csr' ? malformedCsrPem(der) : csrPem(der);
    let credential: DeviceCredential = { type: 'none' };
    if (d.fault !== 'missing-credential') {
      if (d.scenario === 'x509') {
        const factoryKey = await newEcKey();
        const expired = d.fault === 'expired-cert';
        const ca = d.fault === 'wrong-ca' ? rogue! : manufacturer!;
        const certPem = issueFactoryCertificate(ca, factoryKey.spki, d.registrationId, expired ? new Date(now - 2 * 365 * 86400_000) : validFrom, expired ? new Date(now - 30 * 86400_000) : validTo);
        credential = { type: 'client-certificate', certPem, keyPem: privateKeyPem(factoryKey) };
      } else if (d.scenario === 'symmetric-key') {
        credential = { type: 'sas', idScope: idScope!, deviceKey: deriveDeviceKey(groupKey!, d.registrationId), group: sasGroupName };
      } else {
        credential = { type: 'token', token: '' }; // issued below
      }
    }
    opts.onProgress?.('manufacturing', ++made, plan.devices.length);
    return { plan: d, csrPem: csr, keyFingerprint: keyFingerprint(key.spki), spki: key.spki, credential };
  });
  const manufacturingMs = performance.now() - t1;

  // One-time tokens: an individual enrollment per token device; a replayed token is a copy of its victim's.
  const t2 = performance.now();
  const tokenDevices = devices.filter((d) => d.credential.type === 'token' && d.plan.cloneOf === null);
  let issued = 0;
  await mapLimit(tokenDevices, opts.adminConcurrency, async (d) => {
    const e = await admin.call<Created>('POST', '/enrollments', { registrationId: d.plan.registrationId, attestation: { type: 'token' }, templateId: template.id });
    if (!e.token) throw new Error(`the token enrollment of ${d.plan.registrationId} did not answer a token`);
    d.credential = { type: 'token', token: e.token };
    enrollmentIds.push(e.id);
    opts.onProgress?.('enrolling tokens', ++issued, tokenDevices.length);
  });
  for (const d of devices) {
    if (d.credential.type === 'token' && d.plan.cloneOf !== null) d.credential = { ...devices[d.plan.cloneOf]!.credential };
  }
  const tokensMs = performance.now() - t2;

  return { deviceGroup, templateId: template.id, enrollmentIds, idScope, devices, timings: { adminMs, manufacturingMs, tokensMs } };
}
