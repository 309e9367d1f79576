/**
 * Start-up time and idle memory of the compiled package (bin/kiln.mjs -> dist), each beside a bare
 * Node peer measured in the same run, rounds interleaved so drift hits both:
 * - `kiln --version` against `node -e 0` (process spawn -> exit);
 * - `kiln server` spawn -> `/healthz` answered, on a fresh data dir (first start: schema, tokens)
 *   and on that dir again (restart), against a bare `node:http` server spawn -> answered, polled
 *   the same way;
 * - idle RSS of the server and of a connected worker once they have settled, against a bare idle
 *   `node` process that settled as long.
 * Medians over the rounds; the ratio is Kiln's median over the peer's.
 * Usage: npm run bench:startup [-- --rounds 7 --settle 5000]
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { freePort, KILN, median, numberArg, startKiln } from './support.js';

const ROUNDS = numberArg('--rounds', 7);
/** How long a process idles before its RSS is read (ms). */
const SETTLE_MS = numberArg('--settle', 5000);

/** Spawns a process and resolves with the ms from spawn to its exit. */
async function timeToExit(command: string, args: string[]): Promise<number> {
  const t0 = performance.now();
  const child = spawn(command, args, { stdio: 'ignore' });
  const code = await new Promise((resolve) => child.once('exit', resolve));
  if (code !== 0) throw new Error(`${command} ${args.join(' ')} exited with ${code}`);
  return performance.now() - t0;
}

/** Resolves once `url` answers 200 (polled every 2 ms: nothing tells a bare server's readiness otherwise). */
async function answered(url: string, child: ChildProcess): Promise<void> {
  for (;;) {
    if (child.exitCode !== null) throw new Error(`the server exited with ${child.exitCode}`);
    try {
      const reply = await fetch(url);
      if (reply.ok) return;
    } catch {
      // Not listening yet.
    }
    await sleep(2);
  }
}

/** Spawns `args` and resolves with [child, ms from spawn to `url` answering]. */
async function timeToAnswer(args: string[], url: string): Promise<[ChildProcess, number]> {
  const t0 = performance.now();
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, KILN_LOG_LEVEL: 'info' } });
  child.stderr!.resume();
  await answered(url, child);
  return [child, performance.now() - t0];
}

/** Resident memory of a process, in MiB (VmRSS kB / 1024; the "MB" of issue 13's targets and of BENCHMARKS.md). */
function rssMb(pid: number): number {
  const line = readFileSync(`/proc/${pid}/status`, 'utf8').split('\n').find((l) => l.startsWith('VmRSS:'))!;
  return Number(line.split(/\s+/)[1]) / 1024;
}

async function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGTERM');
  await exited;
}

const BARE_HTTP = "require('node:http').createServer((q, s) => s.end('ok')).listen(Number(process.argv[1]), '127.0.0.1')";
const BARE_IDLE = 'setInterval(() => {}, 1 << 30)';

const figures = new Map<string, number[]>();
const add = (key: string, value: number) => figures.set(key, [...(figures.get(key) ?? []), value]);
const started: ChildProcess[] = [];
const dirs: string[] = [];

