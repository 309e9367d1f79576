/**
 * How late scheduled runs are queued: a real server with a job `--every 1s` and no overlap limit,
 * 50 due times; for each, the time between the due time and the server's "schedule fired" log
 * line (written after the run is committed to the queue).
 * Usage: node --import tsx bench/schedule-lateness.ts [--runs 50]
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { freePort, KILN, numberArg } from './support.js';

const RUNS = numberArg('--runs', 50);
const port = await freePort();

const dataDir = mkdtempSync(path.join(os.tmpdir(), 'kiln-bench-late-'));
const child = spawn(process.execPath, [KILN, 'server', '--listen', `127.0.0.1:${port}`, '--data', dataDir], {
  env: { ...process.env, KILN_LOG_LEVEL: 'info' }, stdio: ['ignore', 'ignore', 'pipe'],
});
try {
  const lateness: number[] = [];
  await new Promise<void>((resolve, reject) => {
    child.once('exit', (code) => reject(new Error(`server exited with ${code}`)));
    createInterface({ input: child.stderr! }).on('line', (line) => {
      if (/kiln server listening/.test(line)) {
        const token = readFileSync(path.join(dataDir, 'admin.token'), 'utf8').trim();
        void fetch(`http://127.0.0.1:${port}/api/jobs`, {
          method: 'POST',
          headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
          // overlap queue: with no worker the first run stays queued; every due time still fires.
          body: JSON.stringify({ name: 'tick', platform: 'bench', script: 'true\n', schedule: { kind: 'every', everyMs: 1000 }, overlap: 'queue' }),
        });
      }
      if (/schedule (fired|due, nothing queued)/.test(line)) {
        const entry = JSON.parse(line) as { time: number; due?: string };
        if (entry.due) lateness.push(entry.time - Date.parse(entry.due));
        if (lateness.length >= RUNS) resolve();
      }
    });
  });
  const sorted = [...lateness].sort((a, b) => a - b);
  console.log(`${RUNS} due times of a job --every 1s: lateness from due time to queued (ms)`);
  console.log(`  median ${sorted[Math.floor(sorted.length / 2)]}   min ${sorted[0]}   max ${sorted.at(-1)}`);
} finally {
  child.kill('SIGKILL');
  rmSync(dataDir, { recursive: true, force: true });
}
