#!/usr/bin/env node
// npm run demo [-- simulate options]: a Fleetpass server on the embedded defaults in a temporary data
// folder, a 10,000-device fleet with realistic faults thrown at it, the report — and then the server
// keeps running (URL and admin token shown) until Ctrl-C, which stops it and removes the folder.
//
//   npm run demo                                  # 10,000 devices, --faults realistic
//   npm run demo -- --devices 2000 --pattern ramp --rate 100
//   npm run demo -- --exit                        # stop after the report (exit code = the simulation's)
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createWriteStream, existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { request } from 'node:https';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const root = new URL('..', import.meta.url).pathname;
const cli = join(root, 'dist/src/cli/index.js');
const args = process.argv.slice(2);
const exitAfter = args.includes('--exit');
const simArgs = args.filter((a) => a !== '--exit');
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const bold = (s) => (process.stdout.isTTY ? `\x1b[1m${s}\x1b[0m` : s);

if (!existsSync(cli)) {
  console.error('dist/ is missing: run "npm run build" (npm ci does it) first.');
  process.exit(1);
}

function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

function healthy(port) {
  return new Promise((resolve) => {
    const req = request({ host: '127.0.0.1', port, path: '/readyz', rejectUnauthorized: false, agent: false, timeout: 2000 }, (res) => {
      res.resume();
      resolve(res.statusCode === 200);
    });
    req.on('error', () => resolve(false));
    req.on('timeout', () => req.destroy());
    req.end();
  });
}

const dataDir = mkdtempSync(join(tmpdir(), 'fleetpass-demo-'));
const port = await freePort();
const url = `https://localhost:${port}`;
const logFile = join(dataDir, 'server.log');
const log = createWriteStream(logFile);

console.log(bold('Fleetpass demo'));
console.log(`  starting a server on the embedded defaults (SQLite, software CA) in ${dataDir} …`);
const server = spawn(process.execPath, [cli, 'serve', '--data-dir', dataDir, '--port', String(port), '--host', '127.0.0.1', '--log-level', 'warn'], {
  // A throw-away passphrase: the demo's CA keys are encrypted with it and die with the folder.
  env: { ...process.env, FLEETPASS_KEY_PASSPHRASE: randomBytes(24).toString('base64') },
  stdio: ['ignore', 'pipe', 'pipe'],
});
server.stdout.pipe(log);
server.stderr.pipe(log);
let serverExited = null;
server.on('exit', (code, signal) => {
  serverExited = { code, signal };
});

let stopping = false;
async function stop(code) {
  if (stopping) return;
  stopping = true;
  if (serverExited === null) {
    server.kill('SIGTERM');
    for (let i = 0; i < 150 && serverExited === null; i++) await sleep(100);
    if (serverExited === null) server.kill('SIGKILL');
  }
  rmSync(dataDir, { recursive: true, force: true });
  process.exit(code);
}

const tokenFile = join(dataDir, 'admin.token');
const started = Date.now();
while (!(existsSync(tokenFile) && (await healthy(port)))) {
  if (serverExited !== null || Date.now() - started > 60_000) {
    console.error(`the server did not come up (${serverExited ? `exited with ${serverExited.code ?? serverExited.signal}` : 'no answer within 60 s'}); its log:\n`);
    console.error(existsSync(logFile) ? readFileSync(logFile, 'utf8') : '(empty)');
    await stop(1);
  }
  await sleep(200);
}
const token = readFileSync(tokenFile, 'utf8').trim();
console.log(`  server up at ${url} after ${((Date.now() - started) / 1000).toFixed(1)} s\n`);

// Ctrl-C during the simulation reaches the simulator too (same process group); we clean up after it.
process.on('SIGINT', () => void stop(130));
process.on('SIGTERM', () => void stop(143));

const defaults = { '--devices': '10000', '--concurrency': '100', '--faults': 'realistic' };
const given = new Set(simArgs.filter((a) => a.startsWith('--')).map((a) => a.split('=')[0]));
const extra = Object.entries(defaults).flatMap(([k, v]) => (given.has(k) ? [] : [k, v]));
const sim = spawn(process.execPath, [cli, 'simulate', '--target', url, '--token', token, ...extra, ...simArgs], { stdio: 'inherit' });
const simCode = await new Promise((resolve) => sim.on('exit', (code, signal) => resolve(code ?? (signal ? 1 : 0))));
if (stopping) await new Promise(() => undefined);

if (exitAfter) await stop(simCode);

console.log(bold('The server keeps running — explore what the fleet left behind:'));
console.log(`  URL:              ${url}`);
console.log(`  admin API token:  ${token}`);
console.log(`  data folder:      ${dataDir}   (server log: ${logFile})`);
console.log('');
console.log(`  curl -sk ${url}/ca.pem -o fleetpass-ca.pem`);
console.log(`  curl -s --cacert fleetpass-ca.pem -H "Authorization: Bearer ${token}" "${url}/admin/v1/devices?limit=3"`);
console.log(`  curl -s --cacert fleetpass-ca.pem -H "Authorization: Bearer ${token}" "${url}/admin/v1/attempts?outcome=failure&limit=5"`);
console.log(`  curl -s --cacert fleetpass-ca.pem ${url}/metrics | grep fleetpass_provisioning_attempts_total`);
console.log(`  npx fleetpass simulate --target ${url} --token ${token} --devices 1000 --faults realistic`);
console.log('');
console.log('Press Ctrl-C to stop the server and remove the data folder.');
await new Promise(() => undefined);
