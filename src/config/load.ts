import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { isIP } from 'node:net';
import { SETTINGS, type FleetpassConfig, type SettingSpec } from './schema.js';

export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ConfigError';
  }
}

function parseValue(spec: SettingSpec, raw: unknown, source: string): unknown {
  const where = `${spec.key} (from ${source})`;
  if (raw === null) return null;
  switch (spec.kind) {
    case 'string':
      if (typeof raw !== 'string') throw new ConfigError(`${where} must be a string`);
      return raw;
    case 'bool':
      if (typeof raw === 'boolean') return raw;
      if (raw === 'true' || raw === '1') return true;
      if (raw === 'false' || raw === '0') return false;
      throw new ConfigError(`${where} must be true or false, got ${JSON.stringify(raw)}`);
    case 'int': {
      const n = typeof raw === 'number' ? raw : typeof raw === 'string' && /^-?\d+$/.test(raw.trim()) ? Number(raw) : NaN;
      if (!Number.isSafeInteger(n)) throw new ConfigError(`${where} must be a whole number, got ${JSON.stringify(raw)}`);
      if (spec.range && (n < spec.range[0] || n > spec.range[1])) throw new ConfigError(`${where} must be between ${spec.range[0]} and ${spec.range[1]}, got ${n}`);
      return n;
    }
    case 'list':
      if (Array.isArray(raw) && raw.every((x) => typeof x === 'string')) return raw;
      if (typeof raw === 'string') return raw.split(',').map((s) => s.trim()).filter(Boolean);
      throw new ConfigError(`${where} must be a comma-separated string or a list of strings`);
    case 'enum':
      if (typeof raw !== 'string' || !spec.choices?.includes(raw)) throw new ConfigError(`${where} must be one of ${spec.choices?.join(', ')}, got ${JSON.stringify(raw)}`);
      return raw;
  }
}

export interface LoadOptions {
  /** Values from command-line flags, keyed by flag name (e.g. `data-dir`). */
  flags?: Record<string, string | boolean | undefined>;
  env?: NodeJS.ProcessEnv;
  /** Overrides after everything else (tests, embedding). */
  overrides?: Partial<FleetpassConfig>;
}

/** Builds the frozen configuration, or throws ConfigError naming the setting and what is allowed. */
export function loadConfig(opts: LoadOptions = {}): Readonly<FleetpassConfig> {
  const env = opts.env ?? process.env;
  const flags = opts.flags ?? {};
  const out: Record<string, unknown> = {};
  for (const s of SETTINGS) out[s.key] = s.default;

  const file = (flags['config'] as string | undefined) ?? env.FLEETPASS_CONFIG;
  if (file) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(readFileSync(file, 'utf8'));
    } catch (e) {
      throw new ConfigError(`cannot read config file ${file}: ${(e as Error).message}`);
    }
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw new ConfigError(`config file ${file} must hold a JSON object`);
    for (const [k, v] of Object.entries(parsed)) {
      const spec = SETTINGS.find((s) => s.key === k);
      if (!spec) throw new ConfigError(`config file ${file}: unknown setting "${k}" (known: ${SETTINGS.map((s) => s.key).join(', ')})`);
      out[k] = parseValue(spec, v, file);
    }
  }
  for (const s of SETTINGS) {
    const v = env[s.env];
    if (v !== undefined && v !== '') out[s.key] = parseValue(s, v, `$${s.env}`);
  }
  for (const s of SETTINGS) {
    if (!s.flag) continue;
    const v = flags[s.flag];
    if (v !== undefined) out[s.key] = parseValue(s, v, `--${s.flag}`);
  }
  Object.assign(out, opts.overrides ?? {});
  const cfg = out as unknown as FleetpassConfig;
  cfg.dataDir = resolve(cfg.dataDir);
  if (cfg.trustProxyClientCert && cfg.trustedProxies.length === 0) {
    throw new ConfigError('trustProxyClientCert is on but trustedProxies is empty: name the load balancer addresses (--trusted-proxies 10.0.0.5,10.0.0.6)');
  }
  if (cfg.webhookSecretPrevious && !cfg.webhookSecret) {
    throw new ConfigError('FLEETPASS_WEBHOOK_SECRET_PREVIOUS is set without FLEETPASS_WEBHOOK_SECRET: while rotating, set the new secret in FLEETPASS_WEBHOOK_SECRET and the old one in FLEETPASS_WEBHOOK_SECRET_PREVIOUS');
  }
  for (const p of cfg.trustedProxies) {
    if (!isIP(p.split('/')[0] ?? '') || (p.includes('/') && !/^\d{1,3}$/.test(p.split('/')[1] ?? ''))) throw new ConfigError(`trustedProxies: "${p}" is not an IP address or CIDR block`);
  }
  return Object.freeze({ ...cfg, serverNames: Object.freeze([...cfg.serverNames]) as string[], trustedProxies: Object.freeze([...cfg.trustedProxies]) as string[] });
}

export function databaseUrlOf(cfg: Readonly<FleetpassConfig>): string {
  return cfg.databaseUrl ?? `sqlite:${resolve(cfg.dataDir, 'fleetpass.db')}`;
}

export function publicUrlOf(cfg: Readonly<FleetpassConfig>, boundPort?: number): string {
  return (cfg.publicUrl ?? `https://localhost:${boundPort ?? cfg.port}`).replace(/\/+$/, '');
}

/** Flag names the CLI accepts for `serve`/`migrate`, derived from the schema. */
export function flagSpecs(): Record<string, { type: 'string' | 'boolean' }> {
  const o: Record<string, { type: 'string' | 'boolean' }> = { config: { type: 'string' } };
  for (const s of SETTINGS) if (s.flag) o[s.flag] = { type: s.kind === 'bool' ? 'boolean' : 'string' };
  return o;
}
