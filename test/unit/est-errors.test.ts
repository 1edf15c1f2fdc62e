/** The EST door's wire form of every reason code, and docs/protocols/est.md naming only registered codes. */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import Fastify from 'fastify';
import { FleetpassError, REASON_CODES, type ReasonCode } from '../../src/core/errors.js';
import type { HttpServices } from '../../src/transports/http/app.js';
import { registerEstRoutes } from '../../src/transports/http/est-routes.js';
import { makeCa, tempDir } from '../helpers/openssl.js';

describe('EST error mapping', () => {
  it('401 codes carry WWW-Authenticate, deferrals are 202 with Retry-After, the rest keep their registry status; bodies are "<CODE>: <message>"', async () => {
    const caPem = makeCa(tempDir('fp-est-err-'), 'ca');
    let next: FleetpassError = new FleetpassError('INTERNAL_ERROR');
    const fail = async (): Promise<never> => {
      throw next;
    };
    const services = { authority: { chainPem: caPem }, pipeline: { provision: fail, reenroll: fail } } as unknown as HttpServices;
    const app = Fastify();
    await registerEstRoutes(app, services);
    try {
      for (const code of Object.keys(REASON_CODES) as ReasonCode[]) {
        const deferred = code === 'RATE_LIMITED' || code === 'OVERLOADED';
        next = new FleetpassError(code, `because ${code.toLowerCase()}\nsecond line`, deferred ? { retryAfterSeconds: 7 } : {});
        for (const op of ['simpleenroll', 'simplereenroll', 'serverkeygen']) {
          const r = await app.inject({ method: 'POST', url: `/.well-known/est/${op}`, headers: { 'content-type': 'application/pkcs10' }, payload: 'MIIB' });
          assert.equal(r.statusCode, deferred ? 202 : REASON_CODES[code].httpStatus, `${op} ${code}`);
          assert.match(String(r.headers['content-type']), /^text\/plain/);
          const message = code === 'INTERNAL_ERROR' ? REASON_CODES.INTERNAL_ERROR.meaning : `because ${code.toLowerCase()} second line`;
          assert.equal(r.body, `${code}: ${message}`);
          assert.equal(r.headers['www-authenticate'], REASON_CODES[code].httpStatus === 401 ? 'Basic realm="fleetpass-est", charset="UTF-8"' : undefined, code);
          assert.equal(r.headers['retry-after'], deferred ? '7' : undefined, code);
        }
      }
      const wrongType = await app.inject({ method: 'POST', url: '/.well-known/est/simpleenroll', headers: { 'content-type': 'application/json' }, payload: '{}' });
      assert.equal(wrongType.statusCode, 415);
      assert.match(wrongType.body, /^UNSUPPORTED_MEDIA_TYPE: EST requests are application\/pkcs10/);
      const unknown = await app.inject({ method: 'GET', url: '/.well-known/est/label/fullcmc' });
      assert.equal(unknown.statusCode, 404);
      assert.match(unknown.body, /^NOT_FOUND: /);
    } finally {
      await app.close();
    }
  });

  it('docs/protocols/est.md names only registered codes, and every credential (401) code', () => {
    const doc = readFileSync(new URL('../../../docs/protocols/est.md', import.meta.url), 'utf8');
    const errors = doc.slice(doc.indexOf('\n## Errors'), doc.indexOf('\n## ', doc.indexOf('\n## Errors') + 1));
    assert.ok(errors.length > 100, 'est.md has an Errors section');
    const named = new Set([...errors.matchAll(/`([A-Z][A-Z_]{3,})`/g)].map((m) => m[1]!));
    for (const code of named) assert.ok(code in REASON_CODES, `${code} in est.md is a registered code`);
    for (const [code, info] of Object.entries(REASON_CODES)) if (info.httpStatus === 401 && code !== 'UNAUTHENTICATED') assert.ok(named.has(code), `${code} is documented for EST`);
  });
});
