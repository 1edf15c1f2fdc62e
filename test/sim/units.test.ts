/** The simulator's pure parts: fault specs, fleet plans, schedules, accounting and EST answers. */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { FAULTS, FaultSpecError, REALISTIC, parseFaultSpec } from '../../sim/faults.js';
import { REASON_CODES } from '../../src/core/errors.js';
import { planFleet, apportion } from '../../sim/plan.js';
import { arrivalTimes, retryDelayMs, isRetryable } from '../../sim/schedule.js';
import { buildReport, verdictOf } from '../../sim/report.js';
import { runFleet, type DeviceRecord, type RunResult } from '../../sim/runner.js';
import type { DeviceProtocol } from '../../sim/protocols/types.js';
import type { ManufacturedDevice } from '../../sim/setup.js';
import { certificateFromEstAnswer } from '../../sim/protocols/est.js';
import { buildCsr, createCa, issueFactoryCertificate, newEcKey, csrPem, keyFingerprint } from '../../sim/crypto.js';
import { PinnedTrust } from '../../sim/trust.js';
import { parseMix, parseSimulateArgs } from '../../sim/cli.js';
import { summarize, sparkline } from '../../sim/stats.js';
import { makeCa, makeLeaf, openssl, tempDir } from '../helpers/openssl.js';

describe('simulator: fault specs', () => {
  it('parses none, realistic, counts, fractions and percentages', () => {
    assert.deepEqual(parseFaultSpec('none'), {});
    assert.deepEqual(parseFaultSpec('realistic'), REALISTIC);
    assert.deepEqual(parseFaultSpec('reset=3, weak-key=0.01,region=2%'), { reset: { count: 3 }, 'weak-key': { rate: 0.01 }, region: { rate: 0.02 } });
    for (const rate of Object.values(REALISTIC)) assert.ok('rate' in rate && rate.rate >= 0.005 && rate.rate <= 0.02);
  });
  it('rejects unknown faults and impossible amounts', () => {
    assert.throws(() => parseFaultSpec('nope=1'), FaultSpecError);
    assert.throws(() => parseFaultSpec('reset=1.5'), FaultSpecError);
    assert.throws(() => parseFaultSpec('reset=200%'), FaultSpecError);
    assert.throws(() => parseFaultSpec('reset'), FaultSpecError);
  });
});

describe('simulator: layering', () => {
  it('imports nothing from src/ (it speaks only the wire protocols)', () => {
    const root = new URL('../../../sim/', import.meta.url);
    const files = readdirSync(root, { recursive: true, encoding: 'utf8' }).filter((f) => f.endsWith('.ts'));
    assert.ok(files.length > 10);
    for (const f of files) {
      const text = readFileSync(new URL(f, root), 'utf8');
      for (const m of text.matchAll(/from\s+'([^']+)'/g)) assert.ok(!/(^|\/)src\//.test(m[1]!) && !m[1]!.startsWith('../'.repeat(f.split('/').length)), `${f} imports ${m[1]}`);
    }
  });
});

describe('simulator: expectations against the reason-code registry', () => {
  // The simulator imports nothing from src/; this keeps its copy of the wire contract honest.
  it('expects registered codes with their HTTP status', () => {
    for (const f of Object.values(FAULTS)) {
      if (f.expect.kind !== 'reject') continue;
      const info = (REASON_CODES as Record<string, { httpStatus: number }>)[f.expect.code];
      assert.ok(info, `${f.name}: ${f.expect.code} is not a registered code`);
      assert.equal(info.httpStatus, f.expect.status, f.name);
    }
  });
  it('retries exactly the codes the registry calls retryable, except those that change only in days', () => {
    const later = new Set(['RENEWAL_NOT_DUE']); // renewal windows: no answer an onboarding device can wait for
    for (const [code, info] of Object.entries(REASON_CODES as Record<string, { httpStatus: number; retryable: boolean }>)) {
      assert.equal(isRetryable(info.httpStatus, code), info.retryable && !later.has(code), code);
    }
  });
});

