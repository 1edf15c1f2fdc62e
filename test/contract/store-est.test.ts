/**
 * Store contract for what EST added (src/registry/store.ts): enrollment groups by name across tenants
 * (EST labels) and the compare-and-set form of setCertificateStatus (renewal vs. revocation). Every backend.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { newId } from '../../src/core/ids.js';
import type { CertificateRecord, Enrollment, Tenant } from '../../src/registry/types.js';
import { describeEachBackend } from '../helpers/backends.js';

const now = (): string => new Date().toISOString();

function tenant(): Tenant {
  const id = newId('ten');
  return { id, name: `tenant ${id}`, idScope: `0ne${Math.random().toString(36).slice(2, 12)}`, createdAt: now() };
}

function enrollment(tenantId: string, over: Partial<Enrollment>): Enrollment {
  return {
    id: newId('enr'), tenantId, kind: 'group', name: 'line 1', registrationId: null,
    attestation: { type: 'symmetric-key', sealedPrimaryKey: 'sealed-1', sealedSecondaryKey: null },
    templateId: null, template: null, reprovisionPolicy: 'reject', enabled: true, expiresAt: null, maxDevices: null,
    deviceCount: 0, webhookUrl: null, createdAt: now(), updatedAt: now(), ...over,
  };
}

function certificate(tenantId: string, issuerCaId: string, over: Partial<CertificateRecord> = {}): CertificateRecord {
  return {
    id: newId('crt'), tenantId, deviceId: newId('dev'), serial: newId('s').slice(2).toLowerCase(), issuerCaId, subject: 'CN=dev',
    notBefore: now(), notAfter: now(), publicKeyFingerprint: newId('fp'), pem: '-----BEGIN CERTIFICATE-----\n…',
    status: 'active', revokedAt: null, revocationReason: null, createdAt: now(), ...over,
  };
}

describeEachBackend('Store contract: EST additions', (ctx) => {
  describe('findGroupEnrollmentsByName', () => {
    it('finds groups of that exact name and attestation type in every tenant, never individual enrollments', async () => {
      const { store } = ctx();
      const a = tenant();
      const b = tenant();
      await store.createTenant(a);
      await store.createTenant(b);
      const name = `est-label-${newId('x')}`;
      const inA = enrollment(a.id, { name });
      const inB = enrollment(b.id, { name });
      const otherType = enrollment(a.id, { name, attestation: { type: 'x509-ca', caId: 'ca_x', requireRegistrationIdMatch: true } });
      const individual = enrollment(a.id, { name, kind: 'individual', registrationId: 'reg-1' });
      const otherName = enrollment(a.id, { name: `${name}-2` });
      for (const e of [inA, inB, otherType, individual, otherName]) await store.createEnrollment(e);
      assert.deepEqual((await store.findGroupEnrollmentsByName(name, 'symmetric-key')).map((e) => e.id), [inA.id, inB.id].sort());
      assert.deepEqual((await store.findGroupEnrollmentsByName(name, 'x509-ca')).map((e) => e.id), [otherType.id]);
      assert.deepEqual(await store.findGroupEnrollmentsByName(name.toUpperCase(), 'symmetric-key'), [], 'names match exactly');
    });
  });

  describe('setCertificateStatus with onlyIfStatus', () => {
    it('changes the status only from the given one; without it, unconditionally', async () => {
      const { store } = ctx();
      const t = tenant();
      await store.createTenant(t);
      const c = certificate(t.id, 'ca_est');
      await store.createCertificate(c);
      assert.equal(await store.setCertificateStatus(c.id, 'superseded', null, null, 'active'), true);
      assert.equal(await store.setCertificateStatus(c.id, 'superseded', null, null, 'active'), false, 'no longer active');
      assert.equal((await store.getCertificate(t.id, c.id))?.status, 'superseded');
      const at = now();
      assert.equal(await store.setCertificateStatus(c.id, 'revoked', at, 'keyCompromise', 'superseded'), true);
      assert.equal(await store.setCertificateStatus(c.id, 'superseded', null, null, 'active'), false, 'a revoked certificate is never superseded');
      assert.deepEqual(await store.getCertificate(t.id, c.id), { ...c, status: 'revoked', revokedAt: at, revocationReason: 'keyCompromise' });
      assert.equal(await store.setCertificateStatus('crt_missing', 'revoked', at, 'x', 'active'), false);
    });

    it('of two concurrent compare-and-sets from active, exactly one wins', async () => {
      const { store } = ctx();
      const t = tenant();
      await store.createTenant(t);
      const c = certificate(t.id, 'ca_est');
      await store.createCertificate(c);
      const results = await Promise.all([
        store.transaction((tx) => tx.setCertificateStatus(c.id, 'superseded', null, null, 'active')),
        store.transaction((tx) => tx.setCertificateStatus(c.id, 'revoked', now(), 'keyCompromise', 'active')),
      ]);
      assert.equal(results.filter(Boolean).length, 1);
    });
  });
});
