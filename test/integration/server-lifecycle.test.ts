/** Start, restart, shutdown and the webhook, on every storage backend; CA algorithms on SQLite. */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
import { connect as netConnect, type Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import { execFile } from 'node:child_process';
import { createHmac, timingSafeEqual } from 'node:crypto';
import { promisify } from 'node:util';
import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { describeEachBackend } from '../helpers/backends.js';
import { makeCsr, openssl, tempDir } from '../helpers/openssl.js';
import { startTestServer } from '../helpers/server.js';

const execFileAsync = promisify(execFile);
const CLI = new URL('../../src/cli/index.js', import.meta.url).pathname;

interface HookCall {
  raw: string;
  headers: Record<string, string | string[] | undefined>;
}

/**
 * The receiver a customer would write (docs/protocols/webhook.md): recompute the HMAC over the raw
 * body, compare each signature entry in constant time, refuse stale timestamps.
 */
function verifyWebhook(call: HookCall, key: string): boolean {
  const ts = String(call.headers['x-fleetpass-timestamp'] ?? '');
  const expected = Buffer.from(`v1=${createHmac('sha256', key).update(`${ts}.${call.raw}`).digest('hex')}`);
  const fresh = Math.abs(Date.now() / 1000 - Number(ts)) < 300;
  const entries = String(call.headers['x-fleetpass-signature'] ?? '').split(',').map((e) => Buffer.from(e.trim()));
  return fresh && entries.some((got) => got.length === expected.length && timingSafeEqual(got, expected));
}

/** A customer webhook on loopback: answers with `answer`, after `delayMs`. */
async function webhook(answer: (body: Record<string, unknown>, call: HookCall) => { status: number; body: unknown }, delayMs = 0): Promise<{ url: string; server: Server; calls: Array<Record<string, unknown>>; requests: HookCall[] }> {
  const calls: Array<Record<string, unknown>> = [];
  const requests: HookCall[] = [];
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const call = { raw: Buffer.concat(chunks).toString('utf8'), headers: req.headers };
      const body = JSON.parse(call.raw) as Record<string, unknown>;
      calls.push(body);
      requests.push(call);
      const a = answer(body, call);
      setTimeout(() => {
        res.writeHead(a.status, { 'content-type': 'application/json' });
        res.end(typeof a.body === 'string' ? a.body : JSON.stringify(a.body));
      }, delayMs);
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const addr = server.address();
  return { url: `http://127.0.0.1:${typeof addr === 'object' && addr ? addr.port : 0}/hook`, server, calls, requests };
}

async function tokenEnrollment(srv: Awaited<ReturnType<typeof startTestServer>>, registrationId: string, extra: Record<string, unknown> = {}): Promise<string> {
  const r = await srv.admin('POST', '/enrollments', { registrationId, attestation: { type: 'token' }, ...extra });
  assert.equal(r.status, 201, r.text);
  return r.json.token;
}

describeEachBackend('server lifecycle', (ctx) => {
  it('restarts on the same data: same CA, same tenant, token still valid, no new token printed', async () => {
    const dir = tempDir('fp-restart-');
    const first = await startTestServer(ctx().url, {}, dir);
    const token = first.adminToken;
    assert.match(token, /^fpk_/);
    assert.equal(readFileSync(join(dir, 'admin.token'), 'utf8').trim(), token);
    assert.equal(statSync(join(dir, 'admin.token')).mode & 0o777, 0o600);
    const ca = first.caPem;
    await first.stop();
    const second = await startTestServer(ctx().url, {}, dir);
    try {
      assert.equal(second.fp.adminToken, null, 'no second token on restart');
      assert.equal(second.caPem, ca, 'the same CA chain');
      assert.equal((await second.admin('GET', '/tenants/current', undefined, token)).status, 200);
      assert.equal(readFileSync(join(dir, 'admin.token'), 'utf8').trim(), token);
    } finally {
      await second.close();
    }
  });

  it('finishes an in-flight provisioning request during graceful shutdown', async () => {
    const hook = await webhook(() => ({ status: 200, body: { allow: true } }), 400);
    const srv = await startTestServer(ctx().url);
    try {
      const dir = tempDir();
      const token = await tokenEnrollment(srv, 'SLOW-1', { webhookUrl: hook.url });
      const pending = srv.request('POST', '/v1/provision', { body: { registrationId: 'SLOW-1', csr: makeCsr(dir, 'slow').csrPem }, token });
      while (hook.calls.length === 0) await new Promise((r) => setTimeout(r, 10));
      const closing = srv.fp.close();
      const res = await pending;
      assert.equal(res.status, 200, res.text);
      await closing;
    } finally {
      hook.server.close();
      await srv.close();
    }
  });

  it('pre-provisioning webhook: allow with parameter overrides, reject with a reason, failure is HOOK_FAILED', async () => {
    const hook = await webhook((b) => {
      const rid = b.registrationId as string;
      if (rid === 'HOOK-NO') return { status: 200, body: { allow: false, reason: 'customer contract ended' } };
      if (rid === 'HOOK-ERR') return { status: 500, body: 'oops' };
      if (rid === 'HOOK-BAD') return { status: 200, body: 'not json' };
      return { status: 200, body: { allow: true, parameterOverrides: { region: 'eu-west' } } };
    });
    const srv = await startTestServer(ctx().url);
    try {
      const dir = tempDir();
      const tpl = { deviceName: '${registrationId}-${region}' };
      const call = async (rid: string) => {
        const token = await tokenEnrollment(srv, rid, { webhookUrl: hook.url, template: tpl });
        return srv.request('POST', '/v1/provision', { body: { registrationId: rid, csr: makeCsr(dir, rid).csrPem, parameters: { region: 'us' } }, token });
      };
      const ok = await call('HOOK-OK');
      assert.equal(ok.status, 200, ok.text);
      assert.equal((await srv.admin('GET', `/devices/${ok.json.deviceId}`)).json.name, 'HOOK-OK-eu-west');
      const last = hook.calls.find((c) => c.registrationId === 'HOOK-OK')!;
      assert.deepEqual(last.parameters, { region: 'us' });
      assert.match(String(last.publicKeyFingerprint), /^[0-9a-f]{64}$/);
      const no = await call('HOOK-NO');
      assert.equal(no.status, 403);
      assert.equal(no.json.error.code, 'HOOK_REJECTED');
      assert.match(no.json.error.message, /contract ended/);
      for (const rid of ['HOOK-ERR', 'HOOK-BAD']) {
        const r = await call(rid);
        assert.equal(r.status, 502);
        assert.equal(r.json.error.code, 'HOOK_FAILED');
      }
      assert.equal((await srv.admin('GET', '/devices?registrationId=HOOK-NO')).json.items.length, 0);
      assert.equal(hook.requests[0]!.headers['x-fleetpass-signature'], undefined, 'unsigned without FLEETPASS_WEBHOOK_SECRET');
    } finally {
      hook.server.close();
      await srv.close();
    }
  });

  it('pre-provisioning webhook with FLEETPASS_WEBHOOK_SECRET: every request signed over timestamp and body', async () => {
    const secret = 'whsec-test-1f2e3d';
    const hook = await webhook((_b, call) => (verifyWebhook(call, secret) ? { status: 200, body: { allow: true } } : { status: 200, body: { allow: false, reason: 'bad signature' } }));
    const srv = await startTestServer(ctx().url, { webhookSecret: secret });
    try {
      const dir = tempDir();
      const token = await tokenEnrollment(srv, 'HOOK-SIGNED', { webhookUrl: hook.url });
      const r = await srv.request('POST', '/v1/provision', { body: { registrationId: 'HOOK-SIGNED', csr: makeCsr(dir, 'signed').csrPem }, token });
      assert.equal(r.status, 200, r.text);
      const call = hook.requests.at(-1)!;
      assert.match(String(call.headers['x-fleetpass-timestamp']), /^\d{10}$/);
      assert.match(String(call.headers['x-fleetpass-signature']), /^v1=[0-9a-f]{64}$/);
      assert.equal(verifyWebhook(call, 'another secret'), false, 'the signature depends on the secret');
      assert.equal(verifyWebhook({ ...call, raw: call.raw.replace('HOOK-SIGNED', 'HOOK-FORGED') }, secret), false, 'and on the body');
    } finally {
      hook.server.close();
      await srv.close();
    }
  });

  it('rotating the webhook secret: while FLEETPASS_WEBHOOK_SECRET_PREVIOUS is set, a webhook holding either secret accepts', async () => {
    const [oldSecret, newSecret] = ['whsec-old-0a1b', 'whsec-new-9c8d'];
    let held = oldSecret; // what the customer's webhook is configured with; switched mid-test
    const hook = await webhook((_b, call) => (verifyWebhook(call, held) ? { status: 200, body: { allow: true } } : { status: 200, body: { allow: false, reason: 'bad signature' } }));
    const srv = await startTestServer(ctx().url, { webhookSecret: newSecret, webhookSecretPrevious: oldSecret });
    try {
      const dir = tempDir();
      for (const [i, holding] of [oldSecret, newSecret].entries()) {
        held = holding;
        const rid = `HOOK-ROTATE-${i}`;
        const token = await tokenEnrollment(srv, rid, { webhookUrl: hook.url });
        const r = await srv.request('POST', '/v1/provision', { body: { registrationId: rid, csr: makeCsr(dir, rid).csrPem }, token });
        assert.equal(r.status, 200, r.text);
      }
      const call = hook.requests.at(-1)!;
      assert.match(String(call.headers['x-fleetpass-signature']), /^v1=[0-9a-f]{64},v1=[0-9a-f]{64}$/, 'the new secret\'s signature, then the old one\'s');
      assert.equal(verifyWebhook(call, 'a third secret'), false);
    } finally {
      hook.server.close();
      await srv.close();
    }
  });

  it('`fleetpass migrate` applies the schema once and then reports it up to date', async () => {
    const url = ctx().url;
    const { stdout } = await execFileAsync(process.execPath, [CLI, 'migrate', '--database-url', url]);
    assert.match(stdout, /up to date|applied migrations/);
    const again = await execFileAsync(process.execPath, [CLI, 'migrate', '--database-url', url]);
    assert.match(again.stdout, /database schema is up to date/);
  });
});

describe('CA key algorithms and key protection', () => {
  for (const algorithm of ['ecdsa-p384', 'rsa-3072'] as const) {
    it(`starts with a ${algorithm} CA and issues chains that openssl verifies`, async () => {
      const srv = await startTestServer(null, { caAlgorithm: algorithm });
      try {
        const dir = tempDir();
        const token = await tokenEnrollment(srv, `ALG-${algorithm}`);
        const r = await srv.request('POST', '/v1/provision', { body: { registrationId: `ALG-${algorithm}`, csr: makeCsr(dir, 'alg').csrPem }, token });
        assert.equal(r.status, 200, r.text);
        const ca = join(dir, 'ca.pem');
        const leaf = join(dir, 'leaf.pem');
        (await import('node:fs')).writeFileSync(ca, srv.caPem);
        (await import('node:fs')).writeFileSync(leaf, r.json.certificatePem);
        assert.match(openssl(['verify', '-CAfile', ca, leaf]), /OK/);
        const text = openssl(['x509', '-in', leaf, '-noout', '-text']);
        assert.match(text, algorithm === 'rsa-3072' ? /sha256WithRSAEncryption/ : /ecdsa-with-SHA384/);
      } finally {
        await srv.close();
      }
    });
  }

  it('refuses to start with the wrong key passphrase, naming the setting', async () => {
    const dir = tempDir('fp-pass-');
    const srv = await startTestServer(null, { keyPassphrase: 'right' }, dir);
    await srv.stop();
    await assert.rejects(startTestServer(null, { keyPassphrase: 'wrong' }, dir), /FLEETPASS_KEY_PASSPHRASE/);
    const again = await startTestServer(null, { keyPassphrase: 'right' }, dir);
    await again.close();
  });
});

describe('stalled clients', () => {
  it('a request that does not finish arriving gets 408 REQUEST_TIMEOUT and its connection closed; a connection that never starts TLS is closed; malformed HTTP gets a coded error', async () => {
    const srv = await startTestServer(null, { requestTimeoutMs: 1000, tlsHandshakeTimeoutMs: 1000 });
    const sockets: Socket[] = [];
    try {
      // Headers and part of a body, then nothing more: a stalled device, or a deliberately slow one.
      const slow = tlsConnect({ host: '127.0.0.1', port: srv.port, servername: 'localhost', ca: srv.caPem });
      sockets.push(slow);
      await once(slow, 'secureConnect');
      let answer = '';
      slow.on('data', (c: Buffer) => (answer += c.toString('latin1')));
      slow.write('POST /v1/provision HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"registrationId":');
      // A TCP connection that never sends its ClientHello.
      const silent = netConnect(srv.port, '127.0.0.1');
      sockets.push(silent);
      await once(silent, 'connect');
      const closed = (s: Socket) => new Promise<void>((resolve) => (s.destroyed ? resolve() : s.once('close', () => resolve())));
      const deadline = new Promise<never>((_, reject) => setTimeout(() => reject(new Error('the server kept a stalled connection open for 15 s')), 15_000).unref());
      await Promise.race([Promise.all([closed(slow), closed(silent)]), deadline]);
      assert.match(answer, /^HTTP\/1\.1 408 /);
      assert.match(answer, /"code":"REQUEST_TIMEOUT"/);
      // Not HTTP, and headers over Node's 16 KB: coded errors too, before any route is reached.
      for (const [request, status, code] of [
        ['HELLO FLEETPASS\r\n\r\n', 400, 'REQUEST_MALFORMED'],
        [`GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Padding: ${'p'.repeat(20_000)}\r\n\r\n`, 431, 'HEADERS_TOO_LARGE'],
      ] as const) {
        const bad = tlsConnect({ host: '127.0.0.1', port: srv.port, servername: 'localhost', ca: srv.caPem });
        sockets.push(bad);
        await once(bad, 'secureConnect');
        let got = '';
        bad.on('data', (c: Buffer) => (got += c.toString('latin1')));
        bad.write(request);
        await Promise.race([closed(bad), deadline]);
        assert.match(got, new RegExp(`^HTTP/1\\.1 ${status} `), code);
        assert.equal(JSON.parse(got.slice(got.indexOf('\r\n\r\n') + 4)).error.code, code);
      }
      // The server still answers everyone else.
      assert.equal((await srv.request('GET', '/healthz')).status, 200);
    } finally {
      for (const s of sockets) s.destroy(); // else, when the test fails, close() waits on them
      await srv.close();
    }
  });
});
