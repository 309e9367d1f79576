/**
 * `kiln worker`: its options (one table, read by commander for the full CLI and by the worker's own
 * entry, cli/worker-main.ts, which starts a worker without loading commander or the client
 * commands), the token's sources, and the worker's start. Nothing here imports commander, zod or pino.
 */
import { closeSync, existsSync, mkdirSync, readFileSync, rmSync, unlinkSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Command } from 'commander';
import { parseServerList } from '../../core/failover.js';
import { parsePairs } from '../../core/job.js';
import { coerceError, UsageError } from '../../errors.js';
import { hostPlatform } from '../../host-info.js';
import type { Log } from '../../log.js';
// The worker is loaded only by the command that runs it, to keep client commands fast.
import type { WorkerAgent } from '../../worker/index.js';
import { DEFAULT_SERVER, LOCAL_DATA_DIR, readTokenFile } from '../defaults.js';
import { durationFlag, STOP_SIGNALS } from '../flags.js';
import { createJsonLogger } from '../json-logger.js';

export interface WorkerFlags {
  /** Global options: for a worker the token is the worker token; --ca (env KILN_CA) trusts an https:// server. */
  server?: string;
  token?: string;
  ca?: string;
  tokenFile?: string;
  name?: string;
  platform?: string;
  label?: string[];
  capacity: string;
  once?: boolean;
  sandbox: string;
  network: string;
  bind?: string[];
  roBind?: string[];
  hide?: string[];
  workDir?: string;
  spoolDir?: string;
  killGrace: string;
  drainTimeout: string;
}

/** One option of `kiln worker`: `--flag <value>` (a string) or `--flag` (a boolean). */
export interface WorkerOption {
  flag: string;
  /** The value's name in --help; none: a boolean flag. */
  value?: string;
  description: string;
  default?: string;
  repeatable?: boolean;
}

const WORKER_DESCRIPTION =
  'run a worker that takes jobs from the server; it connects to --server (env KILN_SERVER, ' +
  `default ${DEFAULT_SERVER}; a comma list of the servers of one farm, URL1,URL2,...: tried in order, and on losing one ` +
  `it moves to the next and re-attaches its runs; a name with several addresses is tried address by address) with the worker token: --token-file FILE, else descriptor $KILN_WORKER_TOKEN_FD, else file $KILN_WORKER_TOKEN_FILE (removed once read), else env KILN_WORKER_TOKEN, else ./.kiln/worker.token (--token works too, but shows the token to every local user in ps); an https:// server is trusted by --ca FILE (env KILN_CA), else Node's trust store`;

/** The options of `kiln worker`, in --help's order. */
export const WORKER_OPTIONS: readonly WorkerOption[] = [
  { flag: 'token-file', value: 'file', description: 'read the worker token (the shared one, or its own from kiln worker-token create) from this file; it is kept' },
  { flag: 'name', value: 'name', description: 'worker name (default: env KILN_WORKER_NAME, else HOSTNAME-PID)' },
  { flag: 'platform', value: 'platform', description: "platform it serves (default: this host's, e.g. debian-12)" },
  { flag: 'label', value: 'K=V', description: 'a label jobs can ask for (repeatable)', repeatable: true },
  { flag: 'capacity', value: 'n', description: 'runs at once', default: '1' },
  { flag: 'once', description: 'take one run, report it and exit' },
  { flag: 'sandbox', value: 'kind', description: 'none (a plain process group) or bwrap (bubblewrap: read-only host, private /tmp, own namespaces)', default: 'none' },
  { flag: 'network', value: 'mode', description: 'with --sandbox bwrap: host (jobs may use the network) or none (every job cut off)', default: 'host' },
  { flag: 'bind', value: 'src[:dest]', description: 'with --sandbox bwrap: also mount this host path writable in every job (repeatable)', repeatable: true },
  { flag: 'ro-bind', value: 'src[:dest]', description: 'with --sandbox bwrap: also mount this host path read-only over what is there (repeatable)', repeatable: true },
  { flag: 'hide', value: 'dir', description: "with --sandbox bwrap: show jobs this host dir empty, e.g. other workers' state (repeatable)", repeatable: true },
  { flag: 'work-dir', value: 'dir', description: 'where work dirs are made (default: the system temp dir)' },
  { flag: 'spool-dir', value: 'dir', description: "where running jobs' output is kept until the server has it (default: a private dir TMPDIR/kiln-spool-NAME-XXXXXX, removed at exit)" },
  { flag: 'kill-grace', value: 'duration', description: 'time between SIGTERM and SIGKILL when stopping a job', default: '10s' },
  { flag: 'drain-timeout', value: 'duration', description: 'on SIGTERM, how long running jobs may go on before they are cancelled', default: '5m' },
];

