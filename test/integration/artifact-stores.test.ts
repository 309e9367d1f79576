/**
 * Artifact blobs in a store every server reaches (`artifacts.store`): an S3 bucket (s3rver, a real
 * S3-compatible service, as a child process) with uploads, downloads, ranges, dedup and gc as with
 * a directory; and two servers on one SQLite store and one `dir:` store serving each other's blobs.
 */
import { GetObjectCommand, ListObjectsV2Command, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { Readable } from 'node:stream';
import { DEFAULT_ARTIFACT_LIMITS, openBlobStore, type BlobStoreLocation } from '../../src/server/artifact-store.js';
import type { KilnServer } from '../../src/server/index.js';
import { openStore } from '../../src/store/index.js';
import { call, FakeWorker, inProcessServer, runOnFakeWorker, testJob } from '../helpers/in-process.js';
import { tempDir } from '../helpers/processes.js';
import { S3RVER_KEY, startS3rver, type S3rver } from '../helpers/s3rver.js';

const BUCKET = 'kiln-blobs';
const HOUR = 3_600_000;
const sha = (text: string) => createHash('sha256').update(text).digest('hex');

let s3rver: S3rver;
let reader: S3Client;

before(async () => {
  s3rver = await startS3rver(BUCKET);
  reader = new S3Client({ endpoint: s3rver.endpoint, region: 'us-east-1', forcePathStyle: true, credentials: { accessKeyId: S3RVER_KEY, secretAccessKey: S3RVER_KEY } });
});

after(() => {
  reader?.destroy();
  s3rver?.stop();
});

const keys = async (prefix: string) => ((await reader.send(new ListObjectsV2Command({ Bucket: BUCKET, Prefix: prefix }))).Contents ?? []).map((o) => o.Key);

/** Uploads `body` as the run's artifact `name`, as worker `worker` does. */
const upload = (server: KilnServer, runId: string, name: string, body: string, worker = 'fake-1') =>
  fetch(`${server.url}/api/runs/${runId}/artifacts/${name}`, {
    method: 'PUT',
    headers: {
      authorization: `Bearer ${server.tokens.worker}`, 'content-type': 'application/octet-stream', 'x-kiln-worker': worker,
      'x-kiln-sha256': sha(body), 'x-kiln-size': String(Buffer.byteLength(body)),
    },
    body,
  }).then(async (r) => ({ status: r.status, body: await r.json() }));

const download = (server: KilnServer, runId: string, name: string, headers: Record<string, string> = {}) =>
  fetch(`${server.url}/api/runs/${runId}/artifacts/${name}`, { headers: { authorization: `Bearer ${server.tokens.admin}`, ...headers } });

test('an S3 store: uploads stored once under PREFIX/ab/SHA, downloads and ranges streamed back, gc after the grace', async (t) => {
  const clock = { offset: 0 };
  const artifactStore: BlobStoreLocation = {
    kind: 's3', bucket: BUCKET, prefix: 'farm/blobs',
    settings: { endpoint: s3rver.endpoint, region: 'us-east-1', forcePathStyle: true, accessKeyId: S3RVER_KEY, secretAccessKey: S3RVER_KEY },
  };
  const { server, worker, runId } = await runOnFakeWorker(t, undefined, { artifactStore, now: () => Date.now() + clock.offset });
  const content = 'built in the cloud';

  assert.equal((await upload(server, runId, 'a.txt', content)).status, 201);
  assert.equal((await upload(server, runId, 'copy/a.txt', content)).status, 201);
  assert.deepEqual(await keys('farm/blobs/'), [`farm/blobs/${sha(content).slice(0, 2)}/${sha(content)}`], 'stored once, under the prefix');
  assert.deepEqual(readdirSync(path.join(server.dataDir, 'artifacts')), ['tmp'], 'no blob on the local disk');
  assert.deepEqual(readdirSync(path.join(server.dataDir, 'artifacts', 'tmp')), [], 'no temp file left behind');

  const whole = await download(server, runId, 'copy/a.txt');
  assert.equal(whole.status, 200);
  assert.equal(whole.headers.get('content-length'), String(content.length));
  assert.equal(whole.headers.get('etag'), `"${sha(content)}"`);
  assert.equal(await whole.text(), content);
  const part = await download(server, runId, 'a.txt', { range: 'bytes=6-7' });
  assert.equal(part.status, 206);
  assert.equal(part.headers.get('content-range'), `bytes 6-7/${content.length}`);
  assert.equal(await part.text(), 'in');

  worker.send({ v: 1, type: 'run.finished', runId, result: { kind: 'exited', code: 0 } });
  assert.equal((await worker.next()).type, 'run.done');
  // The run's artifacts go at once; the blob waits for the grace (an upload may be about to use it).
  const first = await call(server, 'POST', '/api/artifacts/gc', { dryRun: false, keepRuns: 0 });
  assert.equal(first.status, 200, JSON.stringify(first.body));
  assert.deepEqual(first.body.runs.map((r: { runId: string }) => r.runId), [runId]);
  assert.deepEqual(first.body.blobs, []);
  assert.equal((await keys('farm/blobs/')).length, 1);

  clock.offset = 2 * HOUR;
  const second = await call(server, 'POST', '/api/artifacts/gc', { dryRun: false, keepRuns: 0 });
  assert.deepEqual(second.body.blobs, [{ sha256: sha(content), bytes: content.length }]);
  assert.deepEqual(await keys('farm/blobs/'), [], 'deleted from the bucket');
});

test('an S3 store sends a blob again when its row is new (a sweep forgot it and may be deleting the object found), not when the row is there', async (t) => {
  const dataDir = tempDir(t);
  const store = await openStore(dataDir);
  t.after(() => store.close());
  const location: BlobStoreLocation = {
    kind: 's3', bucket: BUCKET, prefix: 'resend',
    settings: { endpoint: s3rver.endpoint, region: 'us-east-1', forcePathStyle: true, accessKeyId: S3RVER_KEY, secretAccessKey: S3RVER_KEY },
  };
  const blobs = await openBlobStore(location, { dataDir, limits: DEFAULT_ARTIFACT_LIMITS, store, now: Date.now });
  t.after(() => blobs.close());
  const content = 'stored, forgotten, stored again';
  const key = `resend/${sha(content).slice(0, 2)}/${sha(content)}`;
  const put = () => blobs.put(Readable.from([Buffer.from(content)]), { size: content.length, sha256: sha(content) });
  const stored = async () => (await (await reader.send(new GetObjectCommand({ Bucket: BUCKET, Key: key }))).Body!.transformToString());
  // The object is replaced by a marker (same key) to see whether an upload sends it again.
  const mark = () => reader.send(new PutObjectCommand({ Bucket: BUCKET, Key: key, Body: 'marker' }));

  await put();
  await mark();
  await put();
  assert.equal(await stored(), 'marker', 'its row is there: found stored, not sent again');

  // A sweep forgot the row; its DELETE of the object this upload's HEAD would find is still to come.
  assert.equal(await store.forgetBlob(sha(content), Number.MAX_SAFE_INTEGER), true);
  await put();
  assert.equal(await stored(), content, 'sent again');
});

test('two servers sharing one store and one dir: store, serve each other\'s artifacts', async (t) => {
  const shared = tempDir(t);
  const artifactStore: BlobStoreLocation = { kind: 'dir', root: path.join(shared, 'blobs') };
  // A keeps the SQLite store in its data dir; B is given that file (each holds its own data dir).
  const a = await inProcessServer(t, { dataDir: shared, artifactStore });
  const b = await inProcessServer(t, { dataDir: tempDir(t), store: `sqlite:${path.join(shared, 'kiln.db')}`, artifactStore });
  const worker = await FakeWorker.connect(t, a);
  await worker.hello();
  await call(a, 'POST', '/api/jobs', testJob);
  const runId: string = (await call(a, 'POST', `/api/jobs/${testJob.name}/execute`, {})).body.run.id;
  await worker.next();

  assert.equal((await upload(a, runId, 'report.txt', 'uploaded to A')).status, 201);

  const fromB = await download(b, runId, 'report.txt');
  assert.equal(fromB.status, 200, await fromB.clone().text());
  assert.equal(await fromB.text(), 'uploaded to A');
  assert.ok(existsSync(path.join(shared, 'blobs', sha('uploaded to A').slice(0, 2), sha('uploaded to A'))));
});