describe('simulator: fleet plan', () => {
  it('is exact, deterministic, and gives clones a clean victim of the same credential type', () => {
    const opts = { devices: 1000, mix: { x509: 6, 'symmetric-key': 3, token: 1 }, faults: REALISTIC, runId: 'abc', seed: 42 };
    const a = planFleet(opts);
    const b = planFleet(opts);
    assert.deepEqual(a, b);
    assert.deepEqual(a.scenarioCounts, { x509: 600, 'symmetric-key': 300, token: 100 });
    assert.deepEqual(a.warnings, []);
    for (const [fault, amount] of Object.entries(REALISTIC)) {
      assert.equal(a.faultCounts[fault as keyof typeof REALISTIC], Math.round(('rate' in amount ? amount.rate : 0) * 1000), fault);
      assert.equal(a.devices.filter((d) => d.fault === fault).length, a.faultCounts[fault as keyof typeof REALISTIC]);
    }
    const victims = new Set<number>();
    for (const d of a.devices.filter((x) => x.cloneOf !== null)) {
      const v = a.devices[d.cloneOf!]!;
      assert.equal(v.fault, null);
      assert.equal(v.scenario, d.scenario);
      assert.equal(v.registrationId, d.registrationId);
      assert.ok(!victims.has(v.index), 'a device is copied at most once');
      victims.add(v.index);
    }
    for (const d of a.devices.filter((x) => x.fault === 'replayed-token')) assert.equal(d.scenario, 'token');
    for (const d of a.devices.filter((x) => x.fault === 'expired-cert' || x.fault === 'wrong-ca')) assert.equal(d.scenario, 'x509');
    assert.equal(new Set(a.devices.filter((d) => d.cloneOf === null).map((d) => d.registrationId)).size, 1000 - a.devices.filter((d) => d.cloneOf !== null).length);
    for (const d of a.devices.filter((x) => x.fault === 'firmware')) assert.match(d.parameters.firmwareVersion, /^1\./);
    assert.notDeepEqual(planFleet({ ...opts, seed: 43 }).devices.map((d) => d.fault), a.devices.map((d) => d.fault));
  });
  it('warns and places fewer when the fleet cannot carry a fault', () => {
    const p = planFleet({ devices: 10, mix: { x509: 0, 'symmetric-key': 1, token: 0 }, faults: { 'expired-cert': { count: 2 }, 'duplicate-id': { count: 8 } }, runId: 'x', seed: 1 });
    assert.equal(p.faultCounts['expired-cert'], undefined);
    assert.equal(p.faultCounts['duplicate-id'], 5);
    assert.equal(p.warnings.length, 2);
  });
  it('apportions by largest remainder', () => {
    assert.deepEqual(apportion(10, { a: 1, b: 1, c: 1 }), { a: 4, b: 3, c: 3 });
    assert.deepEqual(parseMix('token'), { x509: 0, 'symmetric-key': 0, token: 1 });
    assert.deepEqual(parseMix('x509=8,token=2'), { x509: 8, 'symmetric-key': 0, token: 2 });
  });
});

describe('simulator: schedules and retries', () => {
  const rnd = () => 0.5;
  it('spreads arrivals as burst, ramp and poisson', () => {
    assert.ok(arrivalTimes('burst', 100, { rampSeconds: 10 }, rnd).every((t) => t === 0));
    const ramp = arrivalTimes('ramp', 1000, { rate: 100, rampSeconds: 10 }, rnd);
    assert.equal(ramp[0], 0);
    assert.ok(Math.abs(ramp[999]! - 20_000) < 50, 'a ramp to 100/s of 1000 devices lasts 20 s');
    for (let i = 1; i < ramp.length; i++) assert.ok(ramp[i]! >= ramp[i - 1]!);
    let seed = 7;
    const lcg = () => ((seed = (seed * 16807) % 2147483647) / 2147483647);
    const poisson = arrivalTimes('poisson', 5000, { rate: 200, rampSeconds: 10 }, lcg);
    const rate = 5000 / (poisson[4999]! / 1000);
    assert.ok(rate > 180 && rate < 220, `poisson rate ${rate}`);
  });
  it('backs off with full jitter under the cap and never earlier than Retry-After', () => {
    const policy = { maxAttempts: 10, baseMs: 100, capMs: 1000 };
    assert.equal(retryDelayMs(policy, 1, null, () => 0.999), 99.9);
    assert.equal(retryDelayMs(policy, 3, null, () => 0.5), 200);
    assert.equal(retryDelayMs(policy, 20, null, () => 0.999), 999);
    assert.equal(retryDelayMs(policy, 1, 3000, () => 0.5), 3000);
    assert.equal(retryDelayMs(policy, 1, null, () => 0), 0);
  });
  it('retries deferrals and server trouble, never a final rejection', () => {
    assert.ok(isRetryable(429, 'RATE_LIMITED'));
    assert.ok(isRetryable(503, 'OVERLOADED'));
    assert.ok(isRetryable(500, 'INTERNAL_ERROR'));
    assert.ok(isRetryable(502, 'HTTP_502'));
    assert.ok(!isRetryable(409, 'REGISTRATION_ID_COLLISION'));
    assert.ok(!isRetryable(401, 'TOKEN_REPLAYED'));
  });
  it('summarizes with nearest-rank percentiles and draws sparklines', () => {
    const s = summarize(Array.from({ length: 100 }, (_, i) => i + 1))!;
    assert.deepEqual([s.p50, s.p95, s.p99, s.max, s.mean], [50, 95, 99, 100, 50.5]);
    assert.equal(summarize([]), null);
    assert.equal(sparkline([0, 1, 8]), ' ▂█');
  });
});