/** An option's key in the parsed flags (commander's camelCase). */
export function optionKey(flag: string): string {
  return flag.replace(/-([a-z])/g, (_, letter: string) => letter.toUpperCase());
}

const collect = (value: string, previous: string[] = []) => [...previous, value];

/** Registers `kiln worker` on the full CLI; `run` is what it does (tests give their own). */
export function registerWorkerCommand(program: Command, run: (flags: WorkerFlags) => Promise<void> = runWorker): void {
  const command = program.command('worker').description(WORKER_DESCRIPTION);
  for (const option of WORKER_OPTIONS) {
    const flags = `--${option.flag}${option.value ? ` <${option.value}>` : ''}`;
    if (option.repeatable) command.option(flags, option.description, collect);
    else if (option.default !== undefined) command.option(flags, option.description, option.default);
    else command.option(flags, option.description);
  }
  command.action(async (flags: WorkerFlags, self: Command) => {
    // --server and --token are the global options; for a worker the token is the worker token.
    const { server, token, ca } = self.optsWithGlobals<{ server?: string; token?: string; ca?: string }>();
    await run({ ...flags, server, token, ca });
  });
}

/** Runs a worker until it stops; sets the process's exit code. */
export async function runWorker(flags: WorkerFlags): Promise<void> {
  const log = createJsonLogger();
  const agent = await createWorker(log, flags);
  // The first stop signal drains; a second one stops the running jobs now.
  const onSignal = () => agent.stop();
  for (const signal of STOP_SIGNALS) process.on(signal, onSignal);
  // The lifeline: stdin is a pipe whose write end only the starter (a pool's server, `kiln up`)
  // holds, so it ends when the starter dies, however it dies. Then nothing drains: the jobs'
  // process trees are killed and the worker exits (a drain would wait on a dead server).
  const watchParent = process.env.KILN_EXIT_WITH_STDIN === '1';
  if (watchParent) {
    const lost = () => agent.abandon('the server that started this worker is gone');
    process.stdin.on('end', lost).on('error', lost).resume();
  }
  process.exitCode = await agent.start();
  // The open pipe and the signal handlers would keep the process alive after the agent is done.
  if (watchParent) process.stdin.destroy();
  for (const signal of STOP_SIGNALS) process.off(signal, onSignal);
}

/**
 * The token a parent passed on an inherited pipe (`KILN_WORKER_TOKEN_FD=N`), read to its end: unlike
 * the environment, it is not in /proc/PID/environ, where a job of the same user could read it.
 */
function tokenFromFd(): string | undefined {
  const fd = process.env.KILN_WORKER_TOKEN_FD;
  if (fd === undefined) return undefined;
  if (!/^\d+$/.test(fd) || Number(fd) < 3) throw new UsageError(`bad KILN_WORKER_TOKEN_FD '${fd}': use an inherited descriptor number (3 or more)`);
  let token: string;
  try {
    token = readFileSync(Number(fd), 'utf8').trim();
  } catch (err) {
    // Not closed then: it may not be a pipe of ours at all.
    throw new UsageError(`cannot read the worker token from descriptor ${fd}: ${coerceError(err).message}`);
  }
  closeSync(Number(fd));
  return token || undefined;
}

