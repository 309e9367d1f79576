/** The long-running commands: server, worker, and up (a server plus one local worker). */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, readFileSync, rmSync, unlinkSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Command } from 'commander';
import type { Logger } from 'pino';
import { durationRangeProblem, MAX_DURATION_MS, MAX_TIMER_MS, parseDuration, parsePairs, parseSize } from '../../core/index.js';
import { coerceError, UsageError } from '../../errors.js';
import { hostPlatform } from '../../host-info.js';
import { KILN_BIN } from '../../package-paths.js';
// The server and worker are loaded only by the commands that run them, to keep client commands fast.
import type { KilnServer } from '../../server/index.js';
import type { ConfigFileSettings } from '../../server/config-file.js';
import type { WorkerAgent } from '../../worker/index.js';
import { DEFAULT_SERVER, LOCAL_DATA_DIR, readTokenFile } from '../context.js';

const collect = (value: string, previous: string[] = []) => [...previous, value];

/** Splits `HOST:PORT` (IPv6 as `[::1]:7420`). */
export function parseListen(text: string): { host: string; port: number } {
  const match = /^(?:\[([^\]]+)\]|([^:]+)):(\d{1,5})$/.exec(text);
  const port = Number(match?.[3]);
  if (!match || port > 65_535) throw new UsageError(`bad --listen '${text}': use HOST:PORT, e.g. 127.0.0.1:7420`);
  return { host: match[1] ?? match[2]!, port };
}

/**
 * The signals that stop a daemon cleanly. SIGHUP is one of them (it is not a reload: Kiln reads
 * its configuration only at start): a closed terminal or an `ssh` session that ends sends it, and
 * Node's default for it is to die at once, without the shutdown that keeps runs and results.
 */
const STOP_SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;

/** Resolves once one of STOP_SIGNALS arrives. */
function shutdownSignal(): Promise<NodeJS.Signals> {
  return new Promise((resolve) => {
    const handlers = STOP_SIGNALS.map((signal) => {
      const handler = () => {
        for (const [i, other] of STOP_SIGNALS.entries()) process.off(other, handlers[i]!);
        resolve(signal);
      };
      process.on(signal, handler);
      return handler;
    });
  });
}

/** The server's settings: the config file's, with listen and data always given (flags or defaults). */
type ServerFlags = Omit<ConfigFileSettings, 'listen' | 'data'> & { listen: string; data: string };

/** The daemons' logger. Pino is loaded only here: client commands and --version start without it. */
async function createLogger(level?: string): Promise<Logger> {
  const { createLogger: create } = await import('../logger.js');
  return create(level);
}

/** Parses a size flag or throws a usage error naming it. */
function sizeFlag(flag: string, text: string): number {
  const value = parseSize(text);
  if (value === undefined) throw new UsageError(`bad ${flag} '${text}': use a size like 512mb or 4gb`);
  return value;
}