describe('simulator: accounting', () => {
  const base = (over: Partial<DeviceRecord>): DeviceRecord => ({
    index: 0, registrationId: 'r', scenario: 'x509', fault: null, expect: { kind: 'onboard' }, outcome: 'onboarded', code: null, status: 200, attempts: 1,
    arrivedMs: 0, startedMs: 0, finishedMs: 100, deviceId: 'dev_1', serial: 'aa', keyFingerprint: 'f', lostSerial: null, resetsInjected: 0, certificateProblem: null, note: null, ...over,
  });
  const reject = (code: string) => ({ kind: 'reject' as const, code, status: 400 });
  it('classifies every combination of expectation and outcome', () => {
    assert.equal(verdictOf(base({})), 'onboarded');
    assert.equal(verdictOf(base({ outcome: 'rejected', code: 'KEY_TOO_WEAK' })), 'wrongly-rejected');
    assert.equal(verdictOf(base({ expect: reject('KEY_TOO_WEAK'), outcome: 'rejected', code: 'KEY_TOO_WEAK' })), 'correctly-rejected');
    assert.equal(verdictOf(base({ expect: reject('KEY_TOO_WEAK'), outcome: 'rejected', code: 'CSR_INVALID' })), 'rejected-wrong-code');
    assert.equal(verdictOf(base({ expect: reject('KEY_TOO_WEAK') })), 'wrongly-accepted');
    assert.equal(verdictOf(base({ outcome: 'lost' })), 'lost');
    assert.equal(verdictOf(base({ outcome: 'skipped' })), 'skipped');
  });
  it('adds the counters up, counts every failure and fails the run on any of them', () => {
    const records: DeviceRecord[] = [
      base({ index: 0 }),
      base({ index: 1, fault: 'lost-response', lostSerial: 'aa', attempts: 2, finishedMs: 1500 }),
      base({ index: 2, fault: 'lost-response', lostSerial: 'bb', attempts: 2 }),
      base({ index: 3, fault: 'weak-key', expect: reject('KEY_TOO_WEAK'), outcome: 'rejected', code: 'KEY_TOO_WEAK' }),
      base({ index: 4, fault: 'weak-key', expect: reject('KEY_TOO_WEAK'), outcome: 'rejected', code: 'CSR_INVALID' }),
      base({ index: 5, fault: 'firmware', expect: reject('FIRMWARE_UNSUPPORTED') }),
      base({ index: 6, outcome: 'rejected', code: 'ENROLLMENT_DISABLED' }),
      base({ index: 7, fault: 'reset', outcome: 'lost', code: 'INJECTED_RESET', resetsInjected: 1 }),
      base({ index: 8, fault: 'duplicate-id', expect: reject('REGISTRATION_ID_COLLISION'), outcome: 'skipped' }),
      base({ index: 9, certificateProblem: 'the certificate is not for the key of the CSR' }),
    ];
    const plan = { runId: 'x', devices: [], faultCounts: {}, scenarioCounts: { x509: 10, 'symmetric-key': 0, token: 0 }, warnings: [] };
    const result: RunResult = { records, answers: { OK: 7 }, requestLatenciesMs: Float64Array.from([1, 2, 3]), attempts: 12, elapsedMs: 2000, certificateCheckMs: 5 };
    const run = { target: 't', protocol: 'https', runId: 'x', seed: 1, pattern: 'burst', rate: null, concurrency: 1, keepAlive: false, maxAttempts: 3, faults: 'x' };
    const r = buildReport(run, plan, { adminSetup: 0, manufacturing: 0, tokens: 0 }, result, { ran: false, reason: 'test' });
    assert.deepEqual(r.devices, { planned: 0, attempted: 9, onboarded: 4, correctlyRejected: 1, wronglyRejected: 1, rejectedWithWrongCode: 1, wronglyAccepted: 1, lost: 1, skipped: 1 });
    assert.deepEqual(r.retrySafety, { lostResponses: 2, sameCertificateOnRetry: 1, differentCertificateOnRetry: 1, resetsInjected: 1, onboardedAfterReset: 0 });
    assert.equal(r.certificateProblems, 1);
    // wrongly rejected, wrong code, wrongly accepted, lost, a bad certificate, a different certificate on retry
    assert.equal(r.expectationFailures, 6);
    assert.equal(r.passed, false);
    assert.deepEqual(r.attemptsPerDevice.histogram, { '1': 7, '2': 2 });
    assert.equal(r.throughput.onboarded.reduce((a, b) => a + b, 0), 5);
    const weak = r.faults.find((f) => f.fault === 'weak-key')!;
    assert.deepEqual([weak.devices, weak.asExpected, weak.failed], [2, 1, 1]);
    assert.equal(r.failures.length, 6);
  });
});

