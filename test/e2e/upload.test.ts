/**
 * `--upload URL` with real processes: the target is a real HTTP server started by the test, parsing
 * each multipart POST. It fails, goes away, refuses; runs are delivered exactly once, nothing is lost
 * across a server restart, and refusals are recorded.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { EventEmitter, once } from 'node:events';
import { writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { test, type TestContext } from 'node:test';
import { GetObjectCommand, S3Client } from '@aws-sdk/client-s3';
import busboy from 'busboy';
import { followRun, freePort, kiln, startServer, startWorker, tempDir } from '../helpers/processes.js';
import { S3RVER_KEY, startS3rver } from '../helpers/s3rver.js';

const never = ['--platform', 'testos', '--period', 'never'];

/** One POST the target received, parsed. */
interface Received {
  status: number;
  headers: http.IncomingHttpHeaders;
  metadata: { deliveryId: string; run: { id: string; job: string; status: string; resultText: string; script: string }; artifacts: { path: string; size: number; sha256: string; mode: number }[] };
  console: string;
  files: { path: string; sha256: string; size: number }[];
}

/** A real HTTP upload target: `answer` decides each POST's status once its body has been read whole. */
async function startTarget(t: TestContext, answer: (received: Omit<Received, 'status'>, attempt: number) => [number, string], port = 0) {
  const received: Received[] = [];
  const events = new EventEmitter();
  const server = http.createServer((request, response) => {
    const parsed: Omit<Received, 'status'> = { headers: request.headers, metadata: undefined as never, console: '', files: [] };
    const parts = busboy({ headers: request.headers, preservePath: true });
    parts.on('file', (field, stream, info) => {
      const hash = createHash('sha256');
      const chunks: Buffer[] = [];
      let size = 0;
      stream.on('data', (chunk: Buffer) => {
        hash.update(chunk);
        size += chunk.length;
        if (field !== 'artifact') chunks.push(chunk);
      });
      stream.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        if (field === 'run') parsed.metadata = JSON.parse(text);
        else if (field === 'console') parsed.console = text;
        else parsed.files.push({ path: info.filename ?? '', sha256: hash.digest('hex'), size });
      });
    });
    parts.on('close', () => {
      const [status, body] = answer(parsed, received.length + 1);
      received.push({ ...parsed, status });
      response.writeHead(status, { 'content-type': 'text/plain' }).end(body);
      events.emit('post', received.at(-1));
    });
    request.pipe(parts);
  });
  server.listen(port, '127.0.0.1');
  await once(server, 'listening');
  t.after(() => new Promise<void>((resolve) => server.close(() => resolve())));
  /** Resolves once `count` POSTs have been answered with a 2xx. */
  const accepted = async (count: number) => {
    while (received.filter((r) => r.status < 300).length < count) await once(events, 'post');
  };
  return { port: (server.address() as AddressInfo).port, received, accepted, close: () => new Promise<void>((resolve) => server.close(() => resolve())) };
}

function uploadConfig(dataDir: string, url: string, extra = ''): string {
  const file = path.join(dataDir, 'kiln.yaml');
  writeFileSync(file, `upload:\n  url: ${url}\n  retry_min: 100ms\n  retry_max: 400ms\n${extra}`);
  return file;
}

