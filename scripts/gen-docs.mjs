#!/usr/bin/env node
// Regenerates the tables in docs/reason-codes.md and docs/configuration.md from the code (after a build).
import { readFileSync, writeFileSync } from 'node:fs';
const { REASON_CODES } = await import('../dist/src/core/errors.js');
const { SETTINGS } = await import('../dist/src/config/schema.js');

function replaceTable(file, table) {
  const text = readFileSync(file, 'utf8');
  const start = text.indexOf('<!-- table:start -->');
  const end = text.indexOf('<!-- table:end -->');
  if (start < 0 || end < 0) throw new Error(`${file} lacks table markers`);
  writeFileSync(file, `${text.slice(0, start)}<!-- table:start -->\n${table}\n${text.slice(end)}`);
}
const esc = (s) => String(s).replace(/\|/g, '\\|');
replaceTable('docs/reason-codes.md', ['| code | HTTP | retry? | meaning | what to do |', '|---|---|---|---|---|',
  ...Object.entries(REASON_CODES).map(([c, i]) => `| \`${c}\` | ${i.httpStatus} | ${i.retryable ? 'yes' : 'no'} | ${esc(i.meaning)} | ${esc(i.action)} |`)].join('\n'));
replaceTable('docs/configuration.md', ['| setting | environment | flag | default | meaning |', '|---|---|---|---|---|',
  ...SETTINGS.map((s) => `| \`${s.key}\` | \`${s.env}\` | ${s.flag ? `\`--${s.flag}\`` : '—'} | ${s.secret ? '(secret)' : `\`${JSON.stringify(s.default)}\``}${s.choices ? ` (${s.choices.join(', ')})` : ''} | ${esc(s.help)} |`)].join('\n'));
console.log('docs tables regenerated');
