/**
 * The worker's own entry reads `kiln worker ARGS` exactly as the full CLI (commander) does, or
 * leaves the command line to it: for each ARGS, readWorkerArgs gives undefined or the flags
 * commander hands the worker command's action.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Command } from 'commander';
import fc from 'fast-check';
import { registerWorkerCommand, WORKER_OPTIONS, type WorkerFlags } from '../../src/cli/commands/worker.js';
import { readWorkerArgs } from '../../src/cli/worker-args.js';

/** What commander gives `kiln worker ARGS`'s action, or the error it stops with. */
async function commanderFlags(args: string[]): Promise<WorkerFlags | 'refused'> {
  const program = new Command('kiln').option('--server <url>').option('--token <token>').option('--json').exitOverride().configureOutput({ writeOut: () => {}, writeErr: () => {} });
  let flags: WorkerFlags | undefined;
  registerWorkerCommand(program, async (given) => void (flags = given));
  for (const command of program.commands) command.exitOverride().configureOutput({ writeOut: () => {}, writeErr: () => {} });
  try {
    await program.parseAsync(['worker', ...args], { from: 'user' });
  } catch {
    return 'refused';
  }
  return flags!;
}

/** The flags without keys that hold undefined (commander sets some, the entry leaves them out). */
function defined(flags: WorkerFlags): Record<string, unknown> {
  return Object.fromEntries(Object.entries(flags).filter(([, v]) => v !== undefined));
}

async function agree(args: string[]): Promise<'read' | 'left'> {
  const ours = readWorkerArgs(args);
  const theirs = await commanderFlags(args);
  if (ours === undefined) return 'left';
  assert.notEqual(theirs, 'refused', `the entry read ${JSON.stringify(args)}, which commander refuses`);
  assert.deepStrictEqual(defined(ours), defined(theirs as WorkerFlags), JSON.stringify(args));
  return 'read';
}

test('the worker entry reads the command lines pools and `kiln up` give as commander does', async () => {
  const lines = [
    [],
    ['--server', 'http://127.0.0.1:7420', '--name', 'pool-1-abc', '--platform', 'debian-12', '--label', 'arch=x64', '--label', 'gpu=no', '--once'],
    ['--server', 'http://127.0.0.1:7420', '--name', 'host-local', '--drain-timeout', '0s'],
    ['--sandbox', 'bwrap', '--network', 'none', '--bind', '/a', '--ro-bind', '/b:/c', '--hide', '/d', '--hide', '/e'],
    ['--capacity=4', '--token-file=/etc/kiln/token', '--work-dir', '/w', '--spool-dir', '/s', '--kill-grace', '3s'],
    ['--token', 'secret', '--json', '--name', 'a', '--name', 'b'],
    ['--label', 'x=--y'],
  ];
  for (const args of lines) assert.equal(await agree(args), 'read', JSON.stringify(args));
});

test('the worker entry leaves help, unknown options, arguments and odd values to the full CLI', async () => {
  const lines = [
    ['--help'], ['-h'], ['--version'], ['-V'], ['--nope'], ['extra'], ['--name'], ['--once=yes'], ['--name', '--once'],
    ['--capacity', '-1'], ['--', 'x'], ['-n', 'x'], ['--Name', 'x'], ['--no-once'],
  ];
  for (const args of lines) assert.equal(await agree(args), 'left', JSON.stringify(args));
});

test('the worker entry and commander agree on random worker command lines (fast-check)', async () => {
  const flags = WORKER_OPTIONS.map((o) => `--${o.flag}`);
  const word = fc.oneof(
    fc.constantFrom(...flags, '--server', '--token', '--json', '--help', '-h', '--', '-', '-x', '--bogus', ''),
    fc.constantFrom(...flags).map((f) => `${f}=v`),
    fc.string({ maxLength: 6 }),
  );
  let read = 0;
  await fc.assert(fc.asyncProperty(fc.array(word, { maxLength: 6 }), async (args) => {
    if ((await agree(args)) === 'read') read += 1;
  }), { numRuns: 1500 });
  assert.ok(read > 50, `only ${read} command lines were read by the entry`);
});