try {
  // One warm-up of each, not counted: the page cache then holds the files every round reads.
  await timeToExit(process.execPath, [KILN, '--version']);
  await timeToExit(process.execPath, ['-e', '0']);
  for (let round = 0; round < ROUNDS; round += 1) {
    add('version', await timeToExit(process.execPath, [KILN, '--version']));
    add('node-e0', await timeToExit(process.execPath, ['-e', '0']));

    let port = await freePort();
    const [bare, bareMs] = await timeToAnswer(['-e', BARE_HTTP, String(port)], `http://127.0.0.1:${port}/`);
    add('bare-http', bareMs);
    await stop(bare);

    const dataDir = mkdtempSync(path.join(os.tmpdir(), 'kiln-bench-startup-'));
    dirs.push(dataDir);
    port = await freePort();
    const serverArgs = [KILN, 'server', '--listen', `127.0.0.1:${port}`, '--data', dataDir];
    const [first, firstMs] = await timeToAnswer(serverArgs, `http://127.0.0.1:${port}/healthz`);
    add('server-first', firstMs);
    await stop(first);
    const [server, restartMs] = await timeToAnswer(serverArgs, `http://127.0.0.1:${port}/healthz`);
    started.push(server);
    add('server-restart', restartMs);

    // A connected worker, and a bare idle node started at the same time: both settle as long.
    const token = readFileSync(path.join(dataDir, 'worker.token'), 'utf8').trim();
    const worker = startKiln(['worker', '--server', `http://127.0.0.1:${port}`, '--name', `bench-${round}`], { KILN_WORKER_TOKEN: token }, /connected to the server/);
    started.push(worker.child);
    const idle = spawn(process.execPath, ['-e', BARE_IDLE], { stdio: 'ignore' });
    started.push(idle);
    await worker.started;
    await sleep(SETTLE_MS);
    add('rss-server', rssMb(server.pid!));
    add('rss-worker', rssMb(worker.child.pid!));
    add('rss-node', rssMb(idle.pid!));
    await Promise.all([stop(worker.child), stop(idle)]);
    await stop(server);
    started.length = 0;
    rmSync(dataDir, { recursive: true, force: true });
  }

  const rows: [string, string, string, string, number][] = [
    ['`kiln --version`', 'version', '`node -e 0`', 'node-e0', 0],
    ['server spawn -> /healthz (first start)', 'server-first', 'bare node:http spawn -> answered', 'bare-http', 0],
    ['server spawn -> /healthz (restart)', 'server-restart', 'bare node:http spawn -> answered', 'bare-http', 0],
    ['idle RSS, server', 'rss-server', 'idle RSS, bare `node`', 'rss-node', 1],
    ['idle RSS, worker', 'rss-worker', 'idle RSS, bare `node`', 'rss-node', 1],
  ];
  console.log(`start-up and idle memory, compiled package, ${ROUNDS} rounds, settle ${SETTLE_MS} ms, ${os.cpus().length} cores, load ${os.loadavg().map((l) => l.toFixed(1)).join(' ')}, Node ${process.versions.node}`);
  console.log(`${'kiln'.padEnd(40)} ${'median'.padStart(9)} ${'(min - max)'.padEnd(17)} ${'peer'.padEnd(34)} ${'median'.padStart(9)}  ratio`);
  for (const [label, key, peerLabel, peerKey, isMb] of rows) {
    const unit = isMb ? 'MiB' : 'ms';
    const ours = figures.get(key)!;
    const peer = figures.get(peerKey)!;
    const fmt = (v: number) => `${v.toFixed(isMb ? 1 : 0)} ${unit}`;
    console.log(
      `${label.padEnd(40)} ${fmt(median(ours)).padStart(9)} ${`(${Math.min(...ours).toFixed(0)} - ${Math.max(...ours).toFixed(0)})`.padEnd(17)} ` +
        `${peerLabel.padEnd(34)} ${fmt(median(peer)).padStart(9)}  ${(median(ours) / median(peer)).toFixed(2)}`,
    );
  }
  // The memory targets beside their peer (issue 13 item 4).
  const bare = median(figures.get('rss-node')!);
  for (const [what, key, limit] of [['a server with one worker connected', 'rss-server', 60], ['a connected worker', 'rss-worker', 50]] as const) {
    const ours = median(figures.get(key)!);
    console.log(`target: idle RSS of ${what} <= ${limit} MiB: ${ours.toFixed(1)} MiB = ${(ours * 1.048576).toFixed(1)} MB (bare idle node ${bare.toFixed(1)} MiB, +${(ours - bare).toFixed(1)} MiB): ${ours <= limit ? 'met' : 'not met'}`);
  }
} finally {
  await Promise.all(started.map(stop));
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
}
