/** A small client of the Fleetpass admin API (/admin/v1), over one keep-alive connection pool. */
import { Agent, request } from 'node:https';
import type { ResolvedTarget } from './protocols/transport.js';

export class AdminApiError extends Error {
  constructor(readonly status: number, readonly code: string, message: string) {
    super(message);
  }
}

export interface Page<T> {
  items: T[];
  next: string | null;
}

export interface RemoteDevice {
  id: string;
  registrationId: string;
  publicKeyFingerprint: string;
  status: string;
  enrollmentId: string;
  groups: string[];
}

export interface RemoteCertificate {
  id: string;
  deviceId: string | null;
  serial: string;
  status: string;
  publicKeyFingerprint: string;
}

export class AdminClient {
  private readonly agent: Agent;
  constructor(private readonly target: ResolvedTarget, private readonly token: string, maxSockets = 16) {
    this.agent = new Agent({ keepAlive: true, maxSockets, ca: target.caPem, ...(target.servername ? { servername: target.servername } : {}) });
  }

  call<T>(method: string, path: string, body?: unknown): Promise<T> {
    const payload = body === undefined ? undefined : JSON.stringify(body);
    return new Promise((resolve, reject) => {
      const req = request(
        {
          host: this.target.address,
          port: this.target.port,
          ...(this.target.servername ? { servername: this.target.servername } : {}),
          method,
          path: `${this.target.basePath}/admin/v1${path}`,
          headers: { host: this.target.hostHeader, authorization: `Bearer ${this.token}`, accept: 'application/json', ...(payload !== undefined ? { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(payload)) } : {}) },
          ca: this.target.caPem,
          agent: this.agent,
          timeout: 120_000,
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => {
            const text = Buffer.concat(chunks).toString('utf8');
            const status = res.statusCode ?? 0;
            let json: unknown;
            try {
              json = text ? JSON.parse(text) : undefined;
            } catch {
              json = undefined;
            }
            if (status >= 200 && status < 300) return resolve(json as T);
            const err = (json as { error?: { code?: string; message?: string } } | undefined)?.error;
            reject(new AdminApiError(status, err?.code ?? `HTTP_${status}`, `${method} /admin/v1${path}: ${status} ${err?.code ?? ''} ${err?.message ?? text.slice(0, 200)}`.trim()));
          });
          res.on('error', reject);
        },
      );
      req.on('timeout', () => req.destroy(new Error(`${method} /admin/v1${path}: no answer within 120 s`)));
      req.on('error', reject);
      req.end(payload);
    });
  }

  /** Every item of a cursor-paginated list, each passed through `pick` (keep only what is needed of 100,000 items). */
  async all<T, U = T>(path: string, pick: (item: T) => U = (item) => item as unknown as U, limit = 1000): Promise<U[]> {
    const out: U[] = [];
    const sep = path.includes('?') ? '&' : '?';
    let cursor: string | null = null;
    do {
      const page: Page<T> = await this.call<Page<T>>('GET', `${path}${sep}limit=${limit}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`);
      for (const item of page.items) out.push(pick(item));
      cursor = page.next;
    } while (cursor);
    return out;
  }

  close(): void {
    this.agent.destroy();
  }
}
