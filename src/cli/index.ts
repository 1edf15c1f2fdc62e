#!/usr/bin/env node
import { parseArgs } from 'node:util';
import { ConfigError, databaseUrlOf, flagSpecs, loadConfig } from '../config/load.js';
import { SETTINGS } from '../config/schema.js';
import { serve } from './serve.js';
import { Progress } from './progress.js';

const USAGE = `fleetpass — zero-touch provisioning for IoT fleets

Usage:
  fleetpass serve [options]          start the HTTPS server (device API, admin API, EST, /ca.pem)
  fleetpass migrate [options]        run database migrations and exit
  fleetpass audit verify [options]   check the audit log's hash chain; exit 1 if a row was edited or deleted
  fleetpass simulate --target URL --token T [options]
                                     boot a virtual fleet against a server and check every answer
                                     (fleetpass simulate --help for its options)
  fleetpass help                     this text

Options (each also an environment variable; see docs/configuration.md):
${SETTINGS.filter((s) => s.flag).map((s) => `  --${s.flag!.padEnd(26)} ${s.help} [${s.env}]`).join('\n')}
  --config FILE                JSON file with any of the settings above [FLEETPASS_CONFIG]
`;

function parse(argv: string[]) {
  return parseArgs({ args: argv, options: { ...flagSpecs(), help: { type: 'boolean', short: 'h' } }, allowPositionals: true, strict: true });
}


async function main(): Promise<number> {
  // The simulator is a client with its own options; it is loaded only when asked for.
  if (process.argv[2] === 'simulate') {
    const { simulateCommand } = await import('../../sim/cli.js');
    return simulateCommand(process.argv.slice(3));
  }
  const { values, positionals } = parse(process.argv.slice(2));
  const [cmd, sub] = positionals;
  const flags = values as Record<string, string | boolean | undefined>;
  if (values.help || !cmd || cmd === 'help') {
    process.stdout.write(USAGE);
    return cmd || values.help ? 0 : 2;
  }
  switch (cmd) {
    case 'serve':
      await serve(flags);
      return -1; // keep running
    case 'migrate': {
      const config = loadConfig({ flags });
      const { migrateStore } = await import('../storage/index.js');
      const applied = await migrateStore(databaseUrlOf(config));
      process.stdout.write(applied.length ? `applied migrations: ${applied.join(', ')}\n` : 'database schema is up to date\n');
      return 0;
    }
    case 'audit': {
      if (sub !== 'verify') {
        process.stderr.write('usage: fleetpass audit verify [--data-dir DIR | --database-url URL]\n');
        return 2;
      }
      const config = loadConfig({ flags });
      const { openStore } = await import('../storage/index.js');
      const { verifyAuditChain } = await import('../observability/audit.js');
      const store = await openStore({ url: databaseUrlOf(config), migrate: false, sqliteCheckpoints: 'inline' });
      try {
        const progress = new Progress('verifying audit chain', null);
        const result = await verifyAuditChain(store, (n) => progress.update(n));
        progress.done();
        if (result.ok) {
          process.stdout.write(`audit chain intact: ${result.events} events verified\n`);
          return 0;
        }
        process.stdout.write(`AUDIT CHAIN BROKEN at event ${result.problem!.seq}: ${result.problem!.detail} (${result.problem!.kind}); ${result.events} events before it verified\n`);
        return 1;
      } finally {
        await store.close();
      }
    }
    default:
      process.stderr.write(`unknown command "${cmd}"\n\n${USAGE}`);
      return 2;
  }
}

main().then(
  (code) => {
    if (code >= 0) process.exit(code);
  },
  (e: unknown) => {
    if (e instanceof ConfigError || (e as { code?: string }).code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION' || (e as { code?: string }).code === 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE') {
      process.stderr.write(`fleetpass: ${(e as Error).message}\nRun "fleetpass help" for the options.\n`);
      process.exit(2);
    }
    process.stderr.write(`fleetpass: ${(e as Error).stack ?? String(e)}\n`);
    process.exit(1);
  },
);
