/**
 * Real processes for end-to-end tests: the kiln server, workers and CLI, on free ports and temp
 * dirs. Every process started is killed by pid when the test ends. Waiting is done on events
 * (a log line, a process exit), never on sleeps.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import type { TestContext } from 'node:test';

export const KILN_BIN = fileURLToPath(new URL('../../bin/kiln.mjs', import.meta.url));
/** The longest a test waits for a process's line before failing with what it printed. */
const WAIT_FOR_MS = 90_000;
/** How long `exited` waits, after the exit, for the child's output streams to end. */
const STREAMS_AFTER_EXIT_MS = 5_000;

/** A port nobody listens on right now. */
export async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/** A temp dir removed when the test ends. */
export function tempDir(t: TestContext, prefix = 'kiln-test-'): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), prefix));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** A child process that the test owns. */
export interface Owned {
  child: ChildProcess;
  pid: number;
  /** Every line printed so far (stdout and stderr). */
  stderr: string[];
  /** Resolves with the first printed line matching `pattern`, from line `since` on (default: all). */
  waitFor(pattern: RegExp, since?: number): Promise<string>;
  /** Resolves once `count` printed lines match `pattern`, from line `since` on. */
  waitForCount(pattern: RegExp, count: number, since?: number): Promise<void>;
  /** Resolves when the process has exited. */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  kill(signal?: NodeJS.Signals): Promise<void>;
}

/** Starts `kiln ARGS` in the background; it is killed when the test ends. */
export function spawnKiln(t: TestContext, args: string[], env: Record<string, string> = {}, cwd?: string): Owned {
  return spawnCommand(t, process.execPath, [KILN_BIN, ...args], { name: `kiln ${args[0]}`, env, cwd });
}

/** Starts `command ARGS` (an installed `kiln`, say) in the background, as spawnKiln does; it is killed when the test ends. */
export function spawnCommand(
  t: TestContext,
  command: string,
  args: string[],
  { name = command, env = {}, cwd }: { name?: string; env?: Record<string, string>; cwd?: string } = {},
): Owned {
  const child = spawn(command, args, {
    env: { ...process.env, KILN_LOG_LEVEL: 'info', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
    cwd,
  });
  const stderr: string[] = [];
  const watchers: { pattern: RegExp; resolve: (line: string) => void }[] = [];
  const onLine = (line: string) => {
    stderr.push(line);
    for (const w of [...watchers]) if (w.pattern.test(line)) {
      watchers.splice(watchers.indexOf(w), 1);
      w.resolve(line);
    }
  };
  // Both streams are watched: daemons log on stderr, `kiln up` greets on stdout.
  const streams = [createInterface({ input: child.stderr! }), createInterface({ input: child.stdout! })];
  for (const lines of streams) lines.on('line', onLine);
  const streamsEnded = Promise.all(streams.map((lines) => once(lines, 'close')));
  // 'exit' may come before the last lines are read: `exited` waits for both streams to end too, so
  // `stderr` is whole then (bounded: a process the child left behind may hold them open).
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('exit', (code, signal) => {
      const bound = setTimeout(() => resolve({ code, signal }), STREAMS_AFTER_EXIT_MS);
      void streamsEnded.then(() => (clearTimeout(bound), resolve({ code, signal })));
    }),
  );
  const owned: Owned = {
    child,
    pid: child.pid!,
    stderr,
    exited,
    waitFor(pattern, since = 0) {
      const seen = stderr.slice(since).find((line) => pattern.test(line));
      if (seen) return Promise.resolve(seen);
      return new Promise((resolve, reject) => {
        // Bounded, so a line that never comes fails the test saying which, not the file's deadline.
        const timer = setTimeout(() => {
          watchers.splice(watchers.indexOf(watcher), 1);
          reject(new Error(`${name} did not print ${pattern} within ${WAIT_FOR_MS / 1000} s:\n${stderr.join('\n')}`));
        }, WAIT_FOR_MS);
        const watcher = { pattern, resolve: (line: string) => (clearTimeout(timer), resolve(line)) };
        watchers.push(watcher);
        void exited.then(({ code, signal }) => {
          clearTimeout(timer);
          reject(new Error(`${name} exited (${code ?? signal}) before printing ${pattern}:\n${stderr.join('\n')}`));
        });
      });
    },
    async waitForCount(pattern, count, since = 0) {
      for (let seen = 0, from = since; seen < count; seen += 1) from = stderr.indexOf(await this.waitFor(pattern, from), from) + 1;
    },
    async kill(signal = 'SIGKILL') {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill(signal);
        await exited;
      }
    },
  };
  t.after(() => owned.kill('SIGKILL'));
  return owned;
}

