/**
 * The machine's own limit for a job's first line, for bench/execute-latency.ts: a bare Node
 * process (no tsx, nothing loaded, ~40 MB) that, for each line read on stdin, makes a fresh dir,
 * spawns `sh -c 'echo first line'` in it and answers `<ms to the line> <ms inside spawn()>`.
 * Plain JS so it starts as small as Node can be.
 */
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';

for await (const _ of createInterface({ input: process.stdin })) {
  const t0 = performance.now();
  const dir = await mkdtemp(path.join(os.tmpdir(), 'kiln-peer-'));
  const before = performance.now();
  const child = spawn('/bin/sh', ['-c', 'echo first line'], { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
  const inSpawn = performance.now() - before;
  await new Promise((resolve, reject) => {
    child.once('error', reject);
    child.stdout.once('data', resolve);
  });
  const ms = performance.now() - t0;
  child.stdout.resume();
  await new Promise((resolve) => child.once('close', resolve));
  await rm(dir, { recursive: true, force: true });
  process.stdout.write(`${ms.toFixed(3)} ${inSpawn.toFixed(3)}\n`);
}
