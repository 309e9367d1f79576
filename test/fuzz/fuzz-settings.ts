/**
 * Settings shared by the fuzz suites. `npm test` runs them bounded (a fixed seed and a few hundred
 * inputs, seconds); `npm run fuzz` (KILN_FUZZ_LONG=1) runs them for minutes with a fresh seed.
 * KILN_FUZZ_SEED, KILN_FUZZ_RUNS and KILN_FUZZ_SECONDS override either. The seed is printed, so a
 * failure reproduces with `KILN_FUZZ_SEED=S npm run fuzz` (fast-check also prints the shrunk input
 * and its replay path).
 */
import { readFileSync } from 'node:fs';
import fc from 'fast-check';

const long = process.env.KILN_FUZZ_LONG === '1';

function envNumber(name: string): number | undefined {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return undefined;
  const value = Number(raw);
  if (!Number.isFinite(value) || value < 0) throw new Error(`${name} must be a number, got '${raw}'`);
  return value;
}

/** What one fuzz property runs: how many inputs, for how long, from which seed. */
export interface FuzzSettings {
  seed: number;
  numRuns: number;
  /** Stop (without failing) after this long, when set. */
  seconds: number | undefined;
}

/** The settings of a property whose bounded run (in `npm test`) takes `boundedRuns` inputs. */
export function fuzzSettings(boundedRuns: number): FuzzSettings {
  const seconds = envNumber('KILN_FUZZ_SECONDS') ?? (long ? 120 : undefined);
  return {
    seed: envNumber('KILN_FUZZ_SEED') ?? (long ? Date.now() % 2 ** 31 : 20261206),
    numRuns: envNumber('KILN_FUZZ_RUNS') ?? (seconds !== undefined ? 1_000_000_000 : boundedRuns),
    seconds,
  };
}

/**
 * Checks `property` with `settings`, prints the seed and how many inputs ran, and throws
 * fast-check's report (seed, path, shrunk counterexample) when it fails.
 */
export async function checkFuzz<Ts>(name: string, property: fc.IAsyncProperty<Ts>, settings: FuzzSettings, inputs: () => number): Promise<void> {
  process.stderr.write(`fuzz ${name}: seed ${settings.seed} (KILN_FUZZ_SEED=${settings.seed} reproduces it)\n`);
  const details = await fc.check(property, {
    seed: settings.seed,
    numRuns: settings.numRuns,
    ...(settings.seconds !== undefined ? { interruptAfterTimeLimit: settings.seconds * 1000, markInterruptAsFailure: false } : {}),
  });
  process.stderr.write(`fuzz ${name}: ${details.numRuns} cases, ${inputs()} inputs sent${details.interrupted ? ' (stopped at the time limit)' : ''}\n`);
  if (details.failed) {
    const cause = details.errorInstance instanceof Error ? details.errorInstance.message : String(details.errorInstance);
    throw new Error(`${fc.defaultReportMessage(details) ?? `fuzz ${name} failed`}\nError: ${cause}`);
  }
}

/** Every error code of the catalogue (src/errors.ts), read from its source so that new classes count too. */
export function catalogueCodes(): Set<string> {
  const source = readFileSync(new URL('../../src/errors.ts', import.meta.url), 'utf8');
  return new Set([...source.matchAll(/'(KILN_ERR_[A-Z0-9_]+)'/g)].map((m) => m[1]!));
}

/** Names that are properties of every plain object: maps keyed by user-chosen names must survive them. */
export const PROTOTYPE_NAMES = ['__proto__', 'constructor', 'toString', 'valueOf', 'hasOwnProperty', 'prototype', '__defineGetter__', 'isPrototypeOf'];
