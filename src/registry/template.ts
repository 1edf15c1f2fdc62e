import { fail } from '../core/errors.js';
import type { CertificateProfileSpec, TemplateBody } from './types.js';

/** What a template renders to for one device. */
export interface RenderedTemplate {
  deviceName: string;
  attributes: Record<string, string>;
  groups: string[];
  policyName: string | null;
  configuration: Record<string, unknown>;
  endpoints: Record<string, string>;
  certificate: { commonName: string; organization?: string; organizationalUnit?: string; dnsNames: string[]; uris: string[]; validityDays: number | null };
}

export const DEFAULT_TEMPLATE: TemplateBody = {
  deviceName: '${registrationId}',
  configuration: {},
};

const VAR = /\$\{([A-Za-z_][A-Za-z0-9_.-]*)\}/g;

/** Replaces `${name}` from vars; a missing variable is a PARAMETER_INVALID naming it. */
export function substitute(pattern: string, vars: Record<string, string>, where: string): string {
  return pattern.replace(VAR, (_m, name: string) => {
    const key = name.startsWith('parameters.') ? name.slice('parameters.'.length) : name;
    const v = vars[key];
    if (v === undefined) fail('PARAMETER_INVALID', `template ${where} needs parameter "${key}", which the device did not send`);
    return v;
  });
}

function substituteDeep(value: unknown, vars: Record<string, string>, where: string): unknown {
  if (typeof value === 'string') return substitute(value, vars, where);
  if (Array.isArray(value)) return value.map((v, i) => substituteDeep(v, vars, `${where}[${i}]`));
  if (value && typeof value === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) out[k] = substituteDeep(v, vars, `${where}.${k}`);
    return out;
  }
  return value;
}

/**
 * Compares dotted versions numerically (`1.10.0` > `1.9.3`); a leading `v` and a pre-release or
 * build suffix are tolerated (a pre-release sorts below its release). Returns <0, 0, >0.
 */
export function compareVersions(a: string, b: string): number {
  const parse = (v: string) => {
    const m = /^v?(\d+(?:\.\d+)*)(?:-([0-9A-Za-z.-]+))?(?:\+.*)?$/.exec(v.trim());
    if (!m) return undefined;
    return { nums: m[1]!.split('.').map(Number), pre: m[2] };
  };
  const pa = parse(a);
  const pb = parse(b);
  if (!pa || !pb) return NaN;
  const n = Math.max(pa.nums.length, pb.nums.length);
  for (let i = 0; i < n; i++) {
    const d = (pa.nums[i] ?? 0) - (pb.nums[i] ?? 0);
    if (d !== 0) return d;
  }
  if (pa.pre && !pb.pre) return -1;
  if (!pa.pre && pb.pre) return 1;
  return (pa.pre ?? '').localeCompare(pb.pre ?? '');
}

/** Parameters the pipeline itself reads: strictly typed, unlike template-specific ones. */
const KNOWN_PARAMETERS = ['model', 'firmwareVersion', 'region'] as const;

/**
 * String-valued provisioning parameters. The known ones must be short strings (PARAMETER_INVALID
 * otherwise); other scalars are stringified and nested objects ignored, so newer firmware that sends
 * more does not break.
 */
export function parameterVars(parameters: Record<string, unknown>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const k of KNOWN_PARAMETERS) {
    const v = parameters[k];
    if (v !== undefined && (typeof v !== 'string' || v.length === 0 || v.length > 128)) fail('PARAMETER_INVALID', `parameters.${k} must be a string of 1 to 128 characters`);
  }
  for (const [k, v] of Object.entries(parameters)) {
    if (typeof v === 'string' && v.length > 1024) fail('PARAMETER_INVALID', `parameters.${k} is longer than 1024 characters`);
    if (typeof v === 'string') out[k] = v;
    else if (typeof v === 'number' || typeof v === 'boolean') out[k] = String(v);
  }
  return out;
}

