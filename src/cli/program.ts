/**
 * The command line, parsed by commander: the global options and the commands it is given (every
 * command for `kiln`, only the daemons' for the server's own bundle: src/cli/server-entry.ts).
 */
import { Command, CommanderError } from 'commander';
import { KILN_VERSION } from '../version.js';
import { Exit, reportFailure } from './exit-codes.js';
import { endQuietlyWhenStdoutCloses, survivePrintErrors } from './output.js';

/** The commands that run until stopped. */
const LONG_RUNNING = new Set(['server', 'worker', 'up']);

/** Adds a group of commands (src/cli/commands/*.ts) to the program. */
export type RegisterCommands = (program: Command) => void;

function buildProgram(commands: readonly RegisterCommands[]): Command {
  const program = new Command('kiln')
    .description('Kiln: a build farm and job server')
    .version(KILN_VERSION)
    .option('--server <url>', 'server URL (env KILN_SERVER, default http://127.0.0.1:7420)')
    .option('--token <token>', 'admin token (env KILN_TOKEN, else ./.kiln/admin.token)')
    .option('--ca <file>', "PEM CA file to trust an https:// server by (env KILN_CA; default: Node's trust store)")
    .option('--json', 'machine-readable output on stdout')
    .exitOverride();
  for (const register of commands) register(program);
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

/** Parses `argv` and runs the command it names, one of `commands`. */
export async function runCli(argv: string[], commands: readonly RegisterCommands[]): Promise<void> {
  try {
    await buildProgram(commands).parseAsync(argv);
  } catch (raw) {
    if (raw instanceof CommanderError) process.exitCode = raw.exitCode === 0 ? Exit.ok : Exit.usage;
    else reportFailure(raw);
  }
}
