/**
 * EST — Enrollment over Secure Transport (RFC 7030, as clarified by RFC 8951) — on the device HTTPS
 * port, under /.well-known/est/ and /.well-known/est/<label>/ (the label names an enrollment group,
 * RFC 7030 section 3.2.2). A door like the others: it translates the wire to the provisioning
 * pipeline and the pipeline's answer (or reason code) back to the wire; nothing else.
 *
 * Bodies are base64 DER, with or without line breaks; Content-Transfer-Encoding is ignored (RFC 8951).
 * Answers are base64 DER in 64-character lines, with the content types RFC 7030 names. Errors are
 * `text/plain` "<CODE>: <message>" with the registry's HTTP status, except: missing or bad credentials
 * → 401 with WWW-Authenticate, and deferral by admission control → 202 with Retry-After (section 4.2.3).
 */
import { randomBytes } from 'node:crypto';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { FleetpassError, REASON_CODES } from '../../core/errors.js';
import { certsOnlyPkcs7, csrAttributes, pemToDer, splitPemChain } from '../../pki/index.js';
import type { DeviceCredential } from '../../provisioning/attestation.js';
import type { ProvisionResult } from '../../provisioning/pipeline.js';
import type { HttpServices } from './app.js';
import { credentialFrom, peerCertificateChain } from './client-cert.js';
import { toCodedError } from './errors.js';

export const EST_PREFIX = '/.well-known/est';
export const EST_REALM = 'fleetpass-est';
const CERTS_ONLY = 'application/pkcs7-mime; smime-type=certs-only';

/** base64 in 64-character lines (what `openssl base64 -d` and `base64 -d` both read). */
function base64Lines(der: Buffer, eol = '\n'): string {
  const b64 = der.toString('base64');
  let out = '';
  for (let i = 0; i < b64.length; i += 64) out += `${b64.slice(i, i + 64)}${eol}`;
  return out;
}

function sendBase64(reply: FastifyReply, contentType: string, der: Buffer): FastifyReply {
  return reply.code(200).header('content-type', contentType).header('content-transfer-encoding', 'base64').send(Buffer.from(base64Lines(der), 'ascii'));
}

export function sendEstError(reply: FastifyReply, err: FleetpassError): FastifyReply {
  const message = err.code === 'INTERNAL_ERROR' ? REASON_CODES.INTERNAL_ERROR.meaning : err.message;
  let status = err.httpStatus;
  if (err.code === 'RATE_LIMITED' || err.code === 'OVERLOADED') {
    // RFC 7030 section 4.2.3: "202 Accepted" with Retry-After; the client repeats the same request later.
    status = 202;
    reply.header('retry-after', String(err.retryAfterSeconds ?? 1));
  } else if (err.retryAfterSeconds !== undefined) {
    reply.header('retry-after', String(err.retryAfterSeconds));
  }
  if (status === 401) reply.header('www-authenticate', `Basic realm="${EST_REALM}", charset="UTF-8"`);
  return reply.code(status).header('content-type', 'text/plain; charset=utf-8').send(Buffer.from(`${err.code}: ${message.replace(/[\r\n]+/g, ' ')}`, 'utf8'));
}

/**
 * The credential from the wire: HTTP Basic (username = registration ID, password = one-time token
 * or device key) when sent — Bearer tokens and SAS signatures are taken as on /v1/provision, other
 * schemes ignored — otherwise the TLS client certificate. An Authorization header wins over the certificate.
 */
export function estCredential(request: FastifyRequest): DeviceCredential {
  const auth = request.headers.authorization;
  if (auth !== undefined && auth !== '') {
    const basic = /^Basic\s+([A-Za-z0-9+/]+={0,2})\s*$/i.exec(auth);
    if (basic) {
      // Malformed credentials (no colon) go to the pipeline as they are, so that the attempt is logged.
      const decoded = Buffer.from(basic[1]!, 'base64').toString('utf8');
      const colon = decoded.indexOf(':');
      return colon < 0 ? { type: 'basic', username: decoded, password: '' } : { type: 'basic', username: decoded.slice(0, colon), password: decoded.slice(colon + 1) };
    }
  }
  // Bearer tokens and SAS signatures as on /v1/provision; otherwise the TLS client certificate.
  return credentialFrom(request);
}

type EstRequest = FastifyRequest<{ Params: { label?: string }; Querystring: Record<string, unknown>; Body: Buffer | undefined }>;

/** Template parameters ride in the query string (EST has no other place for them); registrationId too, if sent. */
function splitQuery(query: Record<string, unknown> | undefined): { registrationId?: unknown; parameters: Record<string, unknown> } {
  const { registrationId, ...parameters } = { ...(query ?? {}) };
  return registrationId === undefined ? { parameters } : { registrationId, parameters };
}