test('a target failing its first 3 attempts gets each run exactly once: metadata, console, artifacts, Basic auth', async (t) => {
  const target = await startTarget(t, (_posted, attempt) => (attempt <= 3 ? [503, 'down for maintenance'] : [201, 'stored']));
  const dataDir = tempDir(t);
  const server = await startServer(t, { dataDir, args: ['--config', uploadConfig(dataDir, `http://kiln:s3cr%40t@127.0.0.1:${target.port}/builds`)] });
  await startWorker(t, server, ['--platform', 'testos']);
  const script = 'echo building; mkdir -p out; head -c 100000 /dev/urandom > out/app.bin; echo notes > notes.txt';
  assert.equal((await kiln(server, ['schedule', 'release', '--command', script, ...never])).code, 0);
  const runs: string[] = [];
  for (let i = 0; i < 2; i += 1) {
    runs.push((await kiln(server, ['execute', 'release'])).stdout.trim());
    await followRun(server, runs.at(-1)!);
  }
  await target.accepted(2);

  const accepted = target.received.filter((r) => r.status < 300);
  assert.deepEqual(accepted.map((r) => r.metadata.run.id).sort(), [...runs].sort(), 'each run accepted exactly once');
  assert.equal(target.received.length, 5, '3 failures, then one POST per run');
  for (const post of accepted) {
    assert.equal(post.headers.authorization, `Basic ${Buffer.from('kiln:s3cr@t').toString('base64')}`);
    assert.equal(post.headers['x-kiln-run'], post.metadata.run.id);
    assert.equal(post.headers['x-kiln-delivery'], post.metadata.deliveryId);
    assert.equal(post.metadata.run.job, 'release');
    assert.equal(post.metadata.run.status, 'succeeded');
    assert.equal(post.metadata.run.script, `${script}\n`);
    assert.match(post.console, /^building\n/);
    assert.match(post.console, /kiln: kept 2 of 2 artifacts/);
    assert.deepEqual(post.files.map((f) => [f.path, f.size]), [['notes.txt', 6], ['out/app.bin', 100_000]]);
    for (const file of post.files) {
      const listed = post.metadata.artifacts.find((a) => a.path === file.path);
      assert.equal(file.sha256, listed?.sha256, `${file.path}: the bytes sent are the bytes stored`);
    }
  }
  const first = target.received[0]!;
  assert.equal(first.metadata.run.id, accepted.find((r) => r.metadata.deliveryId === first.metadata.deliveryId)?.metadata.run.id, 'a retry is the same delivery');

  const info = await kiln(server, ['info']);
  assert.match(info.stdout, new RegExp(`upload to http://kiln@127\\.0\\.0\\.1:${target.port}/builds: 0 pending, 2 delivered, 0 failed`));
  assert.doesNotMatch(info.stdout, /s3cr/, 'the password is never shown');
  // The first run's delivery took the failures unless the second run's was sent between them: the
  // server counts exactly the POSTs the target saw for it.
  const attemptsOfFirst = target.received.filter((r) => r.metadata.deliveryId === first.metadata.deliveryId).length;
  assert.ok(attemptsOfFirst >= 2, 'the first delivery failed before it was accepted');
  assert.match((await kiln(server, ['show', first.metadata.run.id])).stdout, new RegExp(`upload to .*: delivered after ${attemptsOfFirst} attempts`));
});

test('nothing is lost while the target is down across a server restart; a 4xx is given up and recorded', async (t) => {
  const port = await freePort();
  const dataDir = tempDir(t);
  const config = uploadConfig(dataDir, `http://127.0.0.1:${port}/runs`);
  let server = await startServer(t, { dataDir, args: ['--config', config] });
  const worker = await startWorker(t, server, ['--platform', 'testos']);
  assert.equal((await kiln(server, ['schedule', 'kept', '--command', 'echo kept > result.txt', ...never])).code, 0);
  assert.equal((await kiln(server, ['schedule', 'refused', '--command', 'echo refused', ...never])).code, 0);
  const kept = (await kiln(server, ['execute', 'kept'])).stdout.trim();
  await followRun(server, kept);
  await server.waitFor(/delivery failed; will retry/);
  assert.match((await kiln(server, ['info'])).stdout, /1 pending, 0 delivered, 0 failed/);
  await server.kill('SIGKILL');
  await worker.kill('SIGKILL');

  // The target comes up; the restarted server delivers what was pending, and the rest as it ends.
  const target = await startTarget(t, (posted) => (posted.metadata.run.job === 'refused' ? [400, 'unknown job refused'] : [200, 'ok']), port);
  server = await startServer(t, { dataDir, args: ['--config', config] });
  await target.accepted(1);
  await startWorker(t, server, ['--platform', 'testos']);
  const refused = (await kiln(server, ['execute', 'refused'])).stdout.trim();
  await followRun(server, refused);
  await server.waitFor(/the upload target refused the run/);

  assert.deepEqual(target.received.map((r) => [r.metadata.run.id, r.status]), [[kept, 200], [refused, 400]], 'one POST each: a 400 is not retried');
  assert.deepEqual(target.received[0]!.files.map((f) => f.path), ['result.txt']);
  const shown = await kiln(server, ['show', refused]);
  assert.match(shown.stdout, /upload to .*: failed after 1 attempts .*; last error: HTTP 400: unknown job refused/);
  const info = await kiln(server, ['info']);
  assert.match(info.stdout, /0 pending, 1 delivered, 1 failed/);
  assert.match(info.stdout, new RegExp(`${refused} failed after 1 attempts: HTTP 400: unknown job refused`));
});

