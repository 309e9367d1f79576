/** The builder-web target's parts: its URL, what builder-web's answers mean, and a run as an exec's head. */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { test } from 'node:test';
import type { Run } from '../../src/store/index.js';
import { builderWebEndpoint, builderWebVerdict } from '../../src/server/upload/builder-web-target.js';
import { Readable } from 'node:stream';
import { encodeExec, execStream } from '../../src/protocol/robur/index.js';
import {
  builderWebJobNameProblem, execConsole, execResultOf, execUnavailable, hasExec, pagedExecConsole, runExecStream,
  type ConsolePageReader, type ExecutableRun, type SeqLine,
} from '../../src/server/upload/robur-exec-of-run.js';

function run(fields: Partial<Run> = {}): Run {
  return {
    id: randomUUID(), job: 'app', platform: 'debian-12', labels: {}, status: 'succeeded', attempt: 1,
    worker: 'w1', workerIdentity: null, workerSession: null,
    queuedAt: 1_700_000_000_000, startedAt: 1_700_000_000_100, finishedAt: 1_700_000_005_000,
    result: { kind: 'exited', code: 0 }, script: 'make\n', env: { SECRET: 'x' }, timeoutMs: 3_600_000, idleTimeoutMs: null,
    lostRetriesLeft: 1, failureRetriesLeft: 0, firstSeq: 0, cancelRequestedBy: null, deadlineAt: null,
    artifacts: ['**'], artifactsOnFailure: false, sandbox: {},
    ...fields,
  };
}

const timed = (lines: [string, number][]) => lines.map(([text, ts]) => ({ text, ts }));

/** A stored console of `lines` (seq 0..n-1) read as the store reads it, recording each read's limit. */
function storedLines(lines: SeqLine[], reads: number[] = []): ConsolePageReader {
  return async (afterSeq, limit) => {
    reads.push(limit);
    return lines.filter((l) => l.seq > afterSeq).slice(0, limit);
  };
}

async function readAll(stream: AsyncIterable<Buffer | string>): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(Buffer.from(chunk));
  return Buffer.concat(chunks);
}