async function runServer(log: Logger, flags: ServerFlags): Promise<KilnServer> {
  const { host, port } = parseListen(flags.listen);
  const optional = (flag: string, text: string | undefined, max = MAX_TIMER_MS) => (text === undefined ? undefined : durationFlag(flag, text, false, max));
  const timings = {
    heartbeatMs: optional('--heartbeat', flags.heartbeat),
    reattachGraceMs: optional('--reattach-grace', flags.reattachGrace),
    backstopMs: optional('--backstop', flags.backstop),
  };
  const artifactLimits = {
    fileBytes: flags.maxArtifactFile === undefined ? undefined : sizeFlag('--max-artifact-file', flags.maxArtifactFile),
    runBytes: flags.maxArtifactsPerRun === undefined ? undefined : sizeFlag('--max-artifacts-per-run', flags.maxArtifactsPerRun),
  };
  const keepRuns = flags.keepArtifactsRuns === undefined ? undefined : Number(flags.keepArtifactsRuns);
  if (keepRuns !== undefined && (!Number.isInteger(keepRuns) || keepRuns < 0)) {
    throw new UsageError(`bad --keep-artifacts-runs '${flags.keepArtifactsRuns}': give a whole number, e.g. 10`);
  }
  const retention = {
    keepRuns,
    // Retention times are compared with run times, not timers (the sweeper caps its own sleep).
    keepForMs: optional('--keep-artifacts-for', flags.keepArtifactsFor, MAX_DURATION_MS),
    sweepEveryMs: optional('artifacts.sweep_every', flags.sweepEvery, MAX_DURATION_MS),
    graceMs: flags.blobGrace === undefined ? undefined : durationFlag('artifacts.blob_grace', flags.blobGrace, true, MAX_DURATION_MS),
  };
  const upload = flags.upload === undefined ? undefined : {
    url: flags.upload,
    s3: flags.s3,
    retryMinMs: optional('upload.retry_min', flags.uploadRetryMin),
    retryMaxMs: optional('upload.retry_max', flags.uploadRetryMax),
    maxAttempts: flags.uploadMaxAttempts,
  };
  const { startServer } = await import('../../server/index.js');
  const configDir = flags.configDir === undefined ? undefined : path.resolve(flags.configDir);
  return startServer(log, {
    host, port, dataDir: path.resolve(flags.data), configDir, store: flags.store, ...timings,
    artifactLimits: withoutUndefined(artifactLimits), retention: withoutUndefined(retention), upload: upload && { ...withoutUndefined(upload), url: upload.url },
    pools: flags.pools,
  });
}

/** The object without its undefined values, so defaults spread under it survive. */
function withoutUndefined<T extends object>(value: T): Partial<T> {
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined)) as Partial<T>;
}

/** Fills the options not given on the command line from `--config FILE`. */
async function withConfigFile(flags: ServerFlags & { config?: string }, command: Command): Promise<ServerFlags> {
  if (!flags.config) return flags;
  const { readConfigFile } = await import('../../server/config-file.js');
  const fromFile = await readConfigFile(path.resolve(flags.config));
  const merged: ServerFlags = { ...flags };
  const keys = [
    'listen', 'data', 'configDir', 'store', 'heartbeat', 'reattachGrace', 'backstop',
    'maxArtifactFile', 'maxArtifactsPerRun', 'keepArtifactsRuns', 'keepArtifactsFor', 'upload',
  ] as const;
  for (const key of keys) {
    const source = command.getOptionValueSource(key);
    if ((source === undefined || source === 'default') && fromFile[key] !== undefined) merged[key] = fromFile[key]!;
  }
  // The upload's details go with the file's upload URL only.
  const fileUpload = merged.upload !== undefined && merged.upload === fromFile.upload;
  return {
    ...merged,
    sweepEvery: fromFile.sweepEvery,
    blobGrace: fromFile.blobGrace,
    pools: fromFile.pools,
    ...(fileUpload ? { uploadRetryMin: fromFile.uploadRetryMin, uploadRetryMax: fromFile.uploadRetryMax, uploadMaxAttempts: fromFile.uploadMaxAttempts, s3: fromFile.s3 } : {}),
  };
}

/** Resolves on the first stop signal (with it); a second one ends the process at once. */
async function firstSignalThenNow(log: Logger): Promise<NodeJS.Signals> {
  const signal = await shutdownSignal();
  const now = (second: NodeJS.Signals) => {
    log.warn({ signal: second }, 'second signal: exiting now');
    process.exit(130);
  };
  for (const other of STOP_SIGNALS) process.once(other, now);
  return signal;
}

