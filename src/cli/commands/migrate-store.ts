/** `kiln migrate-store`: copies a stopped farm's data into another, empty store (src/server/migrate-store.ts). */
import type { Command } from 'commander';
import { globals } from '../context.js';
import { printJson } from '../output.js';

export function registerMigrateStoreCommand(program: Command): void {
  program
    .command('migrate-store')
    .description("copy a farm's data into an empty store, with no server running on either: SQLite to PostgreSQL or back")
    .requiredOption('--from <store>', 'the store to copy: sqlite:PATH (a data dir\'s is DIR/kiln.db) or postgres://USER@HOST:PORT/DATABASE')
    .requiredOption('--to <store>', 'the empty store to copy into: postgres://USER@HOST:PORT/DATABASE or sqlite:PATH')
    .action(async (flags: { from: string; to: string }, command: Command) => {
      // Loaded only here: client commands start without the stores.
      const { migrateStore } = await import('../../server/migrate-store.js');
      const report = await migrateStore(flags.from, flags.to);
      if (globals(command).json) return printJson(report);
      const counts = Object.entries(report.rows).map(([table, n]) => `${table} ${n}`).join(', ');
      process.stdout.write(`copied ${report.from} to ${report.to} (rows: ${counts}); start the server on it: --store TO, with the same --data (tokens, artifacts)\n`);
    });
}
