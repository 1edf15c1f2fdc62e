import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { FleetpassError } from '../../core/errors.js';
import type { Principal, EnrollmentInput, EnrollmentPatch } from '../../registry/service.js';
import { attestationView, requireRole } from '../../registry/service.js';
import type { RevocationReason } from '../../lifecycle/service.js';
import type { ApiKey, CaRecord, CertificateRecord, Device, Enrollment, EnrollmentKind, Page, PageRequest, Role, Tenant } from '../../registry/types.js';
import type { HttpServices } from './app.js';
import * as S from './schemas.js';

declare module 'fastify' {
  interface FastifyRequest {
    principal?: Principal;
  }
}

const tenantView = (t: Tenant) => ({ id: t.id, name: t.name, idScope: t.idScope, createdAt: t.createdAt });
const apiKeyView = (k: ApiKey) => ({ id: k.id, name: k.name, role: k.role, createdAt: k.createdAt, revokedAt: k.revokedAt });
const caView = (c: CaRecord) => ({ id: c.id, kind: c.kind, name: c.name, platform: c.tenantId === null, subject: c.subject, fingerprint: c.fingerprint, notBefore: c.notBefore, notAfter: c.notAfter, parentId: c.parentId, certificatePem: c.certificatePem, createdAt: c.createdAt });
const enrollmentView = (e: Enrollment) => ({
  id: e.id, kind: e.kind, name: e.name, registrationId: e.registrationId, attestation: attestationView(e.attestation), templateId: e.templateId, template: e.template,
  reprovisionPolicy: e.reprovisionPolicy, enabled: e.enabled, expiresAt: e.expiresAt, maxDevices: e.maxDevices, deviceCount: e.deviceCount, webhookUrl: e.webhookUrl, createdAt: e.createdAt, updatedAt: e.updatedAt,
});
const deviceView = (d: Device) => ({ ...d });
const certificateView = (c: CertificateRecord) => ({ ...c });

function page(q: { limit?: number; cursor?: string }): PageRequest {
  return { limit: q.limit ?? 100, cursor: q.cursor ?? null };
}
function mapPage<T, U>(p: Page<T>, f: (t: T) => U): { items: U[]; next: string | null } {
  return { items: p.items.map(f), next: p.next };
}
function principal(req: FastifyRequest): Principal {
  if (!req.principal) throw new FleetpassError('UNAUTHENTICATED');
  return req.principal;
}
/** Strips undefined-valued keys so optional fields stay absent. */
function defined<T extends object>(o: T): T {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as T;
}