interface WorkerFlags {
  server?: string;
  token?: string;
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

/** Parses a duration flag or throws a usage error naming it. */
function durationFlag(flag: string, text: string, allowZero = false, max = MAX_TIMER_MS): number {
  const ms = parseDuration(text);
  if (ms === undefined || ms < 0 || (!allowZero && ms === 0)) throw new UsageError(`bad ${flag} '${text}': use a duration like 500ms, 10s, 5m`);
  const problem = durationRangeProblem(ms, max);
  if (problem) throw new UsageError(`bad ${flag} '${text}': ${problem}${max === MAX_TIMER_MS ? ' (longer timers fire at once)' : ''}`);
  return ms;
}

/** Registers server, worker and up. */
export function registerDaemonCommands(program: Command): void {
  program
    .command('server')
    .description('run the Kiln server')
    .option('--listen <host:port>', 'address to listen on', '127.0.0.1:7420')
    .option('--data <dir>', 'data dir: store, tokens', LOCAL_DATA_DIR)
    .option('--store <url>', 'store: sqlite:PATH (default: SQLite in the data dir)')
    .option('--config <file>', 'YAML settings (listen, data, config_dir, store, timings, artifacts, upload: see README); options given here win')
    .option('--config-dir <dir>', 'where templates/ is (default: the data dir)')
    .option('--heartbeat <duration>', 'ping workers this often; one silent for two pings is disconnected (default 10s)')
    .option('--reattach-grace <duration>', "how long a disconnected worker's runs wait for it to re-attach before they are lost (default 30s)")
    .option('--backstop <duration>', "how long past a run's timeout or cancel the server waits for the worker's result (default 60s)")
    .option('--max-artifact-file <size>', 'largest artifact file kept, e.g. 512mb (default 4gb)')
    .option('--max-artifacts-per-run <size>', 'most artifact bytes one run keeps (default 16gb)')
    .option('--keep-artifacts-runs <n>', 'keep the artifacts of the newest N runs of each job (default: all)')
    .option('--keep-artifacts-for <duration>', 'keep artifacts this long after their run ended, e.g. 30d (default: forever)')
    .option('--upload <url>', 'forward each finished run: http(s)://[user:password@]host/path (multipart POST) or s3://bucket/prefix')
    .action(async (given: ServerFlags & { config?: string }, command: Command) => {
      const flags = await withConfigFile(given, command);
      const log = await createLogger();
      // Listened for before anything starts: a signal that comes while the server starts (or
      // right after it says it listens) is a clean stop too, never the default sudden death.
      const stopped = firstSignalThenNow(log);
      const server = await runServer(log, flags);
      process.stderr.write(`kiln server listening on ${server.url} (data in ${path.resolve(flags.data)})${server.uploadTarget ? `, uploading runs to ${server.uploadTarget}` : ''}\n`);
      const signal = await stopped;
      log.info({ signal }, 'shutting down (a second signal exits at once)');
      await server.close();
      log.info({ signal }, 'kiln server stopped');
    });

  program
    .command('worker')
    .description(
      'run a worker that takes jobs from the server; it connects to --server (env KILN_SERVER, ' +
        `default ${DEFAULT_SERVER}) with the worker token: --token-file FILE, else descriptor $KILN_WORKER_TOKEN_FD, else file $KILN_WORKER_TOKEN_FILE (removed once read), else env KILN_WORKER_TOKEN, else ./.kiln/worker.token (--token works too, but shows the token to every local user in ps)`,
    )
    .option('--token-file <file>', 'read the worker token (the shared one, or its own from kiln worker-token create) from this file; it is kept')
    .option('--name <name>', 'worker name (default: env KILN_WORKER_NAME, else HOSTNAME-PID)')
    .option('--platform <platform>', "platform it serves (default: this host's, e.g. debian-12)")
    .option('--label <K=V>', 'a label jobs can ask for (repeatable)', collect)
    .option('--capacity <n>', 'runs at once', '1')
    .option('--once', 'take one run, report it and exit')
    .option('--sandbox <kind>', 'none (a plain process group) or bwrap (bubblewrap: read-only host, private /tmp, own namespaces)', 'none')
    .option('--network <mode>', 'with --sandbox bwrap: host (jobs may use the network) or none (every job cut off)', 'host')
    .option('--bind <src[:dest]>', 'with --sandbox bwrap: also mount this host path writable in every job (repeatable)', collect)
    .option('--ro-bind <src[:dest]>', 'with --sandbox bwrap: also mount this host path read-only over what is there (repeatable)', collect)
    .option('--hide <dir>', "with --sandbox bwrap: show jobs this host dir empty, e.g. other workers' state (repeatable)", collect)
    .option('--work-dir <dir>', 'where work dirs are made (default: the system temp dir)')
    .option('--spool-dir <dir>', "where running jobs' output is kept until the server has it (default: a private dir TMPDIR/kiln-spool-NAME-XXXXXX, removed at exit)")
    .option('--kill-grace <duration>', 'time between SIGTERM and SIGKILL when stopping a job', '10s')
    .option('--drain-timeout <duration>', 'on SIGTERM, how long running jobs may go on before they are cancelled', '5m')
    .action(async (flags: WorkerFlags, command: Command) => {
      // --server and --token are the global options; for a worker the token is the worker token.
      const { server, token } = command.optsWithGlobals<{ server?: string; token?: string }>();
      const log = await createLogger();
      const agent = await createWorker(log, { ...flags, server, token });
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
    });

  program
    .command('up')
    .description('quick start: a server on the embedded store plus one local worker')
    .option('--data <dir>', 'data dir', LOCAL_DATA_DIR)
    .option('--listen <host:port>', 'address to listen on', '127.0.0.1:7420')
    .action(async (flags: { data: string; listen: string }) => {
      const log = await createLogger(process.env.KILN_LOG_LEVEL ?? 'warn');
      // The local worker logs at the same level as `up` itself.
      process.env.KILN_LOG_LEVEL = log.level;
      const stopped = firstSignalThenNow(log);
      const server = await runServer(log, flags);
      const workerName = `${os.hostname()}-local`;
      const worker = superviseWorker(log, server, workerName);
      const tokenFile = path.resolve(flags.data, 'admin.token');
      const local = path.resolve(flags.data) === path.resolve(LOCAL_DATA_DIR);
      process.stdout.write(
        [
          `Kiln is up at ${server.url}`,
          `  data: ${path.resolve(flags.data)}    worker: ${workerName} (${hostPlatform()})`,
          local
            ? `  the client reads the admin token from ./${LOCAL_DATA_DIR}/admin.token when run in this directory; elsewhere:`
            : '  point the client at it:',
          `    export KILN_SERVER=${server.url} KILN_TOKEN=$(cat ${tokenFile})`,
          `  try: kiln schedule hello --command 'echo hello from kiln' --period never && kiln observe $(kiln execute hello)`,
          '',
        ].join('\n'),
      );
      const signal = await stopped;
      log.info({ signal }, 'shutting down');
      await worker.stop();
      await server.close();
      log.info({ signal }, 'kiln up stopped');
    });
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

/** Builds a worker agent from its flags. */
async function createWorker(log: Logger, flags: WorkerFlags): Promise<WorkerAgent> {
  const { BwrapSandboxLauncher, checkBwrap, closeInheritedDescriptors, detectLimits, makeSpoolDir, parseBind, ProcessSandboxLauncher, WorkerAgent } = await import('../../worker/index.js');
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
  return new WorkerAgent({
    server: flags.server ?? process.env.KILN_SERVER ?? DEFAULT_SERVER,
    token,
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

/** Keeps one local worker process running next to the server of `kiln up`. */
function superviseWorker(log: Logger, server: KilnServer, name: string): { stop(): Promise<void> } {
  let child: ChildProcess | undefined;
  let stopping = false;
  const start = () => {
    child = spawn(process.execPath, [KILN_BIN, 'worker', '--server', server.url, '--name', name, '--drain-timeout', '0s'], {
      env: { ...process.env, KILN_WORKER_TOKEN: server.tokens.worker, KILN_EXIT_WITH_STDIN: '1' },
      // The worker watches this pipe: if `kiln up` dies, even by SIGKILL, the pipe closes and the worker stops.
      stdio: ['pipe', 'inherit', 'inherit'],
    });
    child.once('exit', (code, signal) => {
      if (stopping) return;
      log.error({ code, signal }, 'the local worker exited; restarting it in 1s');
      setTimeout(start, 1000);
    });
  };
  start();
  return {
    async stop() {
      stopping = true;
      if (!child || child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise((resolve) => child!.once('exit', resolve));
      // The worker runs with --drain-timeout 0s: its running jobs stop now and end cancelled.
      child.kill('SIGTERM');
      await exited;
    },
  };
}