/** The token in `--token-file FILE`, which stays where it is (unlike KILN_WORKER_TOKEN_FILE's). */
function tokenFromGivenFile(file: string | undefined): string | undefined {
  if (file === undefined) return undefined;
  let token: string;
  try {
    token = readFileSync(file, 'utf8').trim();
  } catch (err) {
    throw new UsageError(`cannot read the worker token from --token-file ${file}: ${coerceError(err).message}`);
  }
  if (!token) throw new UsageError(`--token-file ${file} is empty`);
  return token;
}

/**
 * The token in a file handed to this worker alone (`KILN_WORKER_TOKEN_FILE`, as the docker pools
 * do), removed once read: jobs start later, so they find neither the file nor the token in the
 * worker's environment.
 */
function tokenFromHandedFile(): string | undefined {
  const file = process.env.KILN_WORKER_TOKEN_FILE;
  if (file === undefined) return undefined;
  let token: string;
  try {
    token = readFileSync(file, 'utf8').trim();
  } catch (err) {
    throw new UsageError(`cannot read the worker token from ${file}: ${coerceError(err).message}`);
  }
  try {
    unlinkSync(file);
  } catch (err) {
    throw new UsageError(`cannot remove the worker token file ${file} after reading it (jobs could read it): ${coerceError(err).message}`);
  }
  return token || undefined;
}

/** The servers of `--server` / KILN_SERVER (a comma list), or a usage error saying which entry is bad. */
function serverList(value: string): string[] {
  try {
    return parseServerList(value);
  } catch (raw) {
    throw new UsageError(`${coerceError(raw).message} (--server or KILN_SERVER)`);
  }
}

