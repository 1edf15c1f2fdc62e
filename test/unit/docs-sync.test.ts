/** The reason-code registry and the configuration schema are documented in one place each; these keep docs and code in step. */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { REASON_CODES } from '../../src/core/errors.js';
import { SETTINGS } from '../../src/config/schema.js';

const root = new URL('../../../', import.meta.url);

function tableRows(markdown: string): string[][] {
  return markdown
    .split('\n')
    .filter((l) => /^\|\s*`/.test(l))
    .map((l) => l.split('|').slice(1, -1).map((c) => c.trim()));
}

describe('docs/reason-codes.md', () => {
  const rows = tableRows(readFileSync(new URL('docs/reason-codes.md', root), 'utf8'));
  it('lists every registered code exactly once, with its HTTP status', () => {
    const documented = new Map(rows.map((r) => [r[0]!.replace(/`/g, ''), Number(r[1])]));
    assert.equal(rows.length, documented.size, 'no code documented twice');
    for (const [code, info] of Object.entries(REASON_CODES)) {
      assert.ok(documented.has(code), `${code} is documented`);
      assert.equal(documented.get(code), info.httpStatus, `${code} status`);
    }
    for (const code of documented.keys()) assert.ok(code in REASON_CODES, `${code} in the doc is a registered code`);
  });
});

describe('docs/configuration.md', () => {
  const rows = tableRows(readFileSync(new URL('docs/configuration.md', root), 'utf8'));
  it('documents every setting with its environment variable and flag', () => {
    const byKey = new Map(rows.map((r) => [r[0]!.replace(/`/g, ''), r]));
    assert.equal(rows.length, SETTINGS.length);
    for (const s of SETTINGS) {
      const row = byKey.get(s.key);
      assert.ok(row, `${s.key} documented`);
      assert.equal(row[1]!.replace(/`/g, ''), s.env);
      assert.equal(row[2]!.replace(/`/g, ''), s.flag ? `--${s.flag}` : '—');
    }
  });
});
