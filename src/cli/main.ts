/** `kiln`: one command line for the server, workers and the client. */
import { Command, CommanderError } from 'commander';
import { coerceError } from '../errors.js';
import { KILN_VERSION } from '../version.js';
import { registerArtifactCommands } from './commands/artifacts.js';
import { registerDaemonCommands } from './commands/daemons.js';
import { registerInfoCommands } from './commands/info.js';
import { registerJobCommands } from './commands/jobs.js';
import { registerRunCommands } from './commands/runs.js';
import { registerWorkerTokenCommands } from './commands/worker-tokens.js';
import { endQuietlyWhenStdoutCloses, survivePrintErrors } from './output.js';

/** Exit codes of SPEC.md. */
export const Exit = { ok: 0, failed: 1, usage: 2, unreachable: 3 } as const;

/** The exit code for an error code. */
export function exitCodeFor(code: string): number {
  switch (code) {
    case 'KILN_ERR_USAGE':
    case 'KILN_ERR_INVALID_REQUEST':
    case 'KILN_ERR_CONFIG':
    case 'KILN_ERR_DATA_DIR_IN_USE':
    case 'KILN_ERR_DATA_DIR_UNSAFE':
      return Exit.usage;
    case 'KILN_ERR_UNAUTHORIZED':
    case 'KILN_ERR_SERVER_UNREACHABLE':
      return Exit.unreachable;
    default:
      return Exit.failed;
  }
}

/** The commands that run until stopped. */
const LONG_RUNNING = new Set(['server', 'worker', 'up']);

function buildProgram(): Command {
  const program = new Command('kiln')
    .description('Kiln: a build farm and job server')
    .version(KILN_VERSION)
    .option('--server <url>', 'server URL (env KILN_SERVER, default http://127.0.0.1:7420)')
    .option('--token <token>', 'admin token (env KILN_TOKEN, else ./.kiln/admin.token)')
    .option('--json', 'machine-readable output on stdout')
    .exitOverride();
  registerJobCommands(program);
  registerRunCommands(program);
  registerInfoCommands(program);
  registerArtifactCommands(program);
  registerDaemonCommands(program);
  registerWorkerTokenCommands(program);
  // What a closed or full stdout means depends on the command: a client (or --help) has nothing
  // left to do, a server or worker goes on serving.
  const undo = endQuietlyWhenStdoutCloses();
  program.hook('preAction', (_program, action) => {
    if (!LONG_RUNNING.has(action.name())) return;
    undo();
    survivePrintErrors();
  });
  // Usage errors read like every other error: one line, `kiln: ...`, on stderr.
  const output = { outputError: (text: string, write: (text: string) => void) => write(`kiln: ${text.replace(/^error: /, '').trimEnd()} (see --help)\n`) };
  program.configureOutput(output);
  for (const command of program.commands) command.exitOverride().configureOutput(output);
  return program;
}

try {
  await buildProgram().parseAsync(process.argv);
} catch (raw) {
  if (raw instanceof CommanderError) {
    process.exitCode = raw.exitCode === 0 ? Exit.ok : Exit.usage;
  } else {
    const err = coerceError(raw);
    process.stderr.write(`kiln: ${err.message}\n`);
    if (err.code === 'KILN_ERR_INTERNAL' && process.env.KILN_DEBUG) process.stderr.write(`${err.stack}\n`);
    process.exitCode = exitCodeFor(err.code);
  }
}
