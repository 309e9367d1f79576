/**
 * `--upload builder-web+http://USER:PASS@HOST/upload` with real processes (server, worker, CLI)
 * against a builder-web stand-in written from the reference (test/helpers/builder-web-standin.ts):
 * each finished run arrives as builder's exec blob, decoded by the codec as builder-web would; its
 * answers (201, 409, 401, 500, 503) end or retry the delivery as they should; `kiln export` writes the
 * very bytes that were uploaded, and `kiln inspect` reads them back and extracts the artifacts.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { existsSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { test } from 'node:test';
import { decodeExec, encodeExec, openExecFile } from '../../src/protocol/robur/index.js';
import { startBuilderWebStandin } from '../helpers/builder-web-standin.js';
import { onPath } from '../helpers/requirements.js';
import { followRun, kiln, KILN_BIN, peakRss, startServer, startWorker, tempDir, type ServerProcess } from '../helpers/processes.js';

const never = ['--platform', 'testos', '--period', 'never'];
const sha256 = (bytes: Buffer) => createHash('sha256').update(bytes).digest('hex');

function uploadConfig(dataDir: string, url: string): string {
  const file = path.join(dataDir, 'kiln.yaml');
  writeFileSync(file, `upload:\n  url: ${url}\n  retry_min: 100ms\n  retry_max: 400ms\n`);
  return file;
}

/** `kiln ARGS` with its stdout as bytes (the CLI helper reads text). */
function kilnBytes(server: Pick<ServerProcess, 'url' | 'adminToken'>, args: string[]): Promise<{ code: number; stdout: Buffer; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [KILN_BIN, ...args], {
      encoding: 'buffer', maxBuffer: 64 * 1024 * 1024, env: { ...process.env, KILN_SERVER: server.url, KILN_TOKEN: server.adminToken },
    }, (error, stdout, stderr) => resolve({ code: error ? (typeof error.code === 'number' ? error.code : 1) : 0, stdout, stderr: stderr.toString() }));
  });
}

interface ShownRun {
  run: { id: string; startedAt: string; finishedAt: string; status: string };
  deliveries: { state: string; attempts: number; lastError: string | null }[];
}

