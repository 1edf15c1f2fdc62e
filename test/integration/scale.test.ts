/** Workers, bursts beyond capacity and forwarded client certificates — on every storage backend. */
import { it, describe, after } from 'node:test';
import { createServer } from 'node:http';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { request as httpsRequest } from 'node:https';
import { setTimeout as sleep } from 'node:timers/promises';
import { describeEachBackend } from '../helpers/backends.js';
import { makeCa, makeCsr, makeLeaf, tempDir } from '../helpers/openssl.js';
import { freePort, startTestServer } from '../helpers/server.js';
import { parseForwardedCertificate } from '../../src/transports/http/client-cert.js';

const CLI = new URL('../../src/cli/index.js', import.meta.url).pathname;

function get(port: string | number, path: string, ca: string, token?: string, json?: unknown): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const headers: Record<string, string> = token ? { authorization: `Bearer ${token}` } : {};
    if (json !== undefined) headers['content-type'] = 'application/json';
    const req = httpsRequest({ host: '127.0.0.1', port, path, method: json === undefined ? 'GET' : 'POST', servername: 'localhost', ca, agent: false, headers }, (res) => {
      let body = '';
      res.on('data', (c: Buffer) => (body += c.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    req.end(json === undefined ? undefined : JSON.stringify(json));
  });
}

describeEachBackend('scale', (ctx) => {
  it('`serve --workers 2` answers from two processes on one port and stops cleanly on SIGTERM', async () => {
    const dir = tempDir('fp-workers-');
    const port = await freePort();
    const child = spawn(process.execPath, [CLI, 'serve', '--workers', '2', '--port', String(port), '--host', '127.0.0.1', '--data-dir', dir, '--database-url', ctx().url, '--log-level', 'warn'], {
      // The suite's other servers share this database, and so its CA and passphrase.
      env: { ...process.env, FLEETPASS_KEY_PASSPHRASE: 'test-passphrase' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout.on('data', (c: Buffer) => (out += c.toString()));
    child.stderr.on('data', (c: Buffer) => (out += c.toString()));
    try {
      for (let i = 0; i < 200 && !/listening on/.test(out); i++) await sleep(100);
      assert.match(out, /2 worker processes/, out);
      const token = /admin API token[^\n]*\n\s+(fpk_\S+)/.exec(out)?.[1] ?? readFileSync(join(dir, 'admin.token'), 'utf8').trim();
      // Wait until both workers listen, then look at which processes answer fresh connections.
      const pids = new Set<string>();
      let ca = '';
      for (let i = 0; i < 100 && pids.size < 2; i++) {
        try {
          if (!ca) ca = (await new Promise<string>((resolve, reject) => {
            httpsRequest({ host: '127.0.0.1', port, path: '/ca.pem', rejectUnauthorized: false, agent: false }, (res) => {
              let b = '';
              res.on('data', (c: Buffer) => (b += c.toString()));
              res.on('end', () => resolve(b));
            }).on('error', reject).end();
          }));
          const h = await get(port, '/healthz', ca);
          pids.add(JSON.parse(h.body).pid);
        } catch {
          await sleep(100);
        }
      }
      assert.equal(pids.size, 2, `answers came from ${[...pids].join(', ')}`);
      const r = await get(port, '/admin/v1/tenants/current', ca, token);
      assert.equal(r.status, 200, r.body);
      // Onboard devices over fresh connections (either worker may take each); every scrape, whichever
      // worker answers it, shows the sum over the workers.
      const csrDir = tempDir();
      for (let i = 0; i < 4; i++) {
        const e = await get(port, '/admin/v1/enrollments', ca, token, { registrationId: `WRK-${i}`, attestation: { type: 'token' } });
        assert.equal(e.status, 201, e.body);
        const p = await get(port, '/v1/provision', ca, JSON.parse(e.body).token, { registrationId: `WRK-${i}`, csr: makeCsr(csrDir, `w${i}`).csrPem });
        assert.equal(p.status, 200, p.body);
      }
      for (let i = 0; i < 4; i++) {
        const m = await get(port, '/metrics', ca);
        assert.match(m.body, /fleetpass_provisioning_attempts_total\{protocol="https",outcome="success",reason="OK"\} 4\b/, m.body.slice(0, 400));
        // Each registration is a store transaction; group commit can only make database transactions fewer.
        const storeTx = Number(/^fleetpass_store_transactions_total (\d+)$/m.exec(m.body)?.[1]);
        const databaseTx = Number(/^fleetpass_store_database_transactions_total (\d+)$/m.exec(m.body)?.[1]);
        assert.ok(storeTx >= 4, `store transactions: ${storeTx}`);
        assert.ok(databaseTx >= 1 && databaseTx <= storeTx, `database transactions: ${databaseTx} for ${storeTx}`);
      }
    } finally {
      child.kill('SIGTERM');
      const [code] = (await once(child, 'exit')) as [number | null];
      assert.equal(code, 0, out);
    }
  });

  it('a burst far beyond capacity ends with every device onboarded and no 5xx but the deliberate 503', async () => {
    const srv = await startTestServer(ctx().url, { admissionMaxInFlight: 2, admissionMaxQueue: 3, admissionQueueTimeoutMs: 200, retryAfterSeconds: 1 });
    try {
      const dir = tempDir();
      const devices = 40;
      // A slow customer webhook keeps each request in the pipeline ~50 ms, so 40 devices at once
      // are far beyond 2 in flight + 3 queued.
      const hook = createServer((req, res) => {
        req.resume();
        req.on('end', () => setTimeout(() => res.writeHead(200, { 'content-type': 'application/json' }).end('{"allow":true}'), 50));
      });
      await new Promise<void>((r) => hook.listen(0, '127.0.0.1', r));
      after(() => hook.close());
      const hookAddr = hook.address();
      const webhookUrl = `http://127.0.0.1:${typeof hookAddr === 'object' && hookAddr ? hookAddr.port : 0}/`;
      const tokens: string[] = [];
      for (let i = 0; i < devices; i++) {
        const r = await srv.admin('POST', '/enrollments', { registrationId: `BURST-${i}`, attestation: { type: 'token' }, webhookUrl });
        tokens.push(r.json.token);
      }
      const csrs = Array.from({ length: devices }, (_, i) => makeCsr(dir, `b${i}`).csrPem);
      const statuses = new Map<number, number>();
      let deferredWithoutRetryAfter = 0;
      const device = async (i: number) => {
        for (let attempt = 0; attempt < 30; attempt++) {
          const r = await srv.request('POST', '/v1/provision', { body: { registrationId: `BURST-${i}`, csr: csrs[i] }, token: tokens[i]! });
          statuses.set(r.status, (statuses.get(r.status) ?? 0) + 1);
          if (r.status === 200) return r.json.deviceId as string;
          if (r.status !== 429 && r.status !== 503) throw new Error(`unexpected ${r.status}: ${r.text}`);
          const ra = Number(r.headers['retry-after']);
          if (!(ra >= 1)) deferredWithoutRetryAfter++;
          // Full jitter, scaled down for the test: the server's Retry-After bounds the wait.
          await sleep(Math.random() * Math.min(ra, 1) * 300);
        }
        throw new Error(`device ${i} never onboarded`);
      };
      const ids = await Promise.all(Array.from({ length: devices }, (_, i) => device(i)));
      assert.equal(new Set(ids).size, devices);
      assert.equal(deferredWithoutRetryAfter, 0);
      const seen = [...statuses.keys()].sort();
      for (const s of seen) assert.ok([200, 429, 503].includes(s), `status ${s} seen`);
      assert.ok((statuses.get(429) ?? 0) + (statuses.get(503) ?? 0) > 0, 'the burst was actually deferred');
      const metrics = await srv.request('GET', '/metrics');
      assert.match(metrics.text, /fleetpass_admission_rejected_total\{reason="(RATE_LIMITED|OVERLOADED)"\} [1-9]/);
      const listed = await srv.admin('GET', '/devices?limit=1000');
      assert.equal(listed.json.items.filter((d: { registrationId: string }) => d.registrationId.startsWith('BURST-')).length, devices);
    } finally {
      await srv.close();
    }
  });

  it('--trust-proxy-client-cert: the forwarded certificate counts only from a trusted proxy address', async () => {
    const dir = tempDir();
    const caPem = makeCa(dir, 'lb-ca');
    const leaf = makeLeaf(dir, 'lb-ca', 'lb-dev', 'LB-0001');
    const csr = makeCsr(dir, 'lb').csrPem;
    const trusted = await startTestServer(ctx().url, { trustProxyClientCert: true, trustedProxies: ['127.0.0.0/8'] });
    try {
      assert.equal((await trusted.admin('POST', '/enrollment-groups', { name: 'lb', attestation: { type: 'x509-ca', caCertificatePem: caPem } })).status, 201);
      const r = await trusted.request('POST', '/v1/provision', { body: { csr }, headers: { 'x-forwarded-client-cert': `Hash=abc;Cert="${encodeURIComponent(leaf.certPem)}";Subject="CN=LB-0001"` } });
      assert.equal(r.status, 200, r.text);
      assert.equal(r.json.registrationId, 'LB-0001');
      // Behind the proxy, a TLS client certificate from the proxy itself does not speak for a device.
      const noHeader = await trusted.request('POST', '/v1/provision', { body: { csr }, cert: leaf.certPem, key: leaf.keyPem });
      assert.equal(noHeader.json.error.code, 'ATTESTATION_MISSING');
    } finally {
      await trusted.close();
    }
    const untrusted = await startTestServer(ctx().url, { trustProxyClientCert: true, trustedProxies: ['192.0.2.10'] });
    try {
      const r = await untrusted.request('POST', '/v1/provision', { body: { csr }, headers: { 'x-forwarded-client-cert': `Cert="${encodeURIComponent(leaf.certPem)}"` } });
      assert.equal(r.status, 401);
      assert.equal(r.json.error.code, 'ATTESTATION_MISSING', 'a forged header from an untrusted address is ignored');
    } finally {
      await untrusted.close();
    }
  });
});

describe('forwarded client certificate formats', () => {
  const dir = tempDir();
  makeCa(dir, 'fmt-ca');
  const leaf = makeLeaf(dir, 'fmt-ca', 'fmt', 'FMT-1');
  const der = Buffer.from(leaf.certPem.replace(/-----[^-]+-----/g, '').replace(/\s+/g, ''), 'base64');
  it('decodes Envoy XFCC, URL-encoded PEM, one-line PEM and base64 DER to the same certificate', () => {
    for (const value of [
      `By=spiffe://lb;Hash=00;Cert="${encodeURIComponent(leaf.certPem)}"`,
      encodeURIComponent(leaf.certPem),
      leaf.certPem.replace(/\n/g, ' '),
      der.toString('base64'),
    ]) {
      const chain = parseForwardedCertificate(value);
      assert.equal(chain.length, 1, value.slice(0, 40));
      assert.ok(chain[0]!.equals(der), value.slice(0, 40));
    }
    assert.deepEqual(parseForwardedCertificate(''), []);
    assert.throws(() => parseForwardedCertificate('<<not a cert>>'), /cannot be decoded/);
  });
});
