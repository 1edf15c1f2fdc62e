import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify';
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

export function sendError(reply: FastifyReply, err: FleetpassError, request?: FastifyRequest): FastifyReply {
  if (err.retryAfterSeconds !== undefined) reply.header('retry-after', String(err.retryAfterSeconds));
  const info = REASON_CODES[err.code as ReasonCode];
  const message = err.code === 'INTERNAL_ERROR' ? info.meaning : err.message;
  return reply.code(err.httpStatus).send({ error: { code: err.code, message, action: info.action, ...(request ? { requestId: request.id } : {}) } });
}