/** A server process with its URL and tokens. */
export interface ServerProcess extends Owned {
  url: string;
  dataDir: string;
  adminToken: string;
  workerToken: string;
}

/** The PostgreSQL schema URL each data dir's servers use under KILN_TEST_STORE=postgres (a restart finds its own). */
const postgresStores = new Map<string, string>();

/** Whether e2e servers run on PostgreSQL in this run (KILN_TEST_STORE=postgres; `npm run test:e2e:postgres`). */
export const onPostgres = process.env.KILN_TEST_STORE === 'postgres';

/**
 * The `--store` the servers started on `dataDir` by startServer use (undefined: SQLite in the data
 * dir), for a test that opens the store itself while no server runs (openStore(dataDir, storeOf(dataDir))).
 */
export function storeOf(dataDir: string): string | undefined {
  return postgresStores.get(dataDir);
}

/**
 * `--store` for a server on `dataDir`: none (SQLite in the data dir) unless KILN_TEST_STORE=postgres,
 * which puts each data dir's store in a fresh PostgreSQL schema, dropped when the test ends.
 */
async function storeArgs(t: TestContext, dataDir: string, args: string[]): Promise<string[]> {
  if (!onPostgres || args.includes('--store') || args.includes('--config')) return [];
  let url = postgresStores.get(dataDir);
  if (url === undefined) {
    const { freshSchema } = await import('./postgres.js');
    url = (await freshSchema(t)).url;
    postgresStores.set(dataDir, url);
  }
  return ['--store', url];
}

/** Starts `kiln server` on a free port and waits until it listens. */
export async function startServer(t: TestContext, options: { dataDir?: string; port?: number; args?: string[]; env?: Record<string, string> } = {}): Promise<ServerProcess> {
  const dataDir = options.dataDir ?? tempDir(t);
  const port = options.port ?? (await freePort());
  const args = options.args ?? [];
  const owned = spawnKiln(t, ['server', '--listen', `127.0.0.1:${port}`, '--data', dataDir, ...args, ...(await storeArgs(t, dataDir, args))], options.env);
  await owned.waitFor(/kiln server listening/);
  return {
    ...owned,
    url: `http://127.0.0.1:${port}`,
    dataDir,
    adminToken: readFileSync(path.join(dataDir, 'admin.token'), 'utf8').trim(),
    workerToken: readFileSync(path.join(dataDir, 'worker.token'), 'utf8').trim(),
  };
}

/** Starts `kiln worker` against a server and waits until it is connected. */
export async function startWorker(t: TestContext, server: ServerProcess, args: string[] = []): Promise<Owned> {
  const owned = spawnKiln(t, ['worker', '--server', server.url, ...args], { KILN_WORKER_TOKEN: server.workerToken });
  await owned.waitFor(/connected to the server/);
  return owned;
}

