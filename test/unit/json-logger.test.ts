/**
 * The worker's JSON-line logger writes what the daemons' pino logger (cli/logger.ts, same options)
 * writes for the same calls: the same keys and values (time aside), the same redactions, the same
 * levels left out.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import pino from 'pino';
import { createJsonLogger } from '../../src/cli/json-logger.js';
import { KilnError } from '../../src/errors.js';
import type { Log } from '../../src/log.js';

function capture(): { lines: string[]; write(line: string): void } {
  const lines: string[] = [];
  return { lines, write: (line: string) => void lines.push(line) };
}

/** pino as cli/logger.ts makes it, writing to `sink`. */
function daemonPino(level: string, sink: { write(line: string): void }): Log {
  return pino({ level, base: { pid: process.pid }, redact: ['token', '*.token', 'req.headers.authorization', 'headers.authorization'] }, sink);
}

/** The same error objects for both loggers (their stacks say where they were made). */
const ERRORS = [new KilnError('KILN_ERR_DISK_FULL', 507, 'no space left'), new TypeError('bad thing'), new Error('an error alone')] as const;

/** The calls the worker makes, and a few it could. */
function exercise(log: Log): void {
  const child = log.child({ worker: 'w-1' });
  const run = child.child({ runId: 'r-1', job: 'build', attempt: 2 });
  child.info('connected to the server');
  child.info({ server: 'http://127.0.0.1:7420', resumed: 0, missing: undefined }, 'connected to the server');
  run.info('run started');
  run.info({ result: 'exit 0' }, 'run ended');
  child.warn({ code: 1006, reason: undefined, retryInMs: 250, holding: 0 }, 'not connected to the server; retrying');
  child.debug({ err: 'ECONNREFUSED' }, 'connection error');
  child.trace('not shown at info');
  child.error({ err: ERRORS[0] }, 'cannot keep the job output');
  child.warn({ err: ERRORS[1] }, 'could not remove a work dir');
  child.info({ token: 'secret-1', server: { url: 'x', token: 'secret-2' }, headers: { authorization: 'Bearer s3', accept: '*/*' } }, 'redacted');
  child.info({ req: { headers: { authorization: 'Bearer s4', host: 'h' } } }, 'redacted request');
  child.info({ nested: { deeper: { token: 'kept: only one level is redacted' } }, list: [1, 'two', { three: 3 }] }, 'shapes');
  child.error(ERRORS[2]);
  child.fatal({ quote: 'a "quoted" \\ line\nnext' }, 'escaped "msg"\n');
  child.info({ descriptors: [3, 4] });
  log.child({ token: 'in a binding' }).info('bound token');
}

/** Lines as objects, without the time (pino's and ours differ by when they were written). */
function parsed(lines: string[]): Record<string, unknown>[] {
  return lines.map((line) => {
    assert.ok(line.endsWith('\n') && !line.slice(0, -1).includes('\n'), `one line each: ${JSON.stringify(line)}`);
    const { time, ...rest } = JSON.parse(line) as Record<string, unknown>;
    assert.equal(typeof time, 'number');
    return rest;
  });
}

for (const level of ['info', 'debug', 'trace', 'warn', 'silent']) {
  test(`the worker's logger writes what the daemons' pino writes (level ${level})`, () => {
    const ours = capture();
    const theirs = capture();
    exercise(createJsonLogger(level, ours));
    exercise(daemonPino(level, theirs));
    assert.deepStrictEqual(parsed(ours.lines), parsed(theirs.lines));
    // Key order too: readers of the raw lines see the same text.
    assert.deepStrictEqual(ours.lines.map((l) => Object.keys(JSON.parse(l))), theirs.lines.map((l) => Object.keys(JSON.parse(l))));
  });
}

test("the worker's logger refuses an unknown level, as pino does, and KILN_LOG_LEVEL sets its default", () => {
  assert.throws(() => createJsonLogger('loud', capture()), /unknown log level 'loud'/);
  assert.throws(() => daemonPino('loud', capture()));
  const saved = process.env.KILN_LOG_LEVEL;
  process.env.KILN_LOG_LEVEL = 'warn';
  try {
    const sink = capture();
    const log = createJsonLogger(undefined, sink);
    assert.equal(log.level, 'warn');
    log.info('hidden');
    log.warn('shown');
    assert.deepEqual(sink.lines.map((l) => JSON.parse(l).msg), ['shown']);
  } finally {
    if (saved === undefined) delete process.env.KILN_LOG_LEVEL;
    else process.env.KILN_LOG_LEVEL = saved;
  }
});
