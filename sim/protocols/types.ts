/**
 * A device-facing door of Fleetpass, seen from the device. Each protocol turns one onboarding
 * attempt into one of three answers; the runner owns retries, backoff and accounting, so a new door
 * (EST, MQTT, …) only has to implement `attempt`.
 */
import type { DeviceParameters } from '../plan.js';

export type DeviceCredential =
  | { type: 'client-certificate'; certPem: string; keyPem: string }
  /** Symmetric key derived from an enrollment group's key; `group` is that group's name (EST label). */
  | { type: 'sas'; idScope: string; deviceKey: string; group: string }
  | { type: 'token'; token: string }
  | { type: 'none' };

export interface OnboardRequest {
  registrationId: string;
  /** PKCS#10, PEM (possibly deliberately malformed). */
  csrPem: string;
  parameters: DeviceParameters;
  credential: DeviceCredential;
}

export interface AttemptOptions {
  /** Fault injection: drop the connection after the TLS handshake, before any byte of the request. */
  resetBeforeSend: boolean;
  timeoutMs: number;
}

export type AttemptResult =
  /** The server issued (or re-sent) a certificate. deviceId is null on doors that do not carry it (EST). */
  | { kind: 'issued'; status: number; deviceId: string | null; certificatePem: string; serial: string | null }
  /** The server answered with an error; code is the Fleetpass reason code when the door carries one. */
  | { kind: 'error'; status: number; code: string; retryAfterMs: number | null; message: string }
  /** No answer: connection refused or reset, timeout, TLS failure, injected reset. */
  | { kind: 'network'; code: string; message: string };

export interface DeviceProtocol {
  readonly name: string;
  /** Whether the door carries provisioning parameters (model, firmware, region) next to the CSR. */
  readonly carriesParameters: boolean;
  attempt(request: OnboardRequest, options: AttemptOptions): Promise<AttemptResult>;
  close(): void;
}

export interface ProtocolTarget {
  url: URL;
  /** PEM bundle the device pins (the server's CA chain). */
  caPem: string;
  /** Reuse TLS connections across attempts (benchmarks). Default: a fresh connection per attempt, as real devices do. */
  keepAlive: boolean;
  maxSockets: number;
}

/** Parses Retry-After (seconds or an HTTP date) to milliseconds. */
export function retryAfterMs(header: string | string[] | undefined): number | null {
  const v = Array.isArray(header) ? header[0] : header;
  if (v === undefined || v === '') return null;
  if (/^\d+$/.test(v.trim())) return Number(v.trim()) * 1000;
  const at = Date.parse(v);
  return Number.isNaN(at) ? null : Math.max(0, at - Date.now());
}
