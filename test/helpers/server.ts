import { request as httpsRequest } from 'node:https';
import { createServer } from 'node:net';
import { rmSync } from 'node:fs';
import { createHash, randomBytes } from 'node:crypto';
import { loadConfig } from '../../src/config/load.js';
import type { FleetpassConfig } from '../../src/config/schema.js';
import { startFleetpass, type Fleetpass } from '../../src/main.js';
import { tempDir } from './openssl.js';

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const a = s.address();
      const port = typeof a === 'object' && a ? a.port : 0;
      s.close(() => resolve(port));
    });
  });
}

export interface HttpResult {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  text: string;
  raw: Buffer;
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- test convenience: JSON of any shape
  json: any;
}

export interface RequestOptions {
  body?: unknown;
  rawBody?: string | Buffer;
  token?: string;
  headers?: Record<string, string>;
  cert?: string;
  key?: string;
  contentType?: string;
}

export interface TestServer {
  fp: Fleetpass;
  dataDir: string;
  port: number;
  url: string;
  adminToken: string;
  caPem: string;
  request(method: string, path: string, opts?: RequestOptions): Promise<HttpResult>;
  admin(method: string, path: string, body?: unknown, token?: string): Promise<HttpResult>;
  /** Stops the server and removes its data folder. */
  close(): Promise<void>;
  /** Stops the server, keeping the data folder for a restart. */
  stop(): Promise<void>;
}

/** A real Fleetpass on a free port over real TLS, on the given database URL, in a temp data folder. */
export async function startTestServer(databaseUrl: string | null, overrides: Partial<FleetpassConfig> = {}, dataDir = tempDir('fp-data-')): Promise<TestServer> {
  const port = overrides.port ?? (await freePort());
  const config = loadConfig({
    env: {},
    overrides: { dataDir, databaseUrl, port, host: '127.0.0.1', publicUrl: `https://localhost:${port}`, logLevel: 'silent', keyPassphrase: 'test-passphrase', ...overrides },
  });
  const fp = await startFleetpass(config);
  const caPem = fp.authority.chainPem;
  // A later server on an already bootstrapped database gets its own admin key for the first tenant.
  let adminToken = fp.adminToken;
  if (!adminToken) {
    adminToken = `fpk_${randomBytes(24).toString('base64url')}`;
    await fp.store.createApiKey({ id: `key_test${randomBytes(6).toString('hex')}`, tenantId: fp.tenantId, name: 'test admin', role: 'admin', tokenHash: createHash('sha256').update(adminToken).digest('hex'), createdAt: new Date().toISOString(), revokedAt: null });
  }
  const request = (method: string, path: string, opts: RequestOptions = {}): Promise<HttpResult> =>
    new Promise((resolve, reject) => {
      const payload = opts.rawBody ?? (opts.body !== undefined ? JSON.stringify(opts.body) : undefined);
      const headers: Record<string, string> = { ...(opts.headers ?? {}) };
      if (payload !== undefined) headers['content-type'] = opts.contentType ?? 'application/json';
      if (opts.token) headers.authorization = `Bearer ${opts.token}`;
      const req = httpsRequest(
        { host: '127.0.0.1', port, servername: 'localhost', method, path, ca: caPem, headers, agent: false, ...(opts.cert ? { cert: opts.cert, key: opts.key } : {}) },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => {
            const raw = Buffer.concat(chunks);
            const text = raw.toString('utf8');
            let json: unknown;
            try {
              json = text ? JSON.parse(text) : undefined;
            } catch {
              json = undefined;
            }
            resolve({ status: res.statusCode ?? 0, headers: res.headers, text, raw, json });
          });
        },
      );
      req.on('error', reject);
      if (payload !== undefined) req.write(payload);
      req.end();
    });
  return {
    fp,
    dataDir,
    port,
    url: `https://localhost:${port}`,
    adminToken,
    caPem,
    request,
    admin: (method, path, body, token) => request(method, `/admin/v1${path}`, { ...(body !== undefined ? { body } : {}), token: token ?? adminToken }),
    async close() {
      await fp.close();
      rmSync(dataDir, { recursive: true, force: true });
    },
    async stop() {
      await fp.close();
    },
  };
}
