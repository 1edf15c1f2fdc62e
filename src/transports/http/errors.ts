import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify';
import { STATUS_CODES } from 'node:http';
import type { Socket } from 'node:net';
import { FleetpassError, REASON_CODES, type ReasonCode } from '../../core/errors.js';

/** Translates Fastify's own errors (parsing, limits, schema validation) into registry codes. */
export function toCodedError(err: FastifyError | Error): FleetpassError {
  if (err instanceof FleetpassError) return err;
  const fe = err as FastifyError;
  if (fe.validation) {
    const v = fe.validation[0];
    const path = `${fe.validationContext ?? 'body'}${v?.instancePath ?? ''}`;
    let message = `${path} ${v?.message ?? 'is invalid'}`;
    if (v?.keyword === 'additionalProperties') message = `${path} has an unknown field "${(v.params as { additionalProperty?: string }).additionalProperty}"`;
    return new FleetpassError('VALIDATION_FAILED', message);
  }
  switch (fe.code) {
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return new FleetpassError('BODY_TOO_LARGE');
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
    case 'FST_ERR_CTP_INVALID_CONTENT_LENGTH':
      return new FleetpassError(fe.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE' ? 'UNSUPPORTED_MEDIA_TYPE' : 'BAD_REQUEST', fe.message);
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
      return new FleetpassError('BAD_REQUEST', 'the JSON body is empty');
    default:
      break;
  }
  if (err instanceof SyntaxError || fe.statusCode === 400) return new FleetpassError('BAD_REQUEST', `the body is not valid JSON: ${err.message}`);
  if (fe.statusCode === 413) return new FleetpassError('BODY_TOO_LARGE');
  if (fe.statusCode === 415) return new FleetpassError('UNSUPPORTED_MEDIA_TYPE');
  return new FleetpassError('INTERNAL_ERROR', undefined, { cause: err });
}

/** The JSON error body every HTTP answer carries: `{"error":{"code","message","action","requestId"?}}`. */
function errorBody(err: FleetpassError, requestId?: string): { error: Record<string, string> } {
  const info = REASON_CODES[err.code as ReasonCode];
  const message = err.code === 'INTERNAL_ERROR' ? info.meaning : err.message;
  return { error: { code: err.code, message, action: info.action, ...(requestId ? { requestId } : {}) } };
}

export function sendError(reply: FastifyReply, err: FleetpassError, request?: FastifyRequest): FastifyReply {
  if (err.retryAfterSeconds !== undefined) reply.header('retry-after', String(err.retryAfterSeconds));
  return reply.code(err.httpStatus).send(errorBody(err, request?.id));
}

/**
 * Fastify's clientErrorHandler: errors met before a request reaches Fastify. Those of Node's HTTP
 * parser (malformed HTTP, headers too large, a request that did not arrive within the request
 * timeout) are answered with the same error body as everything else, then the connection is closed;
 * any other (a TLS handshake that failed or timed out: nothing can be written to it) only closes it.
 */
export function answerClientError(err: NodeJS.ErrnoException, socket: Socket): void {
  if (socket.destroyed) return;
  const code =
    err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? 'REQUEST_TIMEOUT'
    : err.code === 'HPE_HEADER_OVERFLOW' ? 'HEADERS_TOO_LARGE'
    : err.code?.startsWith('HPE_') ? 'REQUEST_MALFORMED'
    : undefined;
  if (code === undefined || !socket.writable) return void socket.destroy();
  const coded = new FleetpassError(code);
  const body = JSON.stringify(errorBody(coded));
  socket.end(`HTTP/1.1 ${coded.httpStatus} ${STATUS_CODES[coded.httpStatus]}\r\nConnection: close\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`, () => socket.destroy());
  // A client that does not read its answer does not keep the connection either.
  setTimeout(() => socket.destroy(), 5_000).unref();
}
