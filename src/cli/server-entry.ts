/**
 * `kiln server` and `kiln up` in the package: bin/kiln.mjs runs dist/server.js, the full CLI with
 * what a server loads (src/server/index.ts, the daemons' logger, better-sqlite3's JavaScript) in one
 * file, no chunks (scripts/build.mjs). The CLI's own bundle splits these into ~23 chunks and leaves
 * better-sqlite3's ~17 CommonJS files in node_modules; resolving them all ran Node's module-path code
 * hot enough to start V8's optimizing compiler, ~5 MB of an idle server's RSS (BENCHMARKS.md).
 * What only some servers need (pool providers, upload targets, a --config file's YAML) stays lazy.
 * Only the daemons' commands are registered: the client's ~40 commands are neither in this file nor
 * built at every server start.
 */
import '../server/index.js';
import { registerDaemonCommands } from './commands/daemons.js';
import './logger.js';
import { runCli } from './program.js';

await runCli(process.argv, [registerDaemonCommands]);
