/**
 * What a child costs a Node parent of a given size: the time inside spawn() (libuv forks the
 * parent, so its page tables are copied) and to the child's first line, for `sh -c 'echo x'`,
 * from bare Node processes grown to several resident sizes, rounds interleaved.
 * Usage: node bench/spawn-cost.mjs [runs per size, default 200]
 */
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';

const RUNS = Number(process.argv[2] ?? 200);
const SIZES_MB = [0, 40, 100];

if (process.env.SPAWN_COST_GROW !== undefined) {
  // A child of this script: grow by the given MB of touched heap, then answer each line on stdin.
  const keep = [];
  for (let i = 0; i < Number(process.env.SPAWN_COST_GROW); i += 1) keep.push(Buffer.alloc(1024 * 1024, 1));
  globalThis.keep = keep;
  const rss = Number(/VmRSS:\s+(\d+)/.exec(readFileSync('/proc/self/status', 'utf8'))[1]) / 1024;
  process.stdout.write(`${rss.toFixed(0)}\n`);
  process.stdin.setEncoding('utf8');
  process.stdin.on('data', async () => {
    const t0 = performance.now();
    const child = spawn('/bin/sh', ['-c', 'echo x'], { stdio: ['ignore', 'pipe', 'ignore'] });
    const inSpawn = performance.now() - t0;
    await new Promise((resolve) => child.stdout.once('data', resolve));
    const line = performance.now() - t0;
    child.stdout.resume();
    await new Promise((resolve) => child.once('close', resolve));
    process.stdout.write(`${inSpawn.toFixed(3)} ${line.toFixed(3)}\n`);
  });
} else {
  const lines = (child) => {
    let buffer = '';
    const waiting = [];
    child.stdout.on('data', (chunk) => {
      buffer += chunk;
      for (let at; (at = buffer.indexOf('\n')) >= 0; buffer = buffer.slice(at + 1)) waiting.shift()?.(buffer.slice(0, at));
    });
    return () => new Promise((resolve) => waiting.push(resolve));
  };
  const parents = SIZES_MB.map((mb) => {
    const child = spawn(process.execPath, [new URL(import.meta.url).pathname], { env: { ...process.env, SPAWN_COST_GROW: String(mb) }, stdio: ['pipe', 'pipe', 'inherit'] });
    return { child, next: lines(child), spawnMs: [], lineMs: [] };
  });
  for (const parent of parents) parent.rss = await parent.next();
  for (let i = 0; i < RUNS; i += 1) {
    for (const parent of parents) {
      parent.child.stdin.write('go\n');
      const [inSpawn, line] = (await parent.next()).split(' ').map(Number);
      parent.spawnMs.push(inSpawn);
      parent.lineMs.push(line);
    }
  }
  const pct = (values, p) => [...values].sort((a, b) => a - b)[Math.min(values.length - 1, Math.ceil((p / 100) * values.length) - 1)];
  for (const parent of parents) {
    console.log(`parent RSS ${parent.rss.padStart(4)} MB   inside spawn() p50 ${pct(parent.spawnMs, 50).toFixed(2)} ms p99 ${pct(parent.spawnMs, 99).toFixed(2)} ms   to the line p50 ${pct(parent.lineMs, 50).toFixed(2)} ms p99 ${pct(parent.lineMs, 99).toFixed(2)} ms`);
    parent.child.kill();
  }
}
