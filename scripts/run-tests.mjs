#!/usr/bin/env node
// Runs every compiled test file with node's built-in test runner. Fails when no test file is found,
// so a broken build can never look like a green run.
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';

const root = new URL('../dist/test', import.meta.url).pathname;
const filter = process.argv.slice(2);
function walk(dir) {
  const out = [];
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) out.push(...walk(p));
    else if (name.endsWith('.test.js')) out.push(p);
  }
  return out;
}
let files;
try {
  files = walk(root).sort();
} catch {
  files = [];
}
if (filter.length > 0) files = files.filter((f) => filter.some((s) => f.includes(s)));
if (files.length === 0) {
  console.error('run-tests: no test files found under dist/test — did the build run?');
  process.exit(1);
}
const concurrency = process.env.FLEETPASS_TEST_CONCURRENCY ?? '2';
// FLEETPASS_DEV_CHECKS: checks too costly for production (the store's transaction-misuse detection).
const env = { ...process.env, FLEETPASS_DEV_CHECKS: process.env.FLEETPASS_DEV_CHECKS ?? '1' };
const res = spawnSync(process.execPath, ['--test', `--test-concurrency=${concurrency}`, '--test-reporter=spec', ...files], { stdio: 'inherit', env });
process.exit(res.status ?? 1);
