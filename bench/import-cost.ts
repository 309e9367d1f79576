/**
 * What each dependency costs a process that imports it: CPU time of the import and resident memory
 * once idle, each over a bare `node` that imports nothing (the peer), in fresh processes, medians
 * over the rounds. The figures behind what Kiln loads lazily (BENCHMARKS.md).
 * Usage: node --import tsx bench/import-cost.ts [--rounds 5]
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { fileURLToPath } from 'node:url';
import { median, numberArg } from './support.js';

const ROUNDS = numberArg('--rounds', 5);
const ROOT = fileURLToPath(new URL('..', import.meta.url));

/** Imports its arguments, idles 2 s, prints CPU ms of the imports and VmRSS (kB). */
const PROBE = `
const c0 = process.cpuUsage();
for (const spec of process.argv.slice(1)) await import(spec);
const c = process.cpuUsage(c0);
await new Promise((resolve) => setTimeout(resolve, 2000));
const rss = (await import('node:fs')).readFileSync('/proc/self/status', 'utf8').match(/VmRSS:\\s+(\\d+)/)[1];
console.log(((c.user + c.system) / 1000).toFixed(1), rss);
`;

const SETS: [string, string[]][] = [
  ['(bare node, the peer)', []],
  ['commander (every command)', ['commander']],
  ['pino (server, worker)', ['pino']],
  ['ws (worker; server via @fastify/websocket)', ['ws']],
  ['zod (server, worker: protocol and API schemas)', ['zod']],
  ['fastify + @fastify/websocket (server)', ['fastify', '@fastify/websocket']],
  ['better-sqlite3 (server)', ['better-sqlite3']],
  ['yaml (server --config only)', ['yaml']],
  ['picomatch (worker, jobs with artifact globs only)', ['picomatch']],
  ['form-data (server --upload http(s) only)', ['form-data']],
  ['tar-stream (docker pools only)', ['tar-stream']],
  ['dockerode (docker pools only)', ['dockerode']],
  ['@aws-sdk/client-s3 (--upload s3:// only)', ['@aws-sdk/client-s3']],
  ['@kubernetes/client-node (kubernetes pools only)', ['@kubernetes/client-node']],
];

const run = promisify(execFile);
const results = new Map<string, { cpu: number[]; rss: number[] }>();
for (let round = 0; round < ROUNDS; round += 1) {
  for (const [label, specs] of SETS) {
    const { stdout } = await run(process.execPath, ['--input-type=module', '-e', PROBE, ...specs], { cwd: ROOT });
    const [cpu, rss] = stdout.trim().split(' ').map(Number);
    const entry = results.get(label) ?? { cpu: [], rss: [] };
    entry.cpu.push(cpu!);
    entry.rss.push(rss! / 1024);
    results.set(label, entry);
  }
}
const bare = results.get(SETS[0]![0])!;
console.log(`import cost in a fresh process, ${ROUNDS} rounds, medians; peer: bare node ${median(bare.rss).toFixed(1)} MB idle`);
console.log(`${'dependency'.padEnd(50)} ${'import CPU'.padStart(11)} ${'idle RSS'.padStart(9)} ${'over bare'.padStart(10)}`);
for (const [label] of SETS.slice(1)) {
  const { cpu, rss } = results.get(label)!;
  console.log(`${label.padEnd(50)} ${`${median(cpu).toFixed(0)} ms`.padStart(11)} ${`${median(rss).toFixed(1)} MB`.padStart(9)} ${`+${(median(rss) - median(bare.rss)).toFixed(1)} MB`.padStart(10)}`);
}