/** /admin/v1: JSON, Bearer API key, every query scoped to the key's tenant, every mutation audited. */
export async function registerAdminRoutes(app: FastifyInstance, s: HttpServices): Promise<void> {
  app.addHook('onRequest', async (request) => {
    if (request.url.startsWith('/admin/v1/openapi.json')) return;
    const m = /^Bearer\s+(\S+)\s*$/i.exec(request.headers.authorization ?? '');
    if (!m) throw new FleetpassError('UNAUTHENTICATED');
    request.principal = await s.registry.authenticate(m[1]!);
  });
  app.addHook('onResponse', async (request, reply) => {
    s.metrics.adminRequests.inc({ method: request.method, status: String(reply.statusCode) });
  });

  const tags = (t: string) => ({ tags: [t] });
  type Req<B = unknown, Q = unknown> = FastifyRequest<{ Body: B; Querystring: Q; Params: { id: string } }>;
  const created = (reply: FastifyReply, body: unknown) => reply.code(201).send(body);

  // --- tenants and keys ------------------------------------------------------------------------
  app.get('/tenants/current', { schema: { ...tags('tenants'), summary: 'The tenant of the calling key (with its idScope)' } }, async (req) => tenantView(await s.registry.getTenant(principal(req), principal(req).tenantId)));
  app.post('/tenants', { schema: { ...tags('tenants'), summary: 'Create a tenant and its first admin key (platform admins)', body: S.createTenant } }, async (req: Req<{ name: string }>, reply) => {
    const r = await s.registry.createTenant(principal(req), req.body.name);
    return created(reply, { ...tenantView(r.tenant), adminToken: r.adminToken });
  });
  app.get('/tenants', { schema: { ...tags('tenants'), summary: 'List tenants (platform admins see all)', querystring: S.listQuery } }, async (req: Req<unknown, { limit?: number; cursor?: string }>) => {
    const p = principal(req);
    if (!p.platformAdmin) return { items: [tenantView(await s.registry.getTenant(p, p.tenantId))], next: null };
    return mapPage(await s.store.listTenants(page(req.query)), tenantView);
  });
  app.get('/tenants/:id', { schema: { ...tags('tenants'), params: S.idParams } }, async (req: Req) => tenantView(await s.registry.getTenant(principal(req), req.params.id)));

  app.post('/api-keys', { schema: { ...tags('api-keys'), summary: 'Create an API key; the token is shown once', body: S.createApiKey } }, async (req: Req<{ name: string; role: Role }>, reply) => {
    const r = await s.registry.createApiKey(principal(req), req.body.name, req.body.role);
    return created(reply, { ...apiKeyView(r.key), token: r.token });
  });
  app.get('/api-keys', { schema: { ...tags('api-keys'), querystring: S.listQuery } }, async (req: Req<unknown, { limit?: number; cursor?: string }>) => {
    requireRole(principal(req), 'admin');
    return mapPage(await s.store.listApiKeys(principal(req).tenantId, page(req.query)), apiKeyView);
  });
  app.delete('/api-keys/:id', { schema: { ...tags('api-keys'), summary: 'Revoke an API key', params: S.idParams } }, async (req: Req, reply) => {
    await s.registry.revokeApiKey(principal(req), req.params.id);
    return reply.code(204).send();
  });

  // --- CAs -------------------------------------------------------------------------------------
  app.post('/cas', { schema: { ...tags('cas'), summary: 'Upload a trusted manufacturer or claim CA', body: S.createCa } }, async (req: Req<{ name: string; certificatePem: string }>, reply) =>
    created(reply, caView(await s.registry.createTrustedCa(principal(req), req.body.name, req.body.certificatePem))));
  app.get('/cas', { schema: { ...tags('cas'), summary: "The platform's root and issuing CAs and this tenant's trusted CAs", querystring: S.listQuery } }, async (req: Req<unknown, { limit?: number; cursor?: string }>) =>
    mapPage(await s.store.listCas(principal(req).tenantId, {}, page(req.query)), caView));
  app.get('/cas/:id', { schema: { ...tags('cas'), params: S.idParams } }, async (req: Req) => caView(await s.registry.getCa(principal(req), req.params.id)));
  app.delete('/cas/:id', { schema: { ...tags('cas'), params: S.idParams } }, async (req: Req, reply) => {
    await s.registry.deleteCa(principal(req), req.params.id);
    return reply.code(204).send();
  });

  // --- templates and policies ------------------------------------------------------------------
  app.post('/templates', { schema: { ...tags('templates'), body: S.createTemplate } }, async (req: Req<{ name: string; template: never }>, reply) =>
    created(reply, await s.registry.createTemplate(principal(req), req.body.name, req.body.template)));
  app.get('/templates', { schema: { ...tags('templates'), querystring: S.listQuery } }, async (req: Req<unknown, { limit?: number; cursor?: string }>) => s.store.listTemplates(principal(req).tenantId, page(req.query)));
  app.get('/templates/:id', { schema: { ...tags('templates'), params: S.idParams } }, async (req: Req) => s.registry.getTemplate(principal(req), req.params.id));
  app.patch('/templates/:id', { schema: { ...tags('templates'), params: S.idParams, body: S.patchTemplate } }, async (req: Req<{ name?: string; template?: never }>) => s.registry.updateTemplate(principal(req), req.params.id, req.body));
  app.delete('/templates/:id', { schema: { ...tags('templates'), params: S.idParams } }, async (req: Req, reply) => {
    await s.registry.deleteTemplate(principal(req), req.params.id);
    return reply.code(204).send();
  });
  app.post('/policies', { schema: { ...tags('policies'), body: S.createPolicy } }, async (req: Req<{ name: string; document: never }>, reply) =>
    created(reply, await s.registry.createPolicy(principal(req), req.body.name, req.body.document)));
  app.get('/policies', { schema: { ...tags('policies'), querystring: S.listQuery } }, async (req: Req<unknown, { limit?: number; cursor?: string }>) => s.store.listPolicies(principal(req).tenantId, page(req.query)));
  app.get('/policies/:id', { schema: { ...tags('policies'), params: S.idParams } }, async (req: Req) => s.registry.getPolicy(principal(req), req.params.id));
  app.patch('/policies/:id', { schema: { ...tags('policies'), params: S.idParams, body: S.patchPolicy } }, async (req: Req<{ name?: string; document?: never }>) => s.registry.updatePolicy(principal(req), req.params.id, req.body));
  app.delete('/policies/:id', { schema: { ...tags('policies'), params: S.idParams } }, async (req: Req, reply) => {
    await s.registry.deletePolicy(principal(req), req.params.id);
    return reply.code(204).send();
  });

  // --- enrollments (groups and individual) -----------------------------------------------------
  const enrollmentRoutes = (path: string, kind: EnrollmentKind, createSchema: object) => {
    const tag = tags(path.slice(1));
    app.post(path, { schema: { ...tag, summary: `Create ${kind === 'group' ? 'an enrollment group' : 'an individual enrollment'}; generated secrets are shown once`, body: createSchema } }, async (req: Req<EnrollmentInput>, reply) => {
      const { enrollment, secrets } = await s.registry.createEnrollment(principal(req), kind, req.body);
      return created(reply, { ...enrollmentView(enrollment), ...defined(secrets) });
    });
    app.get(path, { schema: { ...tag, querystring: S.enrollmentListQuery } }, async (req: Req<unknown, { limit?: number; cursor?: string; registrationId?: string; attestationType?: never }>) =>
      mapPage(await s.store.listEnrollments(principal(req).tenantId, defined({ kind, registrationId: req.query.registrationId, attestationType: req.query.attestationType }), page(req.query)), enrollmentView));
    app.get(`${path}/:id`, { schema: { ...tag, params: S.idParams } }, async (req: Req) => enrollmentView(await s.registry.getEnrollment(principal(req), kind, req.params.id)));
    app.patch(`${path}/:id`, { schema: { ...tag, params: S.idParams, body: S.patchEnrollment } }, async (req: Req<EnrollmentPatch>) =>
      enrollmentView(await s.registry.updateEnrollment(principal(req), kind, req.params.id, req.body)));
    app.post(`${path}/:id/disable`, { schema: { ...tag, params: S.idParams } }, async (req: Req) => enrollmentView(await s.registry.updateEnrollment(principal(req), kind, req.params.id, { enabled: false })));
    app.post(`${path}/:id/enable`, { schema: { ...tag, params: S.idParams } }, async (req: Req) => enrollmentView(await s.registry.updateEnrollment(principal(req), kind, req.params.id, { enabled: true })));
    app.delete(`${path}/:id`, { schema: { ...tag, params: S.idParams } }, async (req: Req, reply) => {
      await s.registry.deleteEnrollment(principal(req), kind, req.params.id);
      return reply.code(204).send();
    });
  };
  enrollmentRoutes('/enrollment-groups', 'group', S.createEnrollmentGroup);
  enrollmentRoutes('/enrollments', 'individual', S.createEnrollment);

  // --- devices and certificates ----------------------------------------------------------------
  type DeviceQuery = { limit?: number; cursor?: string; registrationId?: string; status?: never; enrollmentId?: string; model?: string; group?: string };
  app.get('/devices', { schema: { ...tags('devices'), summary: 'List devices with filters and cursor pagination', querystring: S.deviceListQuery } }, async (req: Req<unknown, DeviceQuery>) => {
    const { limit: _l, cursor: _c, ...filter } = req.query;
    return mapPage(await s.store.listDevices(principal(req).tenantId, defined(filter), page(req.query)), deviceView);
  });
  app.get('/devices/:id', { schema: { ...tags('devices'), params: S.idParams } }, async (req: Req) => deviceView(await s.lifecycle.getDevice(principal(req), req.params.id)));
  app.post('/devices/:id/suspend', { schema: { ...tags('devices'), params: S.idParams } }, async (req: Req) => deviceView(await s.lifecycle.setDeviceStatus(principal(req), req.params.id, 'suspend')));
  app.post('/devices/:id/resume', { schema: { ...tags('devices'), params: S.idParams } }, async (req: Req) => deviceView(await s.lifecycle.setDeviceStatus(principal(req), req.params.id, 'resume')));
  app.post('/devices/:id/revoke', { schema: { ...tags('devices'), summary: 'Revoke a device and all its active certificates', params: S.idParams, body: S.revokeBody } }, async (req: Req<{ reason?: RevocationReason } | undefined>) =>
    deviceView(await s.lifecycle.revokeDevice(principal(req), req.params.id, req.body?.reason ?? 'unspecified')));
  app.get('/devices/:id/renewal', { schema: { ...tags('devices'), summary: 'Renewal state: active certificate, renewal window, operator force', params: S.idParams } }, async (req: Req) => s.lifecycle.renewalStatus(principal(req), req.params.id));
  app.post('/devices/:id/renewal', { schema: { ...tags('devices'), summary: 'Force (or withdraw) one renewal outside the renewal window (EST simplereenroll)', params: S.idParams, body: S.renewalBody } }, async (req: Req<{ force: boolean; until?: string }>) =>
    s.lifecycle.setRenewalForce(principal(req), req.params.id, req.body.force, req.body.until));
  app.delete('/devices/:id', { schema: { ...tags('devices'), summary: 'Delete a device (its certificates are revoked)', params: S.idParams } }, async (req: Req, reply) => {
    await s.lifecycle.deleteDevice(principal(req), req.params.id);
    return reply.code(204).send();
  });

  type CertQuery = { limit?: number; cursor?: string; deviceId?: string; status?: never; serial?: string };
  app.get('/certificates', { schema: { ...tags('certificates'), querystring: S.certificateListQuery } }, async (req: Req<unknown, CertQuery>) => {
    const { limit: _l, cursor: _c, ...filter } = req.query;
    if (filter.serial) filter.serial = filter.serial.toLowerCase();
    return mapPage(await s.store.listCertificates(principal(req).tenantId, defined(filter), page(req.query)), certificateView);
  });
  app.get('/certificates/:id', { schema: { ...tags('certificates'), params: S.idParams } }, async (req: Req) => certificateView(await s.lifecycle.getCertificate(principal(req), req.params.id)));
  app.post('/certificates/:id/revoke', { schema: { ...tags('certificates'), params: S.idParams, body: S.revokeBody } }, async (req: Req<{ reason?: RevocationReason } | undefined>) =>
    certificateView(await s.lifecycle.revokeCertificate(principal(req), req.params.id, req.body?.reason ?? 'unspecified')));

  // --- attempts and audit ----------------------------------------------------------------------
  type AttemptQuery = { limit?: number; cursor?: string; reasonCode?: string; registrationId?: string; enrollmentId?: string; outcome?: never; since?: string; until?: string; unattributed?: boolean };
  app.get('/attempts', { schema: { ...tags('attempts'), summary: 'Provisioning attempts, newest last, filterable by reason code, registration ID, enrollment and time', querystring: S.attemptListQuery } }, async (req: Req<unknown, AttemptQuery>) => {
    const { limit: _l, cursor: _c, unattributed, ...filter } = req.query;
    const p = principal(req);
    if (unattributed && !p.platformAdmin) throw new FleetpassError('FORBIDDEN', 'attempts without a tenant are shown to admin keys of the platform tenant only');
    return s.store.listAttempts(unattributed ? null : p.tenantId, defined(filter), page(req.query));
  });
  app.get('/audit-events', { schema: { ...tags('audit'), querystring: S.listQuery } }, async (req: Req<unknown, { limit?: number; cursor?: string }>) => s.store.listAudit(principal(req).tenantId, page(req.query)));
}
