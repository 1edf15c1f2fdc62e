import Fastify, { LogController, type FastifyInstance } from 'fastify';
import { constants as cryptoConstants } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import swagger from '@fastify/swagger';
import { Ajv } from 'ajv';
import addFormatsModule from 'ajv-formats';
import type { Logger } from 'pino';
import { FleetpassError } from '../../core/errors.js';
import type { CertificateAuthority } from '../../provisioning/authority.js';
import type { ProvisioningPipeline } from '../../provisioning/pipeline.js';
import type { LifecycleService } from '../../lifecycle/service.js';
import type { RegistryService } from '../../registry/service.js';
import type { Store } from '../../registry/store.js';
import type { Metrics } from '../../observability/metrics.js';
import { credentialFrom, enableProxyClientCert, peerCertificateChain, type ProxyClientCertOptions } from './client-cert.js';
import { answerClientError, sendError, toCodedError } from './errors.js';
import { registerAdminRoutes } from './admin-routes.js';
import { registerEstRoutes } from './est-routes.js';

export interface HttpServices {
  store: Store;
  pipeline: ProvisioningPipeline;
  registry: RegistryService;
  lifecycle: LifecycleService;
  authority: CertificateAuthority;
  metrics: Metrics;
  log: Logger;
}

export interface HttpOptions {
  maxBodyBytes: number;
  tls?: { keyPem: string; certPem: string };
  /** Client certificates forwarded by a TLS-terminating load balancer (off when absent). */
  proxyClientCert?: ProxyClientCertOptions;
  /** Where /metrics comes from when not this process's registry (the sum over cluster workers). */
  metricsSource?: () => Promise<{ contentType: string; text: string }>;
  /** Seconds a keep-alive connection may idle. */
  keepAliveTimeoutMs?: number;
  /** Longest time for a request's headers and body to arrive; then 408 and close (requestTimeoutMs). */
  requestTimeoutMs: number;
  /** Longest TLS handshake; then the connection is closed (tlsHandshakeTimeoutMs). */
  tlsHandshakeTimeoutMs: number;
}


/**
 * No TLS session tickets. A device onboards once and comes back for renewal months later, long after
 * any ticket expired (Node's default lifetime is 5 minutes); meanwhile OpenSSL 3 built two tickets
 * per connection, each sealing the session with the client's certificate and copying it through
 * DER — ~25% of the server's CPU per handshake, measured here. Every connection is a full handshake.
 */
const NO_SESSION_TICKETS = cryptoConstants.SSL_OP_NO_TICKET;

/** How much of a refused body is read (and dropped) before the 413, so that the client reads the answer. */
const DRAIN_MAX_BYTES = 8 * 1024 * 1024;
const DRAIN_MAX_MS = 10_000;

/** Resolves once the request body has been read to its end, or after maxBytes more or maxMs, whichever is first. */
function drainBody(req: IncomingMessage, maxBytes: number, maxMs: number): Promise<void> {
  if (req.complete || req.destroyed) return Promise.resolve();
  return new Promise((resolve) => {
    let read = 0;
    const done = () => {
      clearTimeout(timer);
      req.off('data', onData).off('end', done).off('close', done).off('error', done);
      resolve();
    };
    const onData = (chunk: Buffer) => {
      read += chunk.length;
      if (read > maxBytes) done();
    };
    const timer = setTimeout(done, maxMs);
    req.on('data', onData).once('end', done).once('close', done).once('error', done);
    req.resume();
  });
}