test('a run reaches builder-web as its exec blob: job, script, console with times, uuid, result, artifact bytes; a resend\'s 409 counts delivered; export and inspect give back the same', async (t) => {
  const standin = await startBuilderWebStandin(t, 'kiln', 'p@ss:word');
  const dataDir = tempDir(t);
  const server = await startServer(t, { dataDir, args: ['--config', uploadConfig(dataDir, `builder-web+http://kiln:p%40ss%3Aword@127.0.0.1:${standin.port}/upload`)] });
  await startWorker(t, server, ['--platform', 'testos']);
  const script = 'echo first; echo "second \\"quoted\\""; mkdir -p bin; head -c 3000000 /dev/urandom > bin/app.bin; echo done';
  assert.equal((await kiln(server, ['schedule', 'robur-app', '--command', script, ...never])).code, 0);

  // The first upload is stored, but its 201 is lost on the way back: the retry meets a 409, which is delivered.
  standin.loseNextAnswer(502);
  const runId = (await kiln(server, ['execute', 'robur-app'])).stdout.trim();
  const { lines, run } = await followRun(server, runId);
  assert.equal(run.status, 'succeeded', lines.join('\n'));
  await server.waitFor(/run delivered/);
  assert.deepEqual(standin.requests.map((r) => r.status), [502, 409]);
  assert.match(server.stderr.find((l) => /run delivered/.test(l))!, /builder-web already has this run \(HTTP 409: Build with same uuid exists: robur-app\(/);

  const [first, second] = standin.requests;
  assert.equal(first!.bodySha256, second!.bodySha256, 'a retry sends the same bytes');
  assert.equal(first!.headers.authorization, `Basic ${Buffer.from('kiln:p@ss:word').toString('base64')}`);
  assert.equal(first!.headers['content-type'], undefined, 'no content type, as builder sends');
  assert.equal(first!.headers['transfer-encoding'], undefined, 'the length is known up front');
  assert.equal(Number(first!.headers['content-length']), first!.bodyBytes);

  const exec = standin.stored.get(runId)!;
  assert.ok(exec, 'stored under the run id as uuid');
  const shown = JSON.parse((await kiln(server, ['show', runId, '--json'])).stdout) as ShownRun;
  assert.deepEqual(exec.job, { name: 'robur-app', script: `${script}\n`, platform: 'testos' });
  assert.equal(exec.uuid, runId);
  assert.deepEqual(exec.result, { kind: 'exited', code: 0 });
  assert.equal(exec.started, Date.parse(shown.run.startedAt));
  assert.equal(exec.finished, Date.parse(shown.run.finishedAt));
  assert.deepEqual(exec.console.map((c) => c.line), lines, 'every console line, oldest first once decoded (newest first on the wire)');
  const deltas = exec.console.map((c) => c.deltaNs);
  assert.ok(deltas.every((d, i) => d >= 0 && (i === 0 || d >= deltas[i - 1]!)), `ns offsets grow with time: ${deltas}`);
  assert.ok(deltas.every((d) => d % 1_000_000 === 0 && d <= (exec.finished - exec.started) * 1_000_000), 'offsets are ns within the run');
  const listed = JSON.parse((await kiln(server, ['artifacts', runId, '--json'])).stdout).artifacts as { path: string; size: number; sha256: string }[];
  assert.deepEqual(exec.files.map((f) => [f.path, f.data.length, sha256(f.data)]), listed.map((a) => [a.path, a.size, a.sha256]));
  assert.equal(listed[0]!.size, 3_000_000);
  assert.equal(shown.deliveries[0]!.state, 'delivered');
  const info = await kiln(server, ['info']);
  assert.match(info.stdout, new RegExp(`upload to builder-web\\+http://kiln@127\\.0\\.0\\.1:${standin.port}/upload: 0 pending, 1 delivered, 0 failed`));
  assert.ok(!server.stderr.some((l) => l.includes('p@ss') || l.includes('p%40ss')), 'the password is never logged');

  // kiln export: the very bytes builder-web was sent, on stdout or into a file.
  const out = tempDir(t);
  const blob = path.join(out, 'run.full');
  const exported = await kiln(server, ['export', runId.slice(0, 8), '--format', 'robur-exec', '--output', blob]);
  assert.equal(exported.code, 0, exported.stderr);
  assert.equal(sha256(readFileSync(blob)), first!.bodySha256);
  assert.equal(statSync(blob).mode & 0o777, 0o600);
  // A viewer may export (the route reads what a viewer may read: script, console, artifacts).
  const viewer = (await kiln(server, ['token', 'create', 'reader', '--role', 'viewer'])).stdout.trim();
  const piped = await kilnBytes({ ...server, adminToken: viewer }, ['export', runId, '--format', 'robur-exec']);
  assert.equal(piped.code, 0, piped.stderr);
  assert.equal(sha256(piped.stdout), first!.bodySha256);
  assert.deepEqual(decodeExec(piped.stdout), exec);

  // kiln inspect: offline (no server), builder-inspect's console, the artifact list, extraction.
  const inspected = await kiln(undefined, ['inspect', blob]);
  assert.equal(inspected.code, 0, inspected.stderr);
  for (const expected of [
    'job       robur-app', 'platform  testos', `uuid      ${runId}`, `started   ${new Date(exec.started).toISOString()}`,
    `finished  ${new Date(exec.finished).toISOString()}`, 'result    exited 0', `script:\n${script}\nconsole:\nstarted at `,
    `ms: "first"\n`, `ms: "second \\"quoted\\""\n`, '\nexited 0\nstopped at ', `bin/app.bin  3000000  ${listed[0]!.sha256}`,
  ]) assert.ok(inspected.stdout.includes(expected), `inspect prints ${JSON.stringify(expected)}:\n${inspected.stdout.slice(0, 2000)}`);
  const asJson = JSON.parse((await kiln(undefined, ['inspect', blob, '--json'])).stdout);
  assert.equal(asJson.uuid, runId);
  assert.deepEqual(asJson.artifacts, listed.map(({ path: p, size, sha256: s }) => ({ path: p, size, sha256: s })));
  const extracted = path.join(out, 'files');
  const extraction = await kiln(undefined, ['inspect', blob, '--output', extracted]);
  assert.equal(extraction.code, 0, extraction.stderr);
  assert.equal(sha256(readFileSync(path.join(extracted, 'bin', 'app.bin'))), listed[0]!.sha256, 'byte-exact');
  assert.equal(statSync(path.join(extracted, 'bin', 'app.bin')).mode & 0o777, 0o600);
  assert.equal(statSync(extracted).mode & 0o777, 0o700);

  // Bad input: one line each, nothing written.
  const evil = path.join(out, 'evil.full');
  writeFileSync(evil, encodeExec({ ...exec, files: [{ path: 'ok.txt', data: Buffer.from('ok') }, { path: '../x', data: Buffer.from('escaped') }] }));
  const refusedDir = path.join(out, 'evil');
  const refused = await kiln(undefined, ['inspect', evil, '--output', refusedDir]);
  assert.equal(refused.code, 1);
  assert.match(refused.stderr, /^kiln: .*evil\.full: artifact path '\.\.\/x' may not contain '\.\.': nothing extracted\n$/);
  assert.equal(existsSync(path.join(out, 'x')), false);
  assert.equal(existsSync(refusedDir), false, 'nothing extracted, not even the safe file');
  const garbage = path.join(out, 'garbage.full');
  writeFileSync(garbage, Buffer.from('a0 03 02 01 00 ff'.replace(/ /g, ''), 'hex'));
  const bad = await kiln(undefined, ['inspect', garbage]);
  assert.equal(bad.code, 1);
  assert.match(bad.stderr, /^kiln: .*garbage\.full: .+\n$/);
  const format = await kiln(server, ['export', runId, '--format', 'tarball']);
  assert.equal(format.code, 2);
  assert.equal(format.stderr, "kiln: unknown export format 'tarball': use robur-exec\n");
  // On a terminal (util-linux `script` gives the CLI one) the blob is refused, not printed.
  if (onPath('script')) {
    const onTty = await new Promise<{ code: number; out: string }>((resolve) => execFile('script', ['-qec', `'${process.execPath}' '${KILN_BIN}' export ${runId} --format robur-exec`, '/dev/null'], {
      env: { ...process.env, KILN_SERVER: server.url, KILN_TOKEN: server.adminToken },
    }, (error, stdout) => resolve({ code: error ? Number(error.code) : 0, out: stdout })));
    assert.deepEqual([onTty.code, onTty.out.trim()], [2, 'kiln: refusing to write a binary exec blob to a terminal: redirect stdout (> FILE) or give --output FILE']);
  } else {
    t.diagnostic('no util-linux `script` here: the refusal to write to a terminal is not checked');
  }
  assert.equal((await kiln(server, ['schedule', 'waiting', '--command', 'true', '--platform', 'elsewhere', '--period', 'never'])).code, 0);
  const queued = (await kiln(server, ['execute', 'waiting'])).stdout.trim();
  const early = await kiln(server, ['export', queued, '--format', 'robur-exec', '--output', path.join(out, 'early.full')]);
  assert.equal(early.code, 1);
  assert.equal(early.stderr, `kiln: run ${queued} has not ended (queued): an exec blob is written once it has\n`);
  assert.deepEqual(readdirSync(out).sort(), ['evil.full', 'files', 'garbage.full', 'run.full']);
});

test('builder-web\'s refusals: a 401 fails the delivery with the reason and kiln redeliver sends it once fixed; 503s are retried; a 500 is given up', async (t) => {
  const standin = await startBuilderWebStandin(t, 'kiln', 'right');
  const dataDir = tempDir(t);
  const server = await startServer(t, { dataDir, args: ['--config', uploadConfig(dataDir, `builder-web+http://kiln:wrong@127.0.0.1:${standin.port}/upload`)] });
  await startWorker(t, server, ['--platform', 'testos']);
  assert.equal((await kiln(server, ['schedule', 'job-a', '--command', 'echo a', ...never])).code, 0);
  const show = async (runId: string) => JSON.parse((await kiln(server, ['show', runId, '--json'])).stdout) as ShownRun;

  const refused = (await kiln(server, ['execute', 'job-a'])).stdout.trim();
  await followRun(server, refused);
  await server.waitFor(/the upload target refused the run/);
  assert.deepEqual(standin.requests.map((r) => r.status), [401], 'a 401 is not retried');
  const failed = (await show(refused)).deliveries[0]!;
  assert.equal(failed.state, 'failed');
  assert.match(failed.lastError!, /^HTTP 401: Unauthorized! \(builder-web refused the credentials of the --upload URL, or the user is restricted and job 'job-a' is not on its access list/);
  assert.match((await kiln(server, ['show', refused])).stdout, /upload to builder-web\+http:\/\/kiln@.*: failed after 1 attempts .*last error: HTTP 401: Unauthorized!/);
  assert.match((await kiln(server, ['info'])).stdout, /0 pending, 0 delivered, 1 failed/);

  // builder-web's user gets the password Kiln has: the run is sent again on demand, and taken.
  standin.setPassword('wrong');
  const again = await kiln(server, ['redeliver', refused]);
  assert.equal(again.code, 0, again.stderr);
  await server.waitFor(/run delivered/);
  assert.ok(standin.stored.has(refused));
  assert.equal((await show(refused)).deliveries[0]!.state, 'delivered');

  // Down for a while (503 twice): retried, then delivered.
  standin.failNext(2, 503, 'Service Unavailable\n');
  const retried = (await kiln(server, ['execute', 'job-a'])).stdout.trim();
  await followRun(server, retried);
  await server.waitForCount(/run delivered/, 2);
  assert.deepEqual(standin.requests.slice(2).map((r) => r.status), [503, 503, 201]);
  const delivered = (await show(retried)).deliveries[0]!;
  assert.deepEqual([delivered.state, delivered.attempts], ['delivered', 3]);

  // A 500 (a body it could not decode, or its database): given up at once, said so.
  standin.failNext(1, 500, 'Internal server error\n');
  const broken = (await kiln(server, ['execute', 'job-a'])).stdout.trim();
  await followRun(server, broken);
  await server.waitForCount(/the upload target refused the run/, 2);
  assert.deepEqual(standin.requests.slice(5).map((r) => r.status), [500]);
  const given = (await show(broken)).deliveries[0]!;
  assert.equal(given.state, 'failed');
  assert.match(given.lastError!, /^HTTP 500: Internal server error \(builder-web could not decode the exec blob Kiln built, or its database failed/);
});

test('the exec body is streamed: a 512 MiB artifact goes to builder-web and out through kiln export with the server\'s memory bounded', async (t) => {
  const SIZE = 512 * 1024 ** 2;
  const BOUND = 128 * 1024 ** 2;
  // A receiver that hashes what it gets and keeps none of it (the stand-in holds bodies whole, as builder-web does).
  let received = { bytes: 0, sha256: '', length: -1 };
  const receiver = http.createServer((request, response) => {
    const hash = createHash('sha256');
    let bytes = 0;
    request.on('data', (chunk: Buffer) => {
      hash.update(chunk);
      bytes += chunk.length;
    });
    request.on('end', () => {
      received = { bytes, sha256: hash.digest('hex'), length: Number(request.headers['content-length']) };
      response.writeHead(201).end();
    });
  });
  receiver.listen(0, '127.0.0.1');
  await once(receiver, 'listening');
  t.after(() => new Promise<void>((resolve) => receiver.close(() => resolve())));
  const dataDir = tempDir(t);
  const url = `builder-web+http://kiln:secret@127.0.0.1:${(receiver.address() as AddressInfo).port}/upload`;
  const server = await startServer(t, { dataDir, args: ['--config', uploadConfig(dataDir, url)] });
  await startWorker(t, server, ['--platform', 'testos']);
  assert.equal((await kiln(server, ['schedule', 'big', '--command', `head -c ${SIZE} /dev/zero > big.bin`, ...never])).code, 0);
  // The peak after start-up: storing the artifact, uploading and exporting it may not raise it by more than the bound.
  const before = peakRss(server.pid);
  const runId = (await kiln(server, ['execute', 'big'])).stdout.trim();
  assert.equal((await followRun(server, runId)).run.status, 'succeeded');
  await server.waitFor(/run delivered/);
  assert.equal(received.bytes, received.length);
  assert.ok(received.bytes > SIZE, `the whole artifact went in the body (${received.bytes} bytes)`);
  const out = path.join(tempDir(t), 'big.full');
  const exported = await kiln(server, ['export', runId, '--format', 'robur-exec', '--output', out]);
  assert.equal(exported.code, 0, exported.stderr);
  assert.equal(JSON.parse((await kiln(server, ['export', runId, '--format', 'robur-exec', '--output', out, '--json'])).stdout).sha256, received.sha256, 'export and upload send the same bytes');
  const grown = peakRss(server.pid) - before;
  t.diagnostic(`server peak RSS growth while storing 512 MiB and sending it three times as an exec blob: ${(grown / 1024 ** 2).toFixed(1)} MiB`);
  assert.ok(grown < BOUND, `server peak RSS grew by ${grown} bytes`);
});

test('a long console is read from the store and encoded a page at a time: 300,000 lines (30 MB) exported with the server\'s memory bounded', async (t) => {
  const LINES = 300_000;
  // Built whole, as it once was, this console's exec raised the server's peak RSS by ~300 MiB over what running the job took.
  const BOUND = 64 * 1024 ** 2;
  const server = await startServer(t);
  await startWorker(t, server, ['--platform', 'testos']);
  const line = 'a line of console output, as a long build prints them by the hundred thousand.....................';
  assert.equal((await kiln(server, ['schedule', 'chatty', '--command', `yes '${line}' | head -n ${LINES}`, ...never])).code, 0);
  const start = peakRss(server.pid);
  const runId = (await kiln(server, ['execute', 'chatty'])).stdout.trim();
  assert.equal((await followRun(server, runId)).run.status, 'succeeded');
  // The peak once the run has ended (its console taken in, stored and followed): the export may not raise it by more than the bound.
  const before = peakRss(server.pid);
  const out = path.join(tempDir(t), 'chatty.full');
  for (let i = 0; i < 2; i++) {
    const exported = await kiln(server, ['export', runId, '--format', 'robur-exec', '--output', out]);
    assert.equal(exported.code, 0, exported.stderr);
  }
  const { exec } = await openExecFile(out);
  assert.equal(exec.console.length, LINES);
  assert.ok(exec.console.every((l) => l.line === line), 'every line as printed');
  assert.ok(exec.console.every((l, i) => i === 0 || l.deltaNs >= exec.console[i - 1]!.deltaNs), 'oldest first once decoded: the wire had the newest first');
  const grown = peakRss(server.pid) - before;
  t.diagnostic(`server peak RSS: +${((before - start) / 1024 ** 2).toFixed(1)} MiB running the job, then +${(grown / 1024 ** 2).toFixed(1)} MiB exporting it twice (${(statSync(out).size / 1024 ** 2).toFixed(1)} MiB exec)`);
  assert.ok(grown < BOUND, `server peak RSS grew by ${grown} bytes`);
});
