import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ConfigError, databaseUrlOf, loadConfig, publicUrlOf } from '../../src/config/load.js';
import { tempDir } from '../helpers/openssl.js';

describe('config', () => {
  it('has working defaults and is frozen', () => {
    const c = loadConfig({ env: {} });
    assert.equal(c.port, 8443);
    assert.equal(c.host, '0.0.0.0');
    assert.equal(c.caAlgorithm, 'ecdsa-p256');
    assert.match(c.dataDir, /fleetpass-data$/);
    assert.equal(databaseUrlOf(c), `sqlite:${join(c.dataDir, 'fleetpass.db')}`);
    assert.equal(publicUrlOf(c), 'https://localhost:8443');
    assert.ok(Object.isFrozen(c));
    assert.throws(() => {
      (c as { port: number }).port = 1;
    }, TypeError);
  });

  it('applies flag > environment > file > default', () => {
    const dir = tempDir();
    const file = join(dir, 'fp.json');
    writeFileSync(file, JSON.stringify({ port: 1000, host: '127.0.0.2', caAlgorithm: 'rsa-3072' }));
    const c = loadConfig({ env: { FLEETPASS_CONFIG: file, FLEETPASS_PORT: '2000', DATABASE_URL: 'postgres://x@h/db' }, flags: { port: '3000' } });
    assert.equal(c.port, 3000);
    assert.equal(c.host, '127.0.0.2');
    assert.equal(c.caAlgorithm, 'rsa-3072');
    assert.equal(databaseUrlOf(c), 'postgres://x@h/db');
    assert.equal(loadConfig({ env: { FLEETPASS_CONFIG: file, FLEETPASS_PORT: '2000' } }).port, 2000);
  });

  it('rejects bad values and unknown file keys with a message naming the setting', () => {
    assert.throws(() => loadConfig({ env: { FLEETPASS_PORT: 'eighty' } }), (e: Error) => e instanceof ConfigError && /port.*FLEETPASS_PORT.*whole number/.test(e.message));
    assert.throws(() => loadConfig({ env: {}, flags: { port: '70000' } }), /between 0 and 65535/);
    assert.throws(() => loadConfig({ env: { FLEETPASS_CA_ALGORITHM: 'dsa' } }), /one of ecdsa-p256, ecdsa-p384, rsa-3072/);
    const dir = tempDir();
    writeFileSync(join(dir, 'bad.json'), JSON.stringify({ prot: 1 }));
    assert.throws(() => loadConfig({ env: { FLEETPASS_CONFIG: join(dir, 'bad.json') } }), /unknown setting "prot"/);
    writeFileSync(join(dir, 'broken.json'), '{');
    assert.throws(() => loadConfig({ env: { FLEETPASS_CONFIG: join(dir, 'broken.json') } }), /cannot read config file/);
  });

  it('a previous webhook secret only beside a current one (rotation)', () => {
    assert.throws(() => loadConfig({ env: { FLEETPASS_WEBHOOK_SECRET_PREVIOUS: 'old' } }), (e: Error) => e instanceof ConfigError && /without FLEETPASS_WEBHOOK_SECRET/.test(e.message));
    const c = loadConfig({ env: { FLEETPASS_WEBHOOK_SECRET: 'new', FLEETPASS_WEBHOOK_SECRET_PREVIOUS: 'old' } });
    assert.deepEqual([c.webhookSecret, c.webhookSecretPrevious], ['new', 'old']);
  });
});