/** Builds a worker agent from its flags. */
async function createWorker(log: Log, flags: WorkerFlags): Promise<WorkerAgent> {
  // The worker's modules one by one (not its index): bwrap's launcher only for --sandbox bwrap.
  const [{ WorkerAgent }, { closeInheritedDescriptors }, { makeSpoolDir }, { detectLimits }, { ProcessSandboxLauncher }] = await Promise.all([
    import('../../worker/agent.js'), import('../../worker/inherited-descriptors.js'), import('../../worker/output-spool.js'),
    import('../../worker/sandbox/resource-limits.js'), import('../../worker/sandbox/process-sandbox.js'),
  ]);
  const token = flags.token ?? tokenFromGivenFile(flags.tokenFile) ?? tokenFromFd() ?? tokenFromHandedFile() ?? process.env.KILN_WORKER_TOKEN ?? readTokenFile(`${LOCAL_DATA_DIR}/worker.token`);
  if (!token) throw new UsageError('no worker token: pass --token-file FILE or set KILN_WORKER_TOKEN');
  // The token is read: from here on nothing inherited is needed, and jobs must not inherit it.
  const closed = closeInheritedDescriptors();
  if (closed.length > 0) log.info({ descriptors: closed }, 'closed descriptors inherited from the parent, which jobs would inherit too');
  if (flags.token !== undefined) {
    log.warn('--token puts the worker token on the command line, where every local user can read it with ps: give it with --token-file, KILN_WORKER_TOKEN_FD, KILN_WORKER_TOKEN_FILE or KILN_WORKER_TOKEN instead');
  }
  if (flags.sandbox !== 'none' && flags.sandbox !== 'bwrap') throw new UsageError(`bad --sandbox '${flags.sandbox}': use none or bwrap`);
  if (flags.network !== 'none' && flags.network !== 'host') throw new UsageError(`bad --network '${flags.network}': use host or none`);
  if (flags.sandbox === 'none' && (flags.network !== 'host' || flags.bind || flags.roBind || flags.hide)) {
    throw new UsageError('--network none, --bind, --ro-bind and --hide need --sandbox bwrap (--sandbox none cannot isolate a job)');
  }
  const capacity = Number(flags.capacity);
  if (!Number.isInteger(capacity) || capacity < 1 || capacity > 256) throw new UsageError(`bad --capacity '${flags.capacity}': give a number from 1 to 256`);
  // The server would refuse these in the hello, and the worker would retry forever: say it now.
  if (flags.platform !== undefined && !/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/.test(flags.platform)) {
    throw new UsageError(`bad --platform '${flags.platform}': use letters, digits, dot, dash and underscore`);
  }
  const killGraceMs = durationFlag('--kill-grace', flags.killGrace, true);
  const drainMs = durationFlag('--drain-timeout', flags.drainTimeout, true);
  let labels: Record<string, string>;
  try {
    labels = parsePairs(flags.label ?? [], '--label');
  } catch (raw) {
    throw new UsageError(coerceError(raw).message);
  }
  // A pool instance is told its name (and its own token) by the server that started it.
  const name = flags.name ?? process.env.KILN_WORKER_NAME ?? `${os.hostname()}-${process.pid}`;
  const workRoot = path.resolve(flags.workDir ?? os.tmpdir());
  const spoolDir = flags.spoolDir === undefined ? makeSpoolDir(name) : path.resolve(flags.spoolDir);
  // Ours alone: what is left in it (results never delivered) means nothing to another process.
  if (flags.spoolDir === undefined) process.once('exit', () => rmSync(spoolDir, { recursive: true, force: true }));
  const limits = detectLimits();
  let sandbox;
  if (flags.sandbox === 'bwrap') {
    const { BwrapSandboxLauncher, checkBwrap, parseBind } = await import('../../worker/sandbox/bwrap-sandbox.js');
    checkBwrap();
    const binds = [...(flags.bind ?? []).map((b) => parseBind(b, true)), ...(flags.roBind ?? []).map((b) => parseBind(b, false))];
    // Jobs see the host read-only, but not the worker's own files: other runs, the spool, the token.
    const hidden = [workRoot, spoolDir, path.resolve(LOCAL_DATA_DIR), ...(flags.hide ?? []).map((dir) => path.resolve(dir))];
    for (const dir of hidden.slice(3)) if (!existsSync(dir)) throw new UsageError(`bad --hide '${dir}': it does not exist`);
    // A --token-file stays where the operator keeps it, which may be under a dir jobs see (/etc, /opt).
    if (flags.tokenFile !== undefined) hidden.push(path.resolve(flags.tokenFile));
    sandbox = new BwrapSandboxLauncher({ network: flags.network as 'none' | 'host', binds, hidden }, limits);
  } else sandbox = new ProcessSandboxLauncher(limits);
  log.info({ sandbox: sandbox.describe() }, 'jobs run in this sandbox');
  try {
    // Each run's work dir in it is made 0700 (mkdtemp); a root made here is private as well.
    mkdirSync(workRoot, { recursive: true, mode: 0o700 });
  } catch (raw) {
    // Not fatal: each run then ends `aborted` with the reason, which is where users look.
    log.warn({ workRoot, err: coerceError(raw).message }, 'cannot create the work root');
  }
  const caFile = flags.ca ?? (process.env.KILN_CA || undefined);
  let ca: string | undefined;
  if (caFile !== undefined) {
    try {
      ca = readFileSync(caFile, 'utf8');
    } catch (err) {
      throw new UsageError(`cannot read the CA file ${caFile} (--ca or KILN_CA): ${coerceError(err).message}`);
    }
  }
  return new WorkerAgent({
    servers: serverList(flags.server ?? process.env.KILN_SERVER ?? DEFAULT_SERVER),
    token,
    ca,
    name,
    platform: flags.platform ?? hostPlatform(),
    labels,
    capacity,
    once: flags.once ?? false,
    workRoot,
    spoolDir,
    sandbox,
    killGraceMs,
    drainMs,
    log: log.child({ worker: name }),
  });
}