/** Applies the template's validation rules to the device's parameters; throws the matching reason code. */
export function validateParameters(body: TemplateBody, params: Record<string, string>): void {
  const v = body.validation;
  if (!v) return;
  for (const name of v.requiredParameters ?? []) {
    if (params[name] === undefined || params[name] === '') fail('PARAMETER_INVALID', `parameter "${name}" is required by the template`);
  }
  if (v.allowedRegions && v.allowedRegions.length > 0) {
    const region = params.region;
    if (region === undefined) fail('REGION_MISMATCH', `the template allows regions ${v.allowedRegions.join(', ')} but the device sent no region`);
    if (!v.allowedRegions.includes(region)) fail('REGION_MISMATCH', `region "${region}" is not allowed (allowed: ${v.allowedRegions.join(', ')})`);
  }
  if (v.allowedModels && v.allowedModels.length > 0) {
    const model = params.model;
    if (model === undefined || !v.allowedModels.includes(model)) fail('PARAMETER_INVALID', `model "${model ?? ''}" is not allowed (allowed: ${v.allowedModels.join(', ')})`);
  }
  if (v.minFirmware && Object.keys(v.minFirmware).length > 0) {
    const model = params.model;
    const min = (model !== undefined ? v.minFirmware[model] : undefined) ?? v.minFirmware['*'];
    if (min !== undefined) {
      const fw = params.firmwareVersion;
      if (fw === undefined) fail('FIRMWARE_UNSUPPORTED', `the template requires firmware >= ${min} but the device sent no firmwareVersion`);
      const cmp = compareVersions(fw, min);
      if (Number.isNaN(cmp)) fail('FIRMWARE_UNSUPPORTED', `firmwareVersion "${fw}" is not a dotted version; minimum is ${min}`);
      if (cmp < 0) fail('FIRMWARE_UNSUPPORTED', `firmware ${fw} is below the minimum ${min}${model ? ` for model ${model}` : ''}`);
    }
  }
  for (const [name, re] of Object.entries(v.parameterPatterns ?? {})) {
    const value = params[name];
    if (value !== undefined && !new RegExp(`^(?:${re})$`).test(value)) fail('PARAMETER_INVALID', `parameter "${name}" does not match ${re}`);
  }
}

/** Checks a template's own shape beyond JSON schema: patterns compile, versions parse. Used by the admin API. */
export function checkTemplateBody(body: TemplateBody): string | undefined {
  for (const [name, re] of Object.entries(body.validation?.parameterPatterns ?? {})) {
    try {
      new RegExp(re);
    } catch {
      return `validation.parameterPatterns.${name} is not a valid regular expression`;
    }
  }
  for (const [model, min] of Object.entries(body.validation?.minFirmware ?? {})) {
    if (Number.isNaN(compareVersions(min, min))) return `validation.minFirmware.${model} "${min}" is not a dotted version`;
  }
  return undefined;
}

export function renderTemplate(body: TemplateBody, vars: Record<string, string>): RenderedTemplate {
  const profile: CertificateProfileSpec = body.certificateProfile ?? {};
  const attributes: Record<string, string> = {};
  for (const [k, v] of Object.entries(body.attributes ?? {})) attributes[k] = substitute(v, vars, `attributes.${k}`);
  const endpoints: Record<string, string> = {};
  for (const [k, v] of Object.entries(body.endpoints ?? {})) endpoints[k] = substitute(v, vars, `endpoints.${k}`);
  return {
    deviceName: substitute(body.deviceName ?? '${registrationId}', vars, 'deviceName'),
    attributes,
    groups: [...new Set((body.groups ?? []).map((g, i) => substitute(g, vars, `groups[${i}]`)))],
    policyName: body.policy ? substitute(body.policy, vars, 'policy') : null,
    configuration: substituteDeep(body.configuration ?? {}, vars, 'configuration') as Record<string, unknown>,
    endpoints,
    certificate: {
      commonName: substitute(profile.commonName ?? '${deviceId}', vars, 'certificateProfile.commonName'),
      ...(profile.organization ? { organization: substitute(profile.organization, vars, 'certificateProfile.organization') } : {}),
      ...(profile.organizationalUnit ? { organizationalUnit: substitute(profile.organizationalUnit, vars, 'certificateProfile.organizationalUnit') } : {}),
      dnsNames: (profile.dnsNames ?? []).map((d, i) => substitute(d, vars, `certificateProfile.dnsNames[${i}]`)),
      uris: (profile.uris ?? ['urn:fleetpass:device:${deviceId}']).map((u, i) => substitute(u, vars, `certificateProfile.uris[${i}]`)),
      validityDays: profile.validityDays ?? null,
    },
  };
}
