/** The full command line: every command, parsed by commander. */
import { Command, CommanderError } from 'commander';
import { KILN_VERSION } from '../version.js';
import { registerArtifactCommands } from './commands/artifacts.js';
import { registerDaemonCommands } from './commands/daemons.js';
import { registerInfoCommands } from './commands/info.js';
import { registerJobCommands } from './commands/jobs.js';
import { registerRunCommands } from './commands/runs.js';
import { registerWorkerTokenCommands } from './commands/worker-tokens.js';
import { Exit, reportFailure } from './exit-codes.js';
import { endQuietlyWhenStdoutCloses, survivePrintErrors } from './output.js';

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

/** Parses `argv` and runs the command it names. */
export async function runCli(argv: string[]): Promise<void> {
  try {
    await buildProgram().parseAsync(argv);
  } catch (raw) {
    if (raw instanceof CommanderError) process.exitCode = raw.exitCode === 0 ? Exit.ok : Exit.usage;
    else reportFailure(raw);
  }
}
