/**
 * A shell started ahead of the job it becomes. `spawn()` forks the whole worker (1 to 2 ms at
 * 80 MB, bench/spawn-cost.mjs), so after a plain job ends the next job's process is forked while
 * the worker is idle: a `/bin/sh` with an empty environment, its output already on a channel of its
 * own, waiting on stdin. A run then sends it a short program (cd to the work dir, exactly the job's
 * environment, stdin /dev/null, exec the command) and the shell becomes the job: same pid, same
 * process group, the command's exit. Only for the plain sandbox without limits; whatever does not
 * fit (an env name sh cannot export, a shell that died) is started the ordinary way.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import type { Socket } from 'node:net';
import { openMergedOutput } from './merged-output.js';

/** A shell waiting to become a job, and the reading end of its output. */
export interface SpareShell {
  child: ChildProcess;
  output: Socket;
}

/**
 * What the spare shell runs: the one-line program it is sent on stdin (EOF: it exits). One line,
 * as `read` takes it (stdin is a socket, which `. /dev/stdin` cannot open); newlines in values
 * are spelt "$NL".
 */
const WAIT_FOR_PROGRAM = "NL='\n'\nIFS= read -r program || exit 125\neval \"$program\"";

/** Names sh can export; the environment of a job with any other runs through a plain spawn. */
const EXPORTABLE = /^[A-Za-z_][A-Za-z0-9_]*$/;

let spare: Promise<SpareShell | undefined> | undefined;

/** `text` single-quoted for sh, on one line (a newline is "$NL", which the spare shell sets). */
function quote(text: string): string {
  return text.split('\n').map((part) => `'${part.replaceAll("'", "'\\''")}'`).join('"$NL"');
}

/**
 * The program that turns the spare shell into `command` run in `cwd` with exactly `env` (the
 * shell's own OLDPWD from its cd is dropped; PWD the job's sh sets itself, as when spawned);
 * undefined when `env` has a name sh cannot export.
 */
export function jobProgram(command: string[], cwd: string, env: Record<string, string>): string | undefined {
  if (!Object.keys(env).every((name) => EXPORTABLE.test(name))) return undefined;
  return [
    `cd -- ${quote(cwd)} || exit 125`,
    'unset OLDPWD',
    ...Object.entries(env).map(([name, value]) => `export ${name}=${quote(value)}`),
    'exec </dev/null',
    `exec ${command.map(quote).join(' ')}`,
  ].join('; ') + '\n';
}

/** Starts the next spare shell unless one is waiting or starting; never throws. */
export function prepareSpareShell(): void {
  if (spare) return;
  const starting = startShell().catch(() => undefined);
  spare = starting;
  void starting.then((shell) => {
    if (!shell && spare === starting) spare = undefined;
  });
}

/**
 * The spare shell, given `program` to become its job; undefined when none is ready (the caller
 * spawns the job itself). The next spare is not started here: forking now would delay this job.
 */
export async function takeSpareShell(program: string): Promise<SpareShell | undefined> {
  const ready = spare;
  spare = undefined;
  const shell = await ready;
  if (!shell) return undefined;
  if (shell.child.exitCode !== null || shell.child.signalCode !== null) {
    shell.output.destroy();
    return undefined;
  }
  shell.child.ref();
  (shell.child.stdin as Socket).ref();
  shell.output.ref();
  shell.child.stdin!.end(program);
  return shell;
}

/** Resolves once the spare shell being started is ready (true) or failed (false). @internal for tests */
export async function spareShellReady(): Promise<boolean> {
  return (await spare) !== undefined;
}

async function startShell(): Promise<SpareShell> {
  const { writer, reader } = await openMergedOutput();
  let child: ChildProcess;
  try {
    child = spawn('/bin/sh', ['-c', WAIT_FOR_PROGRAM], { cwd: '/', env: {}, detached: true, stdio: ['pipe', writer, writer] });
  } catch (raw) {
    reader.destroy();
    throw raw;
  } finally {
    // The shell holds its own copies; the worker's would keep the channel open.
    writer.destroy();
  }
  await new Promise<void>((resolve, reject) => {
    child.once('spawn', resolve);
    child.once('error', reject);
  }).catch((raw) => {
    reader.destroy();
    throw raw;
  });
  // A shell that dies waiting is noticed when taken; the worker never waits for it.
  child.on('error', () => {});
  child.stdin!.on('error', () => {});
  child.unref();
  (child.stdin as Socket).unref();
  reader.unref();
  return { child, output: reader };
}