describe('simulator: device cryptography', () => {
  it('makes factory certificates openssl verifies, and checks issued certificates against the pinned bundle', async () => {
    const dir = tempDir();
    const ca = await createCa('Acme', 'Acme Factory CA');
    const key = await newEcKey();
    writeFileSync(join(dir, 'ca.pem'), ca.pem);
    writeFileSync(join(dir, 'leaf.pem'), issueFactoryCertificate(ca, key.spki, 'SN-1', new Date(Date.now() - 1000), new Date(Date.now() + 86400_000)));
    assert.match(openssl(['verify', '-CAfile', 'ca.pem', '-purpose', 'sslclient', 'leaf.pem'], { cwd: dir }), /leaf.pem: OK/);
    writeFileSync(join(dir, 'dev.csr'), csrPem(buildCsr(key, 'SN-1')));
    openssl(['req', '-in', 'dev.csr', '-verify', '-noout'], { cwd: dir });
    assert.equal(keyFingerprint(key.spki).length, 64);

    // A certificate issued by the bundle's CA for the device's key passes; another key or CA does not.
    const issued = issueFactoryCertificate(ca, key.spki, 'SN-1', new Date(Date.now() - 1000), new Date(Date.now() + 86400_000));
    const trust = new PinnedTrust(ca.pem);
    const good = trust.inspectIssued(issued, key.spki);
    assert.equal(good.problem, null);
    assert.equal(trust.verifyIssued(good.signed!), null);
    const otherKey = trust.inspectIssued(issued, (await newEcKey()).spki);
    assert.match(otherKey.problem!, /not for the key/);
    assert.equal(otherKey.signed, null, 'nothing left to verify');
    // A same-named impostor CA passes the first half (name and key), not the signature.
    const other = await createCa('Acme', 'Acme Factory CA');
    const impostor = new PinnedTrust(other.pem).inspectIssued(issued, key.spki);
    assert.equal(impostor.problem, null);
    assert.match(new PinnedTrust(other.pem).verifyIssued(impostor.signed!)!, /not issued by a CA of the pinned bundle/);

    // The runner checks every issued certificate's signature once the last device has its answer.
    const keys = [key, await newEcKey(), await newEcKey()];
    const devices: ManufacturedDevice[] = keys.map((k, index) => ({
      plan: { index, registrationId: `SN-${index}`, scenario: 'token', fault: null, cloneOf: null, parameters: { model: 'm', firmwareVersion: '1.0.0', region: 'eu' } },
      csrPem: csrPem(buildCsr(k, `SN-${index}`)),
      keyFingerprint: keyFingerprint(k.spki),
      spki: k.spki,
      credential: { type: 'token', token: 't' },
    }));
    // Device 0 gets a good certificate, device 1 one from a same-named impostor CA, device 2 one for another key.
    const answers = [issued, issueFactoryCertificate(other, keys[1]!.spki, 'SN-1', new Date(Date.now() - 1000), new Date(Date.now() + 86400_000)), issued];
    const stand: DeviceProtocol = {
      name: 'stand-in',
      carriesParameters: true,
      attempt: async (req) => ({ kind: 'issued', status: 200, deviceId: req.registrationId, certificatePem: answers[Number(req.registrationId.slice(3))]!, serial: null }),
      close: () => undefined,
    };
    const checks: Array<[number, number]> = [];
    const events: string[] = [];
    let answered = 0;
    const counting: DeviceProtocol = { ...stand, attempt: async (req, o) => stand.attempt(req, o).finally(() => answered++) };
    const run = await runFleet(devices, counting, {
      concurrency: 2, arrivals: new Float64Array(3), retry: { maxAttempts: 1, baseMs: 1, capMs: 1 }, timeoutMs: 1000, seed: 1, trust,
      onRunEnd: () => events.push(`run end after ${answered} answers`),
      onCertificateCheck: (d, t) => {
        checks.push([d, t]);
        events.push('check');
      },
    });
    // The benchmark reads CPU counters at onRunEnd: after the last answer, before any signature check.
    assert.deepEqual(events.slice(0, 2), ['run end after 3 answers', 'check']);
    assert.equal(events.filter((e) => e.startsWith('run end')).length, 1);
    assert.deepEqual(run.records.map((r) => r.outcome), ['onboarded', 'onboarded', 'onboarded']);
    assert.equal(run.records[0]!.certificateProblem, null);
    assert.match(run.records[1]!.certificateProblem!, /not issued by a CA of the pinned bundle/);
    assert.match(run.records[2]!.certificateProblem!, /not for the key/);
    assert.deepEqual(checks.at(-1), [2, 2], 'two signatures checked after the run (the third failed the key check)');

    // The server check: the host must be named, the issuer in the bundle.
    const peer = new X509Certificate(issued);
    assert.match(trust.checkServer(peer, 'localhost')!, /does not name localhost/);
    assert.match(new PinnedTrust(other.pem).checkServer(peer, 'SN-1')!, /not issued by a CA of the pinned bundle/);
    assert.equal(trust.checkServer(peer, 'SN-1'), null);
    assert.match(trust.checkServer(undefined, 'SN-1')!, /no certificate/);
  });

  it('reads the certificate out of an EST (certs-only PKCS#7) answer', () => {
    const dir = tempDir();
    makeCa(dir, 'est-ca');
    const leaf = makeLeaf(dir, 'est-ca', 'dev', 'SN-EST');
    openssl(['crl2pkcs7', '-nocrl', '-certfile', leaf.certFile, '-outform', 'DER', '-out', 'p7.der'], { cwd: dir });
    const der = readFileSync(join(dir, 'p7.der'));
    const expectedSerial = openssl(['x509', '-in', leaf.certFile, '-noout', '-serial']).trim().split('=')[1]!.toLowerCase().replace(/^0+/, '');
    for (const body of [Buffer.from(der.toString('base64').replace(/(.{64})/g, '$1\n')), der]) {
      const got = certificateFromEstAnswer(body);
      assert.equal(got.serial, expectedSerial);
      assert.match(got.certificatePem, /^-----BEGIN CERTIFICATE-----/);
    }
  });
});

