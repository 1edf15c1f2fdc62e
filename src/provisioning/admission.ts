import { FleetpassError } from '../core/errors.js';

export interface AdmissionOptions {
  maxInFlight: number;
  maxQueue: number;
  queueTimeoutMs: number;
  retryAfterSeconds: number;
}

export interface AdmissionStats {
  inFlight: number;
  queued: number;
  rejected: number;
}

/**
 * Bounds provisioning work in flight. Up to maxInFlight run at once, up to maxQueue wait (FIFO);
 * beyond that the caller gets RATE_LIMITED at once, and a waiter that is not served within
 * queueTimeoutMs gets OVERLOADED — both with a jittered Retry-After, never a hang.
 */
export class AdmissionControl {
  private inFlight = 0;
  private readonly waiters: Array<{ resolve: () => void; reject: (e: Error) => void; timer: NodeJS.Timeout }> = [];
  private closed = false;
  private rejectedCount = 0;
  onReject: ((code: 'RATE_LIMITED' | 'OVERLOADED') => void) | undefined;

  constructor(private readonly opts: AdmissionOptions) {}

  stats(): AdmissionStats {
    return { inFlight: this.inFlight, queued: this.waiters.length, rejected: this.rejectedCount };
  }

  /** Jitter spreads a burst of deferred devices over [base, 2*base) instead of a synchronized retry wave. */
  retryAfter(): number {
    const base = this.opts.retryAfterSeconds;
    return base + Math.floor(Math.random() * base);
  }

  private reject(code: 'RATE_LIMITED' | 'OVERLOADED', message: string): FleetpassError {
    this.rejectedCount++;
    this.onReject?.(code);
    return new FleetpassError(code, message, { retryAfterSeconds: this.retryAfter() });
  }

  async run<T>(fn: () => Promise<T>): Promise<T> {
    await this.acquire();
    try {
      return await fn();
    } finally {
      this.release();
    }
  }

  private acquire(): Promise<void> {
    if (this.closed) return Promise.reject(this.reject('OVERLOADED', 'the server is shutting down'));
    if (this.inFlight < this.opts.maxInFlight) {
      this.inFlight++;
      return Promise.resolve();
    }
    if (this.waiters.length >= this.opts.maxQueue) {
      return Promise.reject(this.reject('RATE_LIMITED', `${this.inFlight} provisioning requests in flight and ${this.waiters.length} queued`));
    }
    return new Promise<void>((resolve, reject) => {
      const waiter = {
        resolve,
        reject,
        timer: setTimeout(() => {
          const i = this.waiters.indexOf(waiter);
          if (i >= 0) this.waiters.splice(i, 1);
          reject(this.reject('OVERLOADED', `no provisioning slot became free within ${this.opts.queueTimeoutMs} ms`));
        }, this.opts.queueTimeoutMs),
      };
      this.waiters.push(waiter);
    });
  }

  private release(): void {
    const next = this.waiters.shift();
    if (next) {
      clearTimeout(next.timer);
      next.resolve(); // the slot passes straight to the next waiter
    } else {
      this.inFlight--;
    }
  }

  /** Stops admitting; queued waiters are told to retry elsewhere. In-flight work finishes. */
  close(): void {
    this.closed = true;
    for (const w of this.waiters.splice(0)) {
      clearTimeout(w.timer);
      w.reject(this.reject('OVERLOADED', 'the server is shutting down'));
    }
  }
}
