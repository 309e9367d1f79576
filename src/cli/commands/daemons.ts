/** The server's long-running commands: server, and up (a server plus one local worker). */
import { spawn, type ChildProcess } from 'node:child_process';
import os from 'node:os';
import path from 'node:path';
import type { Command } from 'commander';
import type { Logger } from 'pino';
import { MAX_DURATION_MS, MAX_TIMER_MS, parseSize } from '../../core/index.js';
import { UsageError } from '../../errors.js';
import { hostPlatform } from '../../host-info.js';
import { KILN_BIN } from '../../package-paths.js';
// The server and worker are loaded only by the commands that run them, to keep client commands fast.
import type { KilnServer } from '../../server/index.js';
import type { ConfigFileSettings } from '../../server/config-file.js';
import { LOCAL_DATA_DIR } from '../defaults.js';
import { durationFlag, STOP_SIGNALS } from '../flags.js';


/** Splits `HOST:PORT` (IPv6 as `[::1]:7420`). */
export function parseListen(text: string, flag = '--listen', example = '127.0.0.1:7420'): { host: string; port: number } {
  const match = /^(?:\[([^\]]+)\]|([^:]+)):(\d{1,5})$/.exec(text);
  const port = Number(match?.[3]);
  if (!match || port > 65_535) throw new UsageError(`bad ${flag} '${text}': use HOST:PORT, e.g. ${example}`);
  return { host: match[1] ?? match[2]!, port };
}