describe('simulator: command line', () => {
  it('parses the documented options and refuses bad ones', () => {
    const { options, json } = parseSimulateArgs(['--target', 'https://h:1', '--token', 't', '--devices', '5', '--concurrency', '2', '--faults', 'realistic', '--pattern', 'poisson', '--rate', '50', '--json', '--protocol', 'est'], {});
    assert.equal(json, true);
    assert.equal(options.devices, 5);
    assert.equal(options.pattern, 'poisson');
    assert.equal(options.rate, 50);
    assert.equal(options.protocol, 'est');
    assert.deepEqual(options.faults, REALISTIC);
    assert.equal(parseSimulateArgs(['--target', 'https://h:1'], { FLEETPASS_ADMIN_TOKEN: 'env' }).options.token, 'env');
    assert.throws(() => parseSimulateArgs(['--target', 'http://h:1', '--token', 't'], {}), /https/);
    assert.throws(() => parseSimulateArgs(['--target', 'https://h:1'], {}), /token/);
    assert.throws(() => parseSimulateArgs(['--target', 'https://h:1', '--token', 't', '--devices', '0'], {}), /devices/);
    assert.throws(() => parseSimulateArgs(['--target', 'https://h:1', '--token', 't', '--pattern', 'wave'], {}), /pattern/);
    assert.throws(() => parseSimulateArgs(['--target', 'https://h:1', '--token', 't', '--faults', 'gremlins=1'], {}), /unknown fault/);
  });
});
