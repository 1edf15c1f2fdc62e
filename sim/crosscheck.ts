/**
 * The server-side cross-check, through the admin API only: every device that onboarded is registered
 * exactly once, with its own key and exactly one certificate — the one it was given — and nothing
 * is registered for a device that was rejected.
 */
import type { AdminClient, RemoteCertificate, RemoteDevice } from './admin.js';
import type { DevicePlan } from './plan.js';
import { normalizeSerial, type DeviceRecord } from './runner.js';

export type CrossCheckProblemKind =
  | 'missing'
  | 'duplicated'
  | 'wrong-key'
  | 'wrong-device-id'
  | 'certificate-count'
  | 'certificate-mismatch'
  | 'registered-after-rejection'
  | 'unexpected-device';

export interface CrossCheckProblem {
  kind: CrossCheckProblemKind;
  registrationId: string;
  detail: string;
}

export interface CrossCheckResult {
  ran: true;
  devicesListed: number;
  certificatesListed: number;
  /** Onboarded devices found registered exactly once, with their key and their one certificate. */
  verified: number;
  /** Rejected (and skipped) devices for which nothing of theirs is registered. */
  rejectedClean: number;
  /** Lost devices the server did register (their answer never arrived): information, not a failure. */
  lostButRegistered: number;
  problemCounts: Partial<Record<CrossCheckProblemKind, number>>;
  problems: CrossCheckProblem[];
  elapsedMs: number;
}

type DeviceFacts = Pick<RemoteDevice, 'id' | 'registrationId' | 'publicKeyFingerprint'>;
type CertificateFacts = Pick<RemoteCertificate, 'serial' | 'status' | 'publicKeyFingerprint'> & { deviceId: string };

export async function crossCheck(admin: AdminClient, deviceGroup: string, plans: DevicePlan[], records: DeviceRecord[]): Promise<CrossCheckResult> {
  const t0 = performance.now();
  const devices = await admin.all<RemoteDevice, DeviceFacts>(`/devices?group=${encodeURIComponent(deviceGroup)}`, (d) => ({ id: d.id, registrationId: d.registrationId, publicKeyFingerprint: d.publicKeyFingerprint }));
  const ours = new Set(devices.map((d) => d.id));
  // One pass over the tenant's certificates (every status: a superseded second issuance is a failure too).
  const certificates = (
    await admin.all<RemoteCertificate, CertificateFacts | null>('/certificates', (c) =>
      c.deviceId !== null && ours.has(c.deviceId) ? { deviceId: c.deviceId, serial: c.serial, status: c.status, publicKeyFingerprint: c.publicKeyFingerprint } : null,
    )
  ).filter((c): c is CertificateFacts => c !== null);

  const byRegistrationId = new Map<string, DeviceFacts[]>();
  for (const d of devices) {
    const list = byRegistrationId.get(d.registrationId);
    if (list) list.push(d);
    else byRegistrationId.set(d.registrationId, [d]);
  }
  const certsByDevice = new Map<string, CertificateFacts[]>();
  for (const c of certificates) {
    const list = certsByDevice.get(c.deviceId);
    if (list) list.push(c);
    else certsByDevice.set(c.deviceId, [c]);
  }

  const problems: CrossCheckProblem[] = [];
  const problem = (kind: CrossCheckProblemKind, registrationId: string, detail: string) => problems.push({ kind, registrationId, detail });
  let verified = 0;
  let rejectedClean = 0;
  let lostButRegistered = 0;
  const known = new Set<string>();

  for (const rec of records) {
    const plan = plans[rec.index]!;
    known.add(rec.registrationId);
    const found = byRegistrationId.get(rec.registrationId) ?? [];
    if (rec.outcome === 'onboarded') {
      if (found.length === 0) {
        problem('missing', rec.registrationId, 'onboarded, but no device is registered under its registration ID');
        continue;
      }
      if (found.length > 1) {
        problem('duplicated', rec.registrationId, `${found.length} devices are registered under one registration ID`);
        continue;
      }
      const d = found[0]!;
      // A clone that was wrongly accepted replaced its victim's key; that shows here on one of the two.
      if (d.publicKeyFingerprint !== rec.keyFingerprint) {
        problem('wrong-key', rec.registrationId, `the registered device holds key ${d.publicKeyFingerprint.slice(0, 16)}…, not the key this device onboarded with`);
        continue;
      }
      if (rec.deviceId !== null && d.id !== rec.deviceId) {
        problem('wrong-device-id', rec.registrationId, `answered device ID ${rec.deviceId}, registered as ${d.id}`);
        continue;
      }
      const certs = certsByDevice.get(d.id) ?? [];
      if (certs.length !== 1) {
        problem('certificate-count', rec.registrationId, `${certs.length} certificates issued to the device (${certs.map((c) => c.status).join(', ') || 'none'}), expected exactly one`);
        continue;
      }
      const c = certs[0]!;
      if (c.status !== 'active' || (rec.serial !== null && normalizeSerial(c.serial) !== rec.serial) || c.publicKeyFingerprint !== rec.keyFingerprint) {
        problem('certificate-mismatch', rec.registrationId, `registered certificate ${c.serial} (${c.status}) is not the active one the device holds (${rec.serial ?? '?'})`);
        continue;
      }
      verified++;
    } else if (rec.outcome === 'rejected' || rec.outcome === 'skipped') {
      const mine = plan.cloneOf === null ? found : found.filter((d) => d.publicKeyFingerprint === rec.keyFingerprint);
      if (mine.length > 0) problem('registered-after-rejection', rec.registrationId, `${rec.outcome} with ${rec.code ?? 'no answer'}, yet a device with its key is registered (${mine.map((d) => d.id).join(', ')})`);
      else rejectedClean++;
    } else if (found.some((d) => d.publicKeyFingerprint === rec.keyFingerprint)) {
      lostButRegistered++;
    }
  }
  for (const d of devices) {
    if (!known.has(d.registrationId)) problem('unexpected-device', d.registrationId, `device ${d.id} is in this run's group but no simulated device has its registration ID`);
  }

  const problemCounts: Partial<Record<CrossCheckProblemKind, number>> = {};
  for (const p of problems) problemCounts[p.kind] = (problemCounts[p.kind] ?? 0) + 1;
  return { ran: true, devicesListed: devices.length, certificatesListed: certificates.length, verified, rejectedClean, lostButRegistered, problemCounts, problems, elapsedMs: performance.now() - t0 };
}
