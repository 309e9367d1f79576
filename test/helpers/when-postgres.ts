/**
 * `node --import tsx test/helpers/when-postgres.ts COMMAND ARGS...` runs COMMAND where PostgreSQL
 * answers (requirements.ts 'postgres') and exits with its status. Where it does not, the suites on
 * PostgreSQL cannot run at all: it prints why and succeeds, so `npm test` passes on a fresh machine,
 * or fails under KILN_TEST_REQUIRE_ALL=1 (.ci/run), as a skipped requirement does everywhere else.
 */
import { spawn } from 'node:child_process';
import { missingReason, REQUIRE_ALL_ENV, requireAll } from './requirements.js';

const [command, ...args] = process.argv.slice(2);
if (command === undefined) {
  process.stderr.write('usage: when-postgres.ts COMMAND [ARGS...]\n');
  process.exit(2);
}
const reason = missingReason('postgres');
if (reason !== undefined) {
  if (requireAll()) {
    process.stderr.write(`not ok: the suites on PostgreSQL cannot run, and ${REQUIRE_ALL_ENV}=1 makes that a failure: ${reason}\n`);
    process.exit(1);
  }
  process.stdout.write(`# SKIP the suites on PostgreSQL (${args.filter((a) => a.endsWith('.test.ts')).join(' ')}): ${reason}\n`);
  process.exit(0);
}
const child = spawn(command, args, { stdio: 'inherit' });
// The runner stops when npm is interrupted; this process only waits for it.
for (const signal of ['SIGINT', 'SIGTERM'] as const) process.on(signal, () => child.kill(signal));
child.on('exit', (code, signal) => process.exit(code ?? (signal ? 1 : 0)));