/** Splits `--robur-listen HOST[:PORT]` (IPv6 as `[::1]` or `[::1]:1234`); the port defaults to builder's, 1234. */
export function parseRoburListen(text: string): { host: string; port: number } {
  const bare = /^(?:\[([^\]]+)\]|([^:[\]]+))$/.exec(text);
  if (bare) return { host: bare[1] ?? bare[2]!, port: 1234 };
  return parseListen(text, '--robur-listen', '127.0.0.1:1234');
}

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
  // No comma: the farm's URLs are handed to pool instances as one comma list (KILN_SERVER).
  if (flags.advertise !== undefined && !/^https?:\/\/[^/\s,]+[^\s,]*$/.test(flags.advertise)) {
    throw new UsageError(`bad --advertise '${flags.advertise}': give the URL this server is reached at, e.g. http://kiln-1.example.com:7420`);
  }
  const optional = (flag: string, text: string | undefined, max = MAX_TIMER_MS) => (text === undefined ? undefined : durationFlag(flag, text, false, max));
  const timings = {
    heartbeatMs: optional('--heartbeat', flags.heartbeat),
    reattachGraceMs: optional('--reattach-grace', flags.reattachGrace),
    backstopMs: optional('--backstop', flags.backstop),
    lockRetakeMs: optional('--lock-retake', flags.lockRetake),
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
  if ((flags.tlsCert === undefined) !== (flags.tlsKey === undefined)) throw new UsageError('--tls-cert and --tls-key go together: give both (or tls.cert and tls.key in the config file)');
  if (flags.tlsCa !== undefined && flags.tlsCert === undefined) throw new UsageError('--tls-ca is for a server with --tls-cert and --tls-key');
  const metrics = flags.metricsListen !== undefined
    ? { listen: parseListen(flags.metricsListen, '--metrics-listen', '127.0.0.1:9464') }
    : flags.metrics ? {} : undefined;
  const robur = flags.roburListen === undefined ? undefined : parseRoburListen(flags.roburListen);
  // Parsed here, before anything starts: a bad store stops the server with nothing written.
  const { parseBlobStore } = await import('../../server/artifact-store.js');
  const artifactStore = flags.artifactStore === undefined ? undefined : parseBlobStore(flags.artifactStore, process.cwd(), flags.artifactStoreS3, '--artifact-store');
  const tls = flags.tlsCert === undefined ? undefined : { cert: path.resolve(flags.tlsCert), key: path.resolve(flags.tlsKey!), ca: flags.tlsCa && path.resolve(flags.tlsCa) };
  const { startServer } = await import('../../server/index.js');
  const configDir = flags.configDir === undefined ? undefined : path.resolve(flags.configDir);
  return startServer(log, {
    host, port, advertise: flags.advertise, dataDir: path.resolve(flags.data), configDir, store: flags.store, artifactStore, ...timings,
    artifactLimits: withoutUndefined(artifactLimits), retention: withoutUndefined(retention), upload: upload && { ...withoutUndefined(upload), url: upload.url },
    pools: flags.pools, tls, metrics, robur,
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
    'listen', 'advertise', 'data', 'configDir', 'store', 'heartbeat', 'reattachGrace', 'backstop', 'lockRetake',
    'maxArtifactFile', 'maxArtifactsPerRun', 'keepArtifactsRuns', 'keepArtifactsFor', 'artifactStore', 'upload', 'tlsCert', 'tlsKey', 'tlsCa', 'metricsListen', 'roburListen',
  ] as const;
  for (const key of keys) {
    const source = command.getOptionValueSource(key);
    if ((source === undefined || source === 'default') && fromFile[key] !== undefined) merged[key] = fromFile[key]!;
  }
  if (command.getOptionValueSource('metrics') === undefined && fromFile.metrics !== undefined) merged.metrics = fromFile.metrics;
  // The upload's details go with the file's upload URL only.
  const fileUpload = merged.upload !== undefined && merged.upload === fromFile.upload;
  return {
    ...merged,
    sweepEvery: fromFile.sweepEvery,
    blobGrace: fromFile.blobGrace,
    // The store's credentials go with the file's store only.
    ...(merged.artifactStore !== undefined && merged.artifactStore === fromFile.artifactStore ? { artifactStoreS3: fromFile.artifactStoreS3 } : {}),
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

/** Registers server and up (`kiln worker` is registered by commands/worker.ts). */
export function registerDaemonCommands(program: Command): void {
  program
    .command('server')
    .description('run the Kiln server')
    .option('--listen <host:port>', 'address to listen on', '127.0.0.1:7420')
    .option('--advertise <url>', 'the URL other servers, clients and workers reach this server at, as `kiln info` lists it (default: the listen URL)')
    .option('--data <dir>', 'data dir: store, tokens', LOCAL_DATA_DIR)
    .option('--store <url>', 'store: sqlite:PATH or postgres://USER@HOST:PORT/DATABASE (default: SQLite in the data dir)')
    .option('--config <file>', 'YAML settings (listen, data, config_dir, store, timings, artifacts, upload: see README); options given here win')
    .option('--config-dir <dir>', 'where templates/ is (default: the data dir)')
    .option('--heartbeat <duration>', 'ping workers this often; one silent for two pings is disconnected (default 10s)')
    .option('--reattach-grace <duration>', "how long a disconnected worker's runs wait for it to re-attach before they are lost (default 30s)")
    .option('--backstop <duration>', "how long past a run's timeout or cancel the server waits for the worker's result (default 60s)")
    .option('--lock-retake <duration>', 'on PostgreSQL: how long the server tries to take its schema lock back when the connection holding it drops, before it stops (default 1m)')
    .option('--max-artifact-file <size>', 'largest artifact file kept, e.g. 512mb (default 4gb)')
    .option('--max-artifacts-per-run <size>', 'most artifact bytes one run keeps (default 16gb)')
    .option('--keep-artifacts-runs <n>', 'keep the artifacts of the newest N runs of each job (default: all)')
    .option('--keep-artifacts-for <duration>', 'keep artifacts this long after their run ended, e.g. 30d (default: forever)')
    .option('--artifact-store <store>', 'where artifact blobs live, shared by every server of a farm: dir:PATH or s3://bucket/prefix?endpoint=URL (default: the data dir\'s artifacts/)')
    .option('--upload <url>', "forward each finished run: http(s)://[user:password@]host/path (multipart POST), builder-web+https://user:password@host/upload (robur's builder-web) or s3://bucket/prefix")
    .option('--tls-cert <file>', 'serve HTTPS and WSS with this PEM certificate (with its chain); needs --tls-key')
    .option('--tls-key <file>', 'the PEM private key of --tls-cert (mode 0600 or 0640: a key other users can read is refused)')
    .option('--tls-ca <file>', 'CA file the workers this server starts (pools) trust it by, given to them as KILN_CA')
    .option('--metrics', 'Prometheus metrics at /metrics on the main listener, for a token of any role (default: off)')
    .option('--metrics-listen <host:port>', 'Prometheus metrics at http://HOST:PORT/metrics, a listener of their own with no token: keep it on a private address')
    .option('--robur-listen <host[:port]>', "speak robur builder's protocol there for builder-worker and builder-client (port default 1234; no authentication, as builder's: keep it private)")
    .action(async (given: ServerFlags & { config?: string }, command: Command) => {
      const flags = await withConfigFile(given, command);
      const log = await createLogger();
      // Listened for before anything starts: a signal that comes while the server starts (or
      // right after it says it listens) is a clean stop too, never the default sudden death.
      const stopped = firstSignalThenNow(log);
      const server = await runServer(log, flags);
      process.stderr.write(`kiln server listening on ${server.url} (data in ${path.resolve(flags.data)})${server.uploadTarget ? `, uploading runs to ${server.uploadTarget}` : ''}${server.metricsUrl ? `, metrics at ${server.metricsUrl}` : ''}${server.roburAddress ? `, robur builder protocol on ${server.roburAddress}` : ''}\n`);
      const end = await Promise.race([stopped.then((signal) => ({ signal })), server.failed.then((err) => ({ err }))]);
      if ('err' in end) {
        // Its lock on the store is gone: stop at once, and say why in one line (exit 1).
        await server.close().catch((raw) => log.error({ err: raw }, 'stopping after the store lock was lost'));
        throw end.err;
      }
      log.info({ signal: end.signal }, 'shutting down (a second signal exits at once)');
      await server.close();
      log.info({ signal: end.signal }, 'kiln server stopped');
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
          `  dashboard: ${server.url}/ (sign in with the admin token)`,
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
