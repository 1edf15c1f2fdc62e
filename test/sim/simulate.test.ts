/**
 * The simulator's own accounting against a real server, on every store: small fleets with known
 * faults, where every counter of the report is known in advance.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { describeEachBackend } from '../helpers/backends.js';
import { makeCsr, tempDir } from '../helpers/openssl.js';
import { startTestServer, type TestServer } from '../helpers/server.js';
import { runSimulation, type SimulationOptions } from '../../sim/simulate.js';
import { createCa } from '../../sim/crypto.js';
import type { SimulationReport } from '../../sim/report.js';

const CLI = new URL('../../src/cli/index.js', import.meta.url).pathname;
const FAST = { backoffBaseMs: 20, backoffCapMs: 200, timeoutMs: 20_000 } as const;

describeEachBackend('fleet simulator accounting', (ctx) => {
  let srv: TestServer;
  before(async () => {
    srv = await startTestServer(ctx().url);
  });
  after(async () => {
    await srv?.close();
  });
  const sim = (o: Omit<SimulationOptions, 'target' | 'token' | 'caPem'>) => runSimulation({ target: srv.url, token: srv.adminToken, caPem: srv.caPem, ...FAST, ...o });

  for (const protocol of ['https', 'est'] as const) it(`counts a run with every fault exactly over ${protocol}, and the server agrees`, async () => {
    const r = await sim({
      protocol,
      devices: 40,
      concurrency: 8,
      seed: 11,
      mix: { x509: 2, 'symmetric-key': 1, token: 1 },
      faults: {
        reset: { count: 2 },
        'lost-response': { count: 2 },
        'duplicate-id': { count: 2 },
        'expired-cert': { count: 1 },
        'wrong-ca': { count: 1 },
        firmware: { count: 1 },
        region: { count: 1 },
        'malformed-csr': { count: 1 },
        'replayed-token': { count: 1 },
        'weak-key': { count: 1 },
        'missing-credential': { count: 1 },
      },
    });
    assert.deepEqual(r.devices, { planned: 40, attempted: 40, onboarded: 30, correctlyRejected: 10, wronglyRejected: 0, rejectedWithWrongCode: 0, wronglyAccepted: 0, lost: 0, skipped: 0 }, JSON.stringify(r.failures));
    assert.deepEqual(r.scenarios, { x509: 20, 'symmetric-key': 10, token: 10 });
    assert.deepEqual(r.answersByCode, {
      OK: 30,
      INJECTED_LOST_RESPONSE: 2,
      INJECTED_RESET: 2,
      REGISTRATION_ID_COLLISION: 2,
      ATTESTATION_MISSING: 1,
      CERTIFICATE_EXPIRED: 1,
      CERTIFICATE_UNTRUSTED: 1,
      CSR_INVALID: 1,
      FIRMWARE_UNSUPPORTED: 1,
      KEY_TOO_WEAK: 1,
      REGION_MISMATCH: 1,
      TOKEN_REPLAYED: 1,
    });
    assert.deepEqual(r.rejectionsByCode, { REGISTRATION_ID_COLLISION: 2, ATTESTATION_MISSING: 1, CERTIFICATE_EXPIRED: 1, CERTIFICATE_UNTRUSTED: 1, CSR_INVALID: 1, FIRMWARE_UNSUPPORTED: 1, KEY_TOO_WEAK: 1, REGION_MISMATCH: 1, TOKEN_REPLAYED: 1 });
    assert.deepEqual(r.retrySafety, { lostResponses: 2, sameCertificateOnRetry: 2, differentCertificateOnRetry: 0, resetsInjected: 2, onboardedAfterReset: 2 });
    assert.deepEqual(r.attemptsPerDevice, { mean: 1.1, max: 2, histogram: { '1': 36, '2': 4 } });
    assert.equal(r.certificateProblems, 0);
    assert.equal(r.faults.length, 11);
    for (const f of r.faults) {
      assert.equal(f.failed, 0, f.fault);
      assert.equal(f.asExpected, f.devices, f.fault);
    }
    assert.equal(r.timeToOnboardMs!.count, 30);
    assert.equal(r.requestLatencyMs!.count, 42); // 44 attempts, less the 2 resets that never sent a request
    assert.equal(r.throughput.onboarded.reduce((a, b) => a + b, 0), 30);
    assert.ok(r.crossCheck.ran);
    assert.deepEqual(
      { listed: r.crossCheck.devicesListed, certs: r.crossCheck.certificatesListed, verified: r.crossCheck.verified, clean: r.crossCheck.rejectedClean, lostReg: r.crossCheck.lostButRegistered, problems: r.crossCheck.problems },
      { listed: 30, certs: 30, verified: 30, clean: 10, lostReg: 0, problems: [] },
    );
    assert.equal(r.expectationFailures, 0);
    assert.equal(r.passed, true);

    // The server's attempt log saw the same rejections (those after attestation: before it, the
    // attempt belongs to no tenant yet and is not listed to a tenant's key).
    const attempts = await srv.admin('GET', '/attempts?outcome=failure&limit=1000');
    const onServer: Record<string, number> = {};
    for (const a of attempts.json.items as Array<{ reasonCode: string; registrationId: string | null }>) {
      if (a.registrationId?.startsWith(`sim-${r.run.runId}-`)) onServer[a.reasonCode] = (onServer[a.reasonCode] ?? 0) + 1;
    }
    for (const code of ['REGISTRATION_ID_COLLISION', 'CSR_INVALID', 'FIRMWARE_UNSUPPORTED', 'KEY_TOO_WEAK', 'REGION_MISMATCH', 'TOKEN_REPLAYED']) assert.equal(onServer[code], (r.rejectionsByCode as Record<string, number>)[code], code);
    // 30 devices onboarded, 2 of them twice (the lost answers); the 2 resets never reached the server.
    const ok = await srv.admin('GET', '/attempts?outcome=success&limit=1000');
    const mine = (ok.json.items as Array<{ registrationId: string | null; protocol: string }>).filter((a) => a.registrationId?.startsWith(`sim-${r.run.runId}-`));
    assert.equal(mine.length, 32);
    assert.ok(mine.every((a) => a.protocol === protocol));
    assert.equal(r.run.protocol, protocol);
  });

  it('reports wrongly accepted, wrongly rejected, lost and cross-check failures, and fails the run', async () => {
    let hijacked = '';
    let deleted = '';
    const r: SimulationReport = await sim({
      devices: 12,
      concurrency: 3,
      seed: 5,
      maxAttempts: 1,
      mix: { x509: 1, 'symmetric-key': 0, token: 0 },
      faults: { firmware: { count: 2 }, region: { count: 2 }, reset: { count: 2 } },
      hooks: {
        afterSetup: async ({ setup, plan }) => {
          // The operator drops the firmware rule: firmware faults are now wrongly accepted.
          const t = await srv.admin('PATCH', `/templates/${setup.templateId}`, { template: { deviceName: '${registrationId}', groups: [setup.deviceGroup], validation: { allowedRegions: ['eu', 'us', 'apac'] } } });
          assert.equal(t.status, 200, t.text);
          // Someone onboards a clean device's identity first, with another key: it is wrongly rejected.
          const victim = setup.devices.find((d) => d.plan.fault === null)!;
          hijacked = victim.plan.registrationId;
          assert.equal(victim.credential.type, 'client-certificate');
          const cred = victim.credential as { certPem: string; keyPem: string };
          const res = await srv.request('POST', '/v1/provision', { body: { registrationId: hijacked, csr: makeCsr(tempDir(), 'other', 'p256', hijacked).csrPem, parameters: victim.plan.parameters }, cert: cred.certPem, key: cred.keyPem });
          assert.equal(res.status, 200, res.text);
          assert.equal(plan.devices.length, 12);
        },
        beforeCrossCheck: async ({ result }) => {
          // An operator deletes an onboarded device before the cross-check: it is missing.
          const rec = result.records.find((x) => x.fault === null && x.outcome === 'onboarded')!;
          deleted = rec.registrationId;
          const del = await srv.admin('DELETE', `/devices/${rec.deviceId}`);
          assert.equal(del.status, 204, del.text);
        },
      },
    });
    assert.deepEqual(r.devices, { planned: 12, attempted: 12, onboarded: 5, correctlyRejected: 2, wronglyRejected: 1, rejectedWithWrongCode: 0, wronglyAccepted: 2, lost: 2, skipped: 0 });
    assert.deepEqual(r.rejectionsByCode, { REGION_MISMATCH: 2, REGISTRATION_ID_COLLISION: 1 });
    assert.ok(r.crossCheck.ran);
    assert.deepEqual(r.crossCheck.problemCounts, { 'registered-after-rejection': 1, missing: 1 });
    assert.deepEqual(r.crossCheck.problems.map((p) => p.registrationId).sort(), [deleted, hijacked].sort());
    assert.equal(r.crossCheck.verified, 6); // 5 clean (one deleted) + 2 wrongly accepted
    assert.equal(r.expectationFailures, 1 + 2 + 2 + 2);
    assert.equal(r.passed, false);
    const byFault = Object.fromEntries(r.faults.map((f) => [f.fault, [f.asExpected, f.failed]]));
    assert.deepEqual(byFault, { firmware: [0, 2], region: [2, 0], reset: [0, 2] });
    assert.ok(r.failures.some((f) => f.registrationId === hijacked && f.got === 'REGISTRATION_ID_COLLISION'));
    assert.equal(r.failures.filter((f) => f.got.startsWith('lost')).length, 2);
  });

  it('refuses a server that the pinned bundle does not vouch for', async () => {
    const stranger = await createCa('Elsewhere', 'Not the Fleetpass CA');
    await assert.rejects(runSimulation({ target: srv.url, token: srv.adminToken, caPem: stranger.pem, devices: 2, concurrency: 1, faults: {} }), /certificate/i);
  });
});

// The command line is a thin shell over runSimulation: one store is enough here.
describe('fleetpass simulate (command line)', () => {
  let srv: TestServer;
  before(async () => {
    srv = await startTestServer(null);
  });
  after(async () => {
    await srv?.close();
  });
  const cli = (args: string[]) =>
    new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
      const child = spawn(process.execPath, [CLI, 'simulate', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
      child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      child.on('close', (code) => resolve({ code, stdout, stderr }));
    });

  it('fetches the CA, runs, prints a JSON report and exits 0', async () => {
    const r = await cli(['--target', srv.url, '--token', srv.adminToken, '--devices', '16', '--concurrency', '4', '--faults', 'weak-key=1,reset=1,duplicate-id=1', '--pattern', 'poisson', '--rate', '200', '--seed', '3', '--json', '--backoff-base-ms', '20']);
    assert.equal(r.code, 0, r.stderr + r.stdout);
    const report = JSON.parse(r.stdout) as SimulationReport;
    assert.deepEqual(report.devices, { planned: 16, attempted: 16, onboarded: 14, correctlyRejected: 2, wronglyRejected: 0, rejectedWithWrongCode: 0, wronglyAccepted: 0, lost: 0, skipped: 0 });
    assert.equal(report.run.pattern, 'poisson');
    assert.equal(report.passed, true);
  });

  it('prints the terminal summary, and exits 1 when an expectation fails', async () => {
    // One attempt only: the device whose connection is reset is lost.
    const r = await cli(['--target', srv.url, '--token', srv.adminToken, '--devices', '4', '--concurrency', '2', '--faults', 'reset=1', '--max-attempts', '1', '--no-color']);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stdout, /lost \(no final answer\)\s+1/);
    assert.match(r.stdout, /FAIL — 1 expectation\(s\) failed/);
    assert.match(r.stdout, /Server-side cross-check/);
  });

  it('exits 2 on usage errors and 1 on a wrong token', async () => {
    assert.equal((await cli(['--devices', '3'])).code, 2);
    const bad = await cli(['--target', srv.url, '--token', 'fpk_wrong', '--devices', '1']);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /UNAUTHENTICATED/);
  });
});