test('builder-web\'s answers: 201 and 409 delivered; 401 and 500 given up saying why; other 4xx given up; 408, 429, other 5xx retried', () => {
  const cases: [number, string][] = [
    [201, 'delivered'], [200, 'delivered'], [409, 'delivered'],
    [401, 'give-up'], [500, 'give-up'], [400, 'give-up'], [403, 'give-up'], [404, 'give-up'], [413, 'give-up'], [301, 'give-up'],
    [408, 'retry'], [429, 'retry'], [502, 'retry'], [503, 'retry'], [504, 'retry'],
  ];
  for (const [status, kind] of cases) assert.equal(builderWebVerdict(status, 'body', undefined, 'app').kind, kind, `HTTP ${status}`);
  assert.deepEqual(builderWebVerdict(409, 'Build with same uuid exists: app(u)\n', undefined, 'app'), { kind: 'delivered', note: 'builder-web already has this run (HTTP 409: Build with same uuid exists: app(u))' });
  const unauthorized = builderWebVerdict(401, 'Unauthorized!\n', undefined, 'app');
  assert.equal(unauthorized.kind === 'give-up' && unauthorized.reason, "HTTP 401: Unauthorized! (builder-web refused the credentials of the --upload URL, or the user is restricted and job 'app' is not on its access list: builder-db access-add)");
  const undecodable = builderWebVerdict(500, 'Internal server error\n', undefined, 'app');
  assert.match(undecodable.kind === 'give-up' ? undecodable.reason : '', /^HTTP 500: Internal server error \(builder-web could not decode the exec blob Kiln built, or its database failed/);
  assert.deepEqual(builderWebVerdict(503, '', '7', 'app'), { kind: 'retry', reason: 'HTTP 503', retryAfterMs: 7000 });
});

test('the URL: builder-web+http(s), user and password percent-decoded into Basic auth, never in the description; the rest refused at start', () => {
  const { endpoint, authorization, description } = builderWebEndpoint('builder-web+https://kiln:p%40ss%3Aw%2Frd@builds.example.org:8443/upload');
  assert.equal(endpoint.href, 'https://builds.example.org:8443/upload');
  assert.equal(authorization, `Basic ${Buffer.from('kiln:p@ss:w/rd').toString('base64')}`);
  assert.equal(description, 'builder-web+https://kiln@builds.example.org:8443/upload');
  assert.equal(builderWebEndpoint('builder-web+http://u:p@127.0.0.1:3000/upload').endpoint.protocol, 'http:');
  for (const [url, why] of [
    ['builder-web+https://builds.example.org/upload', /needs a user and a password/],
    ['builder-web+https://kiln@builds.example.org/upload', /needs a user and a password/],
    ['builder-web+https://kiln:secret@builds.example.org/', /path of the upload route, usually \/upload/],
    ['builder-web+ftp://kiln:secret@builds.example.org/upload', /builder-web\+http:\/\/ or builder-web\+https:\/\//],
    ['builder-web+https://kiln:%zz@builds.example.org/upload', /bad %-escape/],
    ['builder-web+https://a%3Ab:secret@builds.example.org/upload', /user name cannot contain ':'/],
    ['builder-web+', /use builder-web\+https:\/\/USER:PASSWORD@HOST/],
  ] as const) {
    assert.throws(() => builderWebEndpoint(url), (err: Error & { code?: string }) => {
      assert.equal(err.code, 'KILN_ERR_CONFIG');
      assert.match(err.message, why);
      assert.doesNotMatch(err.message, /secret|%zz/, 'no password in the message');
      return true;
    }, url);
  }
});

test('a run\'s result as builder says it: exits, signals and aborts one to one; a run Kiln timed out, cancelled or lost is [3] with the reason', () => {
  const exec = (fields: Partial<Run>) => execResultOf(run(fields) as ExecutableRun);
  assert.deepEqual(exec({ result: { kind: 'exited', code: 3 }, status: 'failed' }), { kind: 'exited', code: 3 });
  assert.deepEqual(exec({ result: { kind: 'signalled', signal: 'SIGKILL' }, status: 'failed' }), { kind: 'signalled', signal: 9 });
  assert.deepEqual(exec({ result: { kind: 'aborted', reason: 'worker lost' }, status: 'lost' }), { kind: 'msg', message: 'worker lost' });
  assert.deepEqual(exec({ result: { kind: 'signalled', signal: 'SIGTERM' }, status: 'timed-out', timeoutMs: 600_000 }), { kind: 'msg', message: 'timed out after 10m (signalled SIGTERM)' });
  assert.deepEqual(exec({ result: { kind: 'exited', code: 143 }, status: 'cancelled', cancelRequestedBy: 'alice' }), { kind: 'msg', message: 'cancelled by alice (exited 143)' });
  assert.deepEqual(exec({ result: { kind: 'exited', code: 1 }, status: 'lost' }), { kind: 'msg', message: 'lost (exited 1)' });
});

test('only a run that ran and ended, with a UUID for id, has an exec', () => {
  assert.equal(hasExec(run()), true);
  assert.match(execUnavailable(run({ status: 'running', finishedAt: null, result: null }))!, /has not ended \(running\)/);
  assert.match(execUnavailable(run({ status: 'queued', startedAt: null, finishedAt: null, result: null }))!, /has not ended \(queued\)/);
  assert.match(execUnavailable(run({ status: 'cancelled', startedAt: null, result: { kind: 'aborted', reason: 'cancelled by bob' } }))!, /never ran/);
  assert.match(execUnavailable(run({ id: 'run-42' }))!, /is not a UUID/);
});

test('the console: ns from the start, never negative (earlier attempts, a worker clock behind); a line holding a newline is several entries', async () => {
  const started = 1_700_000_000_100;
  const console = execConsole(timed([['retried earlier', started - 5000], ['one', started + 1], ['two\nthree', started + 2500]]), started);
  assert.deepEqual(console, [
    { deltaNs: 0, line: 'retried earlier' },
    { deltaNs: 1_000_000, line: 'one' },
    { deltaNs: 2_500_000_000, line: 'two' },
    { deltaNs: 2_500_000_000, line: 'three' },
  ]);
});

test('the console is read a page at a time, twice (measured, then sent from the last page), and the stream is the in-memory encoding byte for byte', async () => {
  const r = run() as ExecutableRun;
  const lines: SeqLine[] = Array.from({ length: 11 }, (_, seq) => ({ seq, text: seq === 4 ? 'two\nlines' : `line ${seq} ${'x'.repeat(seq * 13)}`, ts: r.startedAt + seq * 7 }));
  const reads: number[] = [];
  const paged = await pagedExecConsole(storedLines(lines, reads), r.startedAt, 3);
  const chunks: Buffer[] = [];
  for await (const chunk of paged.chunks()) chunks.push(chunk);
  assert.ok(reads.every((limit) => limit <= 3), `every read is one page at most: ${reads.join(',')}`);
  assert.equal(chunks.length, 4, 'one chunk a page: 3 + 3 + 3 + 2 lines');
  assert.equal(Buffer.concat(chunks).length, paged.length);

  const artifact = Buffer.from('artifact bytes');
  const { length, stream } = await runExecStream({ ...r, id: '0d2ef1c5-5b8e-4d0c-9a37-0d9a1e2b3c4d' }, storedLines(lines), [
    { path: 'out/a.bin', size: artifact.length, open: async () => Readable.from([artifact]) },
  ]);
  const bytes = await readAll(stream);
  assert.equal(bytes.length, length);
  const expected = encodeExec({
    job: { name: r.job, script: r.script!, platform: r.platform }, uuid: '0d2ef1c5-5b8e-4d0c-9a37-0d9a1e2b3c4d',
    console: execConsole(lines, r.startedAt), started: r.startedAt, finished: r.finishedAt, result: { kind: 'exited', code: 0 },
    files: [{ path: 'out/a.bin', data: artifact }],
  });
  assert.equal(bytes.toString('hex'), expected.toString('hex'));
});

test('a console that changes between its two reads fails the stream rather than sending a body of another length', async () => {
  const r = run() as ExecutableRun;
  const lines: SeqLine[] = Array.from({ length: 5 }, (_, seq) => ({ seq, text: `line ${seq}`, ts: r.startedAt }));
  const paged = await pagedExecConsole(storedLines(lines), r.startedAt, 2);
  lines[1] = { ...lines[1]!, text: 'a longer line than before' };
  await assert.rejects(readAll(execStream({ job: { name: 'a', script: '', platform: 'p' }, uuid: r.id, console: paged, started: 0, finished: 0, result: { kind: 'exited', code: 0 } }, []).stream), /console changed/);
});

test('job names builder-web can take: Kiln\'s own rule; others refused rather than rewritten', () => {
  for (const name of ['app', 'my-app_1.2', 'A']) assert.equal(builderWebJobNameProblem(name), undefined, name);
  for (const name of ['..', '.hidden', 'a/b', 'a b', 'é', '']) assert.match(builderWebJobNameProblem(name) ?? '', /cannot be a builder-web job/, name);
});