function labelOf(request: EstRequest): { enrollmentName?: string } {
  const label = request.params.label;
  if (label === undefined) return {};
  if (label.length === 0 || label.length > 256) throw new FleetpassError('NOT_FOUND', 'the EST label must be an enrollment group name of 1 to 256 characters');
  return { enrollmentName: label };
}

function certsOnly(result: ProvisionResult): Buffer {
  return certsOnlyPkcs7([pemToDer(result.certificate.pem, 'CERTIFICATE')]);
}

/** Registers the EST endpoints under /.well-known/est in their own plugin scope (own content types and error form). */
export async function registerEstRoutes(app: FastifyInstance, services: HttpServices): Promise<void> {
  const cacerts = certsOnlyPkcs7(splitPemChain(services.authority.chainPem));
  // What a CSR should be: Fleetpass accepts P-256, P-384, Ed25519 and RSA >= 2048 (see the key policy)
  // and asks for P-256 with ECDSA-SHA256. The subject and SANs of first enrollments come from the
  // template, so no subject attributes are requested; re-enrollment copies the current certificate's.
  const csrattrs = csrAttributes({ type: 'ec', curve: 'P-256' });

  await app.register(
    async (est) => {
      // Only application/pkcs10 bodies: JSON, text and anything else are 415 here.
      est.removeAllContentTypeParsers();
      est.addContentTypeParser('application/pkcs10', { parseAs: 'buffer' }, (_request, body, done) => done(null, body));
      est.setErrorHandler((err, request, reply) => {
        let coded = toCodedError(err as Error);
        if (coded.code === 'INTERNAL_ERROR') request.log.error({ err }, 'unhandled error in EST');
        if (coded.code === 'UNSUPPORTED_MEDIA_TYPE' && !(err instanceof FleetpassError)) coded = new FleetpassError('UNSUPPORTED_MEDIA_TYPE', `EST requests are application/pkcs10 (base64 DER), not ${request.headers['content-type'] ?? 'a body without Content-Type'}`);
        return sendEstError(reply, coded);
      });
      est.setNotFoundHandler((request, reply) => sendEstError(reply, new FleetpassError('NOT_FOUND', `no EST operation ${request.method} ${request.url.split('?')[0]} (supported: cacerts, simpleenroll, simplereenroll, csrattrs, serverkeygen)`)));

      const options = { schema: { hide: true } };
      for (const base of ['', '/:label']) {
        est.get(`${base}/cacerts`, options, async (_request, reply) => sendBase64(reply, 'application/pkcs7-mime', cacerts));

        est.get(`${base}/csrattrs`, options, async (_request, reply) => sendBase64(reply, 'application/csrattrs', csrattrs));

        // simpleenroll and serverkeygen are one pipeline call; serverkeygen only asks it to make the key.
        const enroll = (request: EstRequest, serverKeygen: boolean) =>
          services.pipeline.provision({
            protocol: 'est',
            sourceAddress: request.ip,
            ...splitQuery(request.query),
            csr: request.body,
            credential: estCredential(request),
            ...(serverKeygen ? { serverKeygen: true } : {}),
            ...labelOf(request),
          });

        est.post(`${base}/simpleenroll`, options, async (request: EstRequest, reply) => sendBase64(reply, CERTS_ONLY, certsOnly(await enroll(request, false))));

        est.post(`${base}/simplereenroll`, options, async (request: EstRequest, reply) => {
          const result = await services.pipeline.reenroll({ protocol: 'est', sourceAddress: request.ip, chainDer: peerCertificateChain(request), csr: request.body });
          return sendBase64(reply, CERTS_ONLY, certsOnly(result));
        });

        est.post(`${base}/serverkeygen`, options, async (request: EstRequest, reply) => {
          const result = await enroll(request, true);
          if (!result.privateKeyPkcs8) throw new FleetpassError('INTERNAL_ERROR', 'serverkeygen produced no key');
          // RFC 7030 section 4.4.2: multipart/mixed, the private key (application/pkcs8) then the certificate.
          const boundary = `fleetpass-est-${randomBytes(12).toString('hex')}`;
          const part = (type: string, der: Buffer) => `--${boundary}\r\nContent-Type: ${type}\r\nContent-Transfer-Encoding: base64\r\n\r\n${base64Lines(der, '\r\n')}`;
          const body = `${part('application/pkcs8', result.privateKeyPkcs8)}${part(CERTS_ONLY, certsOnly(result))}--${boundary}--\r\n`;
          return reply.code(200).header('content-type', `multipart/mixed; boundary=${boundary}`).header('cache-control', 'no-store').send(Buffer.from(body, 'ascii'));
        });
      }
    },
    { prefix: EST_PREFIX },
  );
}
