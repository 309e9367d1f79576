/** Small helpers shared by the benchmarks. */
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

/** The kiln command of this checkout. */
export const KILN = fileURLToPath(new URL('../bin/kiln.mjs', import.meta.url));

/** A loopback port nobody listens on right now (the tests' helper). */
export { freePort } from '../test/helpers/processes.js';

/** The median of some numbers. */
export function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

/** The p-th percentile (0 to 100) of some numbers, nearest rank. */
export function percentile(values: number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!;
}

/** The value after `--name` on the command line, as a number. */
export function numberArg(name: string, fallback: number): number {
  const at = process.argv.indexOf(name);
  return at > 0 ? Number(process.argv[at + 1]) : fallback;
}

/** Extra node options for the kiln processes a bench starts, e.g. KILN_BENCH_NODE_ARGS='--cpu-prof --cpu-prof-dir=/tmp/prof'. */
const NODE_ARGS = (process.env.KILN_BENCH_NODE_ARGS ?? '').split(' ').filter(Boolean);

/** Starts `kiln ARGS` (stderr read for `ready`); `started` resolves once a line matches it. */
export function startKiln(args: string[], env: Record<string, string>, ready: RegExp) {
  const child = spawn(process.execPath, [...NODE_ARGS, KILN, ...args], { env: { ...process.env, KILN_LOG_LEVEL: 'info', ...env }, stdio: ['ignore', 'ignore', 'pipe'] });
  const started = new Promise<void>((resolve, reject) => {
    createInterface({ input: child.stderr! }).on('line', (line) => ready.test(line) && resolve());
    child.once('exit', (code) => reject(new Error(`kiln ${args[0]} exited with ${code}`)));
  });
  return { child, started };
}