/** What a CLI invocation printed and how it exited. */
export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs `kiln ARGS` against a server and resolves when it exits; `bin`: an installed kiln to run instead of the checkout's. */
export function kiln(server: Pick<ServerProcess, 'url' | 'adminToken'> | undefined, args: string[], options: { env?: Record<string, string>; cwd?: string; bin?: string } = {}): Promise<CliResult> {
  const env: Record<string, string> = { ...(process.env as Record<string, string>), ...options.env };
  delete env.KILN_SERVER;
  delete env.KILN_TOKEN;
  if (server) Object.assign(env, { KILN_SERVER: server.url, KILN_TOKEN: server.adminToken }, options.env);
  return new Promise((resolve) => {
    const [file, argv]: [string, string[]] = options.bin ? [options.bin, args] : [process.execPath, [KILN_BIN, ...args]];
    execFile(file, argv, { env, cwd: options.cwd, maxBuffer: 64 * 1024 * 1024 }, (error, stdout, stderr) => {
      const code = error ? (typeof error.code === 'number' ? error.code : 1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

/** Calls the server's API directly (for bulk setup that would take minutes through the CLI). */
export async function api<T>(server: Pick<ServerProcess, 'url' | 'adminToken'>, method: string, route: string, body?: unknown): Promise<T> {
  const response = await fetch(server.url + route, {
    method,
    headers: { authorization: `Bearer ${server.adminToken}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const json = (await response.json()) as T;
  if (!response.ok) throw new Error(`${method} ${route}: ${response.status} ${JSON.stringify(json)}`);
  return json;
}

/** Follows a run's console through the API until its end event; resolves with the lines and the run. */
export async function followRun(server: Pick<ServerProcess, 'url' | 'adminToken'>, runId: string): Promise<{ lines: string[]; run: { status: string; resultText: string | null } }> {
  const response = await fetch(`${server.url}/api/runs/${runId}/console?follow=true`, { headers: { authorization: `Bearer ${server.adminToken}` } });
  const events = (await response.text()).split('\n').filter(Boolean).map((line) => JSON.parse(line));
  const end = events.at(-1);
  if (end?.type !== 'end') throw new Error(`console of ${runId} ended without an end event`);
  return { lines: events.filter((e) => e.type === 'line').map((e) => e.text), run: end.run };
}

/** Kills a process group left behind on purpose by a test; a group already gone is fine. */
export function killGroup(pid: number): void {
  try {
    process.kill(-pid, 'SIGKILL');
  } catch (raw) {
    if ((raw as NodeJS.ErrnoException).code !== 'ESRCH') throw raw;
  }
}

/** True while a process exists and is not a zombie. */
export function isAlive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return false;
  }
}

/** A TCP proxy on loopback whose traffic a test can cut and restore. */
export interface CuttableProxy {
  port: number;
  /** Drops every connection and refuses new ones. */
  cut(): void;
  /** Accepts connections again. */
  restore(): void;
}

/** Starts a proxy to 127.0.0.1:`targetPort`; closed when the test ends. */
export async function startProxy(t: TestContext, targetPort: number): Promise<CuttableProxy> {
  let open = true;
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    if (!open) return client.destroy();
    const upstream = net.connect(targetPort, '127.0.0.1');
    for (const [a, b] of [[client, upstream], [upstream, client]] as const) {
      sockets.add(a);
      a.on('error', () => b.destroy());
      a.on('close', () => {
        sockets.delete(a);
        b.destroy();
      });
      a.pipe(b);
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.after(() => {
    for (const socket of sockets) socket.destroy();
    server.close();
  });
  return {
    port: (server.address() as net.AddressInfo).port,
    cut() {
      open = false;
      for (const socket of sockets) socket.destroy();
    },
    restore() {
      open = true;
    },
  };
}

/** A process's peak resident memory so far (VmHWM), in bytes. */
export function peakRss(pid: number): number {
  const match = /^VmHWM:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!match) throw new Error(`no VmHWM for pid ${pid}`);
  return Number(match[1]) * 1024;
}

/** Resolves once the run's console has a line (the job is running), followed live, not polled. */
export async function firstLine(server: { url: string; adminToken: string }, runId: string): Promise<void> {
  const controller = new AbortController();
  const response = await fetch(`${server.url}/api/runs/${runId}/console?follow=true`, { headers: { authorization: `Bearer ${server.adminToken}` }, signal: controller.signal });
  let text = '';
  for await (const chunk of response.body!) {
    text += Buffer.from(chunk).toString();
    if (text.includes('"type":"line"')) break;
  }
  controller.abort();
}

/** Pids of processes started as instances of the pools of `owner` (by exact owner id, from their environment). */
export function instanceProcesses(owner: string): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (readFileSync(`/proc/${entry}/environ`, 'utf8').includes(`KILN_POOL_INSTANCE=${owner}/`)) pids.push(Number(entry));
    } catch {
      // Gone meanwhile.
    }
  }
  return pids;
}