test('a target answering 500 forever (as builder-web does to this POST) is given up after max_attempts, a 400 at once; kiln redeliver sends them again', async (t) => {
  let fixed = false;
  const target = await startTarget(t, (posted) => {
    if (fixed) return [200, 'ok'];
    return posted.metadata.run.job === 'refused' ? [400, 'not a builder exec blob'] : [500, 'Internal Server Error'];
  });
  const dataDir = tempDir(t);
  const server = await startServer(t, { dataDir, args: ['--config', uploadConfig(dataDir, `http://127.0.0.1:${target.port}/upload`, '  max_attempts: 3\n')] });
  await startWorker(t, server, ['--platform', 'testos']);
  assert.equal((await kiln(server, ['schedule', 'broken', '--command', 'echo broken', ...never])).code, 0);
  assert.equal((await kiln(server, ['schedule', 'refused', '--command', 'echo refused', ...never])).code, 0);
  const broken = (await kiln(server, ['execute', 'broken'])).stdout.trim();
  await followRun(server, broken);
  await server.waitFor(/delivery failed too many times/);
  const refused = (await kiln(server, ['execute', 'refused'])).stdout.trim();
  await followRun(server, refused);
  await server.waitFor(/the upload target refused the run/);

  const posts = (runId: string) => target.received.filter((r) => r.metadata.run.id === runId).map((r) => r.status);
  assert.deepEqual(posts(broken), [500, 500, 500], 'a 500 is retried up to max_attempts, then no more');
  assert.deepEqual(posts(refused), [400], 'a 400 is not retried');
  assert.match((await kiln(server, ['show', broken])).stdout, /upload to .*: failed after 3 attempts .*; last error: gave up after 3 attempts: HTTP 500: Internal Server Error/);
  assert.match((await kiln(server, ['show', refused])).stdout, /upload to .*: failed after 1 attempts .*; last error: HTTP 400: not a builder exec blob/);
  assert.match((await kiln(server, ['info'])).stdout, /0 pending, 0 delivered, 2 failed/);

  // The target is fixed: each run is sent again on demand, once, and only a failed delivery can be.
  fixed = true;
  const again = await kiln(server, ['redeliver', broken.slice(0, 8)]);
  assert.equal(again.code, 0, again.stderr);
  assert.match(again.stdout, new RegExp(`queued ${broken} for delivery`));
  assert.equal((await kiln(server, ['redeliver', refused])).code, 0);
  await target.accepted(2);
  await server.waitForCount(/run delivered/, 2);
  assert.deepEqual(posts(broken), [500, 500, 500, 200]);
  assert.deepEqual(posts(refused), [400, 200]);
  assert.match((await kiln(server, ['show', broken])).stdout, /upload to .*: delivered after 1 attempts/);
  assert.match((await kiln(server, ['info'])).stdout, /0 pending, 2 delivered, 0 failed/);
  const twice = await kiln(server, ['redeliver', broken]);
  assert.equal(twice.code, 1);
  assert.match(twice.stderr, /has no failed delivery to send again \(delivered\)/);
  assert.equal(target.received.length, 6, 'nothing more was sent');
});

test('--upload s3://bucket/prefix puts each run in a real S3-compatible server, run.json last', async (t) => {
  const s3rver = await startS3rver('builds');
  t.after(() => s3rver.stop());
  const dataDir = tempDir(t);
  const config = path.join(dataDir, 'kiln.yaml');
  writeFileSync(config, [
    'upload:', '  url: s3://builds/kiln', `  endpoint: ${s3rver.endpoint}`, '  region: us-east-1',
    `  access_key_id: ${S3RVER_KEY}`, `  secret_access_key: ${S3RVER_KEY}`, '  force_path_style: true', '',
  ].join('\n'));
  const server = await startServer(t, { dataDir, args: ['--config', config] });
  await startWorker(t, server, ['--platform', 'testos']);
  assert.equal((await kiln(server, ['schedule', 'nightly', '--command', 'echo hello; mkdir -p out; echo data > out/d.txt', ...never])).code, 0);
  const runId = (await kiln(server, ['execute', 'nightly'])).stdout.trim();
  await followRun(server, runId);
  await server.waitFor(/run delivered/);

  const client = new S3Client({ endpoint: s3rver.endpoint, region: 'us-east-1', forcePathStyle: true, credentials: { accessKeyId: S3RVER_KEY, secretAccessKey: S3RVER_KEY } });
  t.after(() => client.destroy());
  const read = async (key: string) => {
    const reply = await client.send(new GetObjectCommand({ Bucket: 'builds', Key: `kiln/nightly/${runId}/${key}` }));
    return { text: await reply.Body!.transformToString(), metadata: reply.Metadata };
  };
  const runJson = JSON.parse((await read('run.json')).text);
  assert.equal(runJson.run.id, runId);
  assert.equal(runJson.run.status, 'succeeded');
  assert.deepEqual(runJson.artifacts.map((a: { path: string }) => a.path), ['out/d.txt']);
  assert.match((await read('console.txt')).text, /^hello\n/);
  const artifact = await read('artifacts/out/d.txt');
  assert.equal(artifact.text, 'data\n');
  assert.equal(artifact.metadata?.sha256, runJson.artifacts[0].sha256);
  assert.match((await kiln(server, ['info'])).stdout, /upload to s3:\/\/builds\/kiln \(endpoint http:\/\/127\.0\.0\.1:\d+\): 0 pending, 1 delivered, 0 failed/);
  assert.ok(!server.stderr.some((line) => line.includes(S3RVER_KEY) && line.includes('secret')), 'no secret in the logs');
});