/** The Fastify application: device API, admin API, CA bundle, CRL, health and metrics. server.ts only listens. */
export async function buildHttpApp(services: HttpServices, opts: HttpOptions): Promise<FastifyInstance> {
  const { requestTimeoutMs } = opts;
  const app = Fastify({
    loggerInstance: services.log.child({ component: 'http' }),
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: opts.maxBodyBytes,
    keepAliveTimeout: opts.keepAliveTimeoutMs ?? 72_000,
    clientErrorHandler: answerClientError,
    // Fastify turns Node's request timeout off (0) unless given one; a client that sends its request
    // a byte at a time would then hold its connection for ever.
    requestTimeout: requestTimeoutMs,
    ...(opts.tls
      ? {
          https: {
            key: opts.tls.keyPem, cert: opts.tls.certPem, requestCert: true, rejectUnauthorized: false, minVersion: 'TLSv1.2' as const, secureOptions: NO_SESSION_TICKETS,
            handshakeTimeout: opts.tlsHandshakeTimeoutMs,
            headersTimeout: requestTimeoutMs,
            // How often Node looks for requests past their timeout (its default, 30 s, would let
            // one run up to 30 s late).
            connectionsCheckingInterval: Math.min(5_000, Math.max(100, Math.floor(requestTimeoutMs / 4))),
          },
        }
      : {}),
    genReqId: () => `req_${Math.random().toString(36).slice(2, 12)}`,
    // Behind a trusted proxy the device's address comes from X-Forwarded-For (attempt log, metrics).
    ...(opts.proxyClientCert ? { trustProxy: opts.proxyClientCert.trustedProxies } : {}),
  }) as unknown as FastifyInstance;
  if (opts.proxyClientCert) enableProxyClientCert(app, opts.proxyClientCert);

  // Bodies are validated strictly (no type coercion, unknown fields stay errors); query strings and
  // path parameters are text on the wire and are coerced.
  const addFormats = addFormatsModule as unknown as (ajv: Ajv) => Ajv;
  const strict = addFormats(new Ajv({ removeAdditional: false, coerceTypes: false, useDefaults: true, allErrors: false, strict: false }));
  const coercing = addFormats(new Ajv({ removeAdditional: false, coerceTypes: 'array', useDefaults: true, allErrors: false, strict: false }));
  app.setValidatorCompiler(({ schema, httpPart }) => (httpPart === 'body' ? strict : coercing).compile(schema));

  // JSON only on these routes; Fastify's default text/plain parser would let a wrong content type through.
  app.removeContentTypeParser('text/plain');

  app.setErrorHandler((err, request, reply) => {
    const coded = toCodedError(err as Error);
    if (coded.code === 'INTERNAL_ERROR') request.log.error({ err }, 'unhandled error');
    return sendError(reply, coded, request);
  });
  // Fastify refuses an oversized body (413) before reading it and closes the connection; closed with
  // the client's bytes unread, the socket answers them with a reset, which can reach the client
  // before the 413 does. A device would see a network error and send the same body again, forever.
  // So the rest of the body is read and dropped first (up to a bound), then the answer goes out.
  app.addHook('onSend', async (request, reply, payload) => {
    if (reply.statusCode === 413) await drainBody(request.raw, DRAIN_MAX_BYTES, DRAIN_MAX_MS);
    return payload;
  });
  app.setNotFoundHandler((request, reply) => sendError(reply, new FleetpassError('NOT_FOUND', `no route ${request.method} ${request.url.split('?')[0]}`), request));

  await app.register(swagger, {
    openapi: {
      openapi: '3.0.3',
      info: { title: 'Fleetpass admin and device API', version: '1', description: 'Errors are {"error":{"code","message","action"}}; codes are listed in docs/reason-codes.md.' },
      components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } } },
      security: [{ bearer: [] }],
    },
  });

  // --- public ---------------------------------------------------------------------------------
  app.get('/healthz', { schema: { hide: true } }, async () => ({ status: 'ok', pid: process.pid }));
  app.get('/readyz', { schema: { hide: true } }, async (_req, reply) => {
    try {
      await services.store.ping();
      return { status: 'ready', issuingCa: services.authority.issuing.id };
    } catch (e) {
      return reply.code(503).send({ status: 'not ready', error: (e as Error).message });
    }
  });
  app.get('/ca.pem', { schema: { hide: true } }, async (_req, reply) => reply.type('application/x-pem-file').send(services.authority.chainPem));
  app.get<{ Params: { file: string } }>('/crl/:file', { schema: { hide: true } }, async (req, reply) => {
    const m = /^(.+)\.crl$/.exec(req.params.file);
    if (!m) throw new FleetpassError('NOT_FOUND');
    const der = await services.lifecycle.currentCrl(m[1]!);
    return reply.type('application/pkix-crl').header('cache-control', 'max-age=60').send(der);
  });
  app.get('/metrics', { schema: { hide: true } }, async (_req, reply) => {
    if (opts.metricsSource) {
      const m = await opts.metricsSource();
      return reply.type(m.contentType).send(m.text);
    }
    return reply.type(services.metrics.registry.contentType).send(await services.metrics.registry.metrics());
  });

  // --- device API -----------------------------------------------------------------------------
  app.post<{ Body: Record<string, unknown> }>(
    '/v1/provision',
    {
      schema: {
        tags: ['device'],
        summary: 'Onboard a device: attest, register, issue its certificate',
        security: [],
        // Unknown fields are ignored here on purpose: newer firmware must not break on an older server.
        // Types are checked by the pipeline, so that every door gives the same coded answer.
        body: {
          type: 'object',
          properties: {
            registrationId: { description: 'Serial, MAC or EUI: [A-Za-z0-9._:-]{1,128}. Optional with a client certificate (its CN is used).' },
            csr: { description: 'PKCS#10 certificate request, PEM or base64 DER.' },
            parameters: { description: 'Object: model, firmwareVersion, region and any template parameters (strings).' },
          },
        },
      },
    },
    async (request, reply) => {
      const body = (request.body ?? {}) as Record<string, unknown>;
      if (typeof body !== 'object' || Array.isArray(body)) throw new FleetpassError('BAD_REQUEST', 'the body must be a JSON object');
      const result = await services.pipeline.provision({
        protocol: 'https',
        sourceAddress: request.ip,
        registrationId: body.registrationId,
        csr: body.csr,
        parameters: body.parameters,
        credential: credentialFrom(request),
      });
      return reply.code(200).send({
        deviceId: result.device.id,
        registrationId: result.device.registrationId,
        certificatePem: result.certificate.pem,
        chainPem: result.chainPem,
        certificateSerial: result.certificate.serial,
        notAfter: result.certificate.notAfter,
        configuration: result.configuration,
        configurationVersion: result.device.configurationVersion,
        endpoints: result.endpoints,
      });
    },
  );

  app.get('/v1/devices/self', { schema: { tags: ['device'], summary: 'The calling device (operational certificate over TLS)', security: [] } }, async (request) => {
    const { device, certificate } = await services.lifecycle.identifyDevice(peerCertificateChain(request));
    return {
      deviceId: device.id,
      registrationId: device.registrationId,
      name: device.name,
      status: device.status,
      model: device.model,
      firmwareVersion: device.firmwareVersion,
      region: device.region,
      groups: device.groups,
      attributes: device.attributes,
      policy: device.policyName,
      configurationVersion: device.configurationVersion,
      certificate: { serial: certificate.serial, notBefore: certificate.notBefore, notAfter: certificate.notAfter },
    };
  });
  app.get('/v1/devices/self/configuration', { schema: { tags: ['device'], summary: "The calling device's configuration document", security: [] } }, async (request, reply) => {
    const { device } = await services.lifecycle.identifyDevice(peerCertificateChain(request));
    return reply.header('etag', `"${device.configurationVersion}"`).send({ version: device.configurationVersion, configuration: device.configuration });
  });

  await registerEstRoutes(app, services);
  await app.register(async (admin) => registerAdminRoutes(admin, services), { prefix: '/admin/v1' });
  app.get('/admin/v1/openapi.json', { schema: { hide: true } }, async () => app.swagger());
  return app;
}
