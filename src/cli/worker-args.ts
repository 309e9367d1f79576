/**
 * Reads `kiln worker ...` arguments without commander, for the worker's own entry. It reads only
 * what it can read exactly as commander would (test/unit/worker-args.test.ts holds the two to the
 * same flags); for anything else (--help, an unknown or malformed option, an argument) it returns
 * undefined, and the full CLI takes the command line, with its usual messages.
 */
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { optionKey, WORKER_OPTIONS, type WorkerFlags } from './commands/worker.js';

const OPTIONS: NonNullable<ParseArgsConfig['options']> = {
  // The global options, which commander also takes after the command's name.
  server: { type: 'string' },
  token: { type: 'string' },
  ca: { type: 'string' },
  json: { type: 'boolean' },
  ...Object.fromEntries(WORKER_OPTIONS.map((o) => [o.flag, { type: o.value ? 'string' : 'boolean', multiple: o.repeatable ?? false } as const])),
};

/** The flags of `kiln worker ARGS` (ARGS: what follows `worker`), or undefined: leave it to the full CLI. */
export function readWorkerArgs(args: readonly string[]): WorkerFlags | undefined {
  let parsed;
  try {
    parsed = parseArgs({ args: [...args], options: OPTIONS, strict: true, allowPositionals: false });
  } catch {
    return undefined;
  }
  const flags: Record<string, unknown> = {};
  for (const option of WORKER_OPTIONS) if (option.default !== undefined) flags[optionKey(option.flag)] = option.default;
  for (const [name, value] of Object.entries(parsed.values)) if (name !== 'json') flags[optionKey(name)] = value;
  return flags as unknown as WorkerFlags;
}
