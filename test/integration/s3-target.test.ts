/**
 * The S3 upload target against a real S3-compatible service: s3rver, run as a child process on a
 * port the kernel picks and a temp dir, and killed by pid when the file's tests end. Every object
 * is read back through the SDK and compared byte for byte.
 */
import { GetObjectCommand, ListObjectsV2Command, S3Client } from '@aws-sdk/client-s3';
import assert from 'node:assert/strict';
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { once } from 'node:events';
import { createReadStream, mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { s3Target, type S3Settings } from '../../src/server/upload/s3-target.js';
import { deliveryMetadata, type RunDelivery } from '../../src/server/upload/target.js';
import type { Artifact, Run } from '../../src/store/index.js';
import { freePort, tempDir } from '../helpers/processes.js';
import { S3RVER_KEY, startS3rver, type S3rver } from '../helpers/s3rver.js';

const BUCKET = 'kiln-test';

let s3rver: S3rver;
let settings: S3Settings;
let reader: S3Client;

before(async () => {
  s3rver = await startS3rver(BUCKET);
  settings = { endpoint: s3rver.endpoint, region: 'us-east-1', accessKeyId: S3RVER_KEY, secretAccessKey: S3RVER_KEY, forcePathStyle: true };
  reader = new S3Client({ ...settings, credentials: { accessKeyId: S3RVER_KEY, secretAccessKey: S3RVER_KEY } });
});

after(() => {
  reader?.destroy();
  s3rver?.stop();
});

const sha256 = (content: Buffer) => createHash('sha256').update(content).digest('hex');

/** A finished run, every field spelled out. */
function finishedRun(job: string): Run {
  return {
    id: randomUUID(),
    job,
    platform: 'debian-12',
    labels: { gpu: 'yes' },
    status: 'succeeded',
    attempt: 1,
    workerIdentity: null, workerSession: null,
    worker: 'vm-local',
    queuedAt: 1_700_000_000_000,
    startedAt: 1_700_000_000_100,
    finishedAt: 1_700_000_005_000,
    result: { kind: 'exited', code: 0 },
    script: 'echo building\nmake',
    env: { GREETING: 'hi' },
    timeoutMs: 3_600_000,
    idleTimeoutMs: null,
    lostRetriesLeft: 1,
    failureRetriesLeft: 0,
    firstSeq: 0,
    cancelRequestedBy: null,
    deadlineAt: null,
    artifacts: ['**'],
    artifactsOnFailure: false,
    sandbox: {},
  };
}

/** A delivery of `run` whose console yields `lines`, with no artifacts unless given. */
function delivery(run: Run, lines: string[], artifacts: (Artifact & { file: string })[] = []): RunDelivery {
  return {
    deliveryId: randomUUID(),
    run,
    async *consoleLines() {
      yield* lines;
    },
    readConsole: async (afterSeq, limit) => lines.map((text, seq) => ({ seq, text, ts: run.startedAt ?? 0 })).filter((l) => l.seq > afterSeq).slice(0, limit),
    // Opened as the server's blob store opens them: a missing file fails at once.
    artifacts: artifacts.map((a) => ({
      ...a,
      open: async () => {
        const stream = createReadStream(a.file);
        await once(stream, 'open');
        return stream;
      },
    })),
  };
}

/** An artifact file written under `dir`. */
function artifact(dir: string, relative: string, content: Buffer, mode: number): Artifact & { file: string } {
  const file = path.join(dir, relative);
  mkdirSync(path.dirname(file), { recursive: true });
  writeFileSync(file, content, { mode });
  return { path: relative, size: content.length, sha256: sha256(content), mode, file };
}

async function getObject(key: string, bucket = BUCKET): Promise<{ body: Buffer; metadata: Record<string, string> }> {
  const reply = await reader.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
  return { body: Buffer.from(await reply.Body!.transformToByteArray()), metadata: reply.Metadata ?? {} };
}

async function listKeys(prefix: string): Promise<string[]> {
  const reply = await reader.send(new ListObjectsV2Command({ Bucket: BUCKET, Prefix: prefix }));
  return (reply.Contents ?? []).map((object) => object.Key!).sort();
}

test('a run with nested artifacts is delivered: every byte, hash, mode, the console and run.json', async (t) => {
  const dir = tempDir(t);
  const artifacts = [
    artifact(dir, 'bin/app', randomBytes(3 * 1024 * 1024 + 17), 0o755),
    artifact(dir, 'logs/deep/nested/report.txt', Buffer.from('all green ✓\n'), 0o644),
    artifact(dir, 'empty', Buffer.alloc(0), 0o600),
  ];
  // Long enough to span several of the target's 64 KiB write chunks, with empty and non-ASCII lines.
  const lines = ['building on debian-12', '', 'ünïcödé ✓', ...Array.from({ length: 20_000 }, (_, i) => `step ${i}`), 'done'];
  const run = finishedRun('nightly');
  const sent = delivery(run, lines, artifacts);

  const outcome = await s3Target(new URL(`s3://${BUCKET}/builds`), settings).deliver(sent);

  assert.deepEqual(outcome, { kind: 'delivered' });
  const base = `builds/nightly/${run.id}`;
  for (const a of artifacts) {
    const { body, metadata } = await getObject(`${base}/artifacts/${a.path}`);
    assert.equal(body.length, a.size, a.path);
    assert.equal(sha256(body), a.sha256, a.path);
    assert.deepEqual(metadata, { sha256: a.sha256, mode: String(a.mode) }, a.path);
  }
  assert.equal((await getObject(`${base}/console.txt`)).body.toString('utf8'), lines.join('\n') + '\n');
  const runJson = JSON.parse((await getObject(`${base}/run.json`)).body.toString('utf8'));
  assert.deepEqual(runJson, deliveryMetadata(sent));
  assert.equal(runJson.run.id, run.id);
  assert.equal(runJson.run.finishedAt, new Date(run.finishedAt!).toISOString());
  assert.deepEqual(runJson.artifacts, artifacts.map(({ path, size, sha256, mode }) => ({ path, size, sha256, mode })));
  assert.deepEqual(await listKeys(`${base}/`), [
    `${base}/artifacts/bin/app`, `${base}/artifacts/empty`, `${base}/artifacts/logs/deep/nested/report.txt`,
    `${base}/console.txt`, `${base}/run.json`,
  ]);
});

test('a bucket that does not exist: give up, naming the bucket and the S3 error code', async () => {
  const outcome = await s3Target(new URL('s3://no-such-bucket/builds'), settings).deliver(delivery(finishedRun('nightly'), ['hello']));

  assert.equal(outcome.kind, 'give-up');
  assert.match(outcome.reason, /s3:\/\/no-such-bucket\/builds\/nightly\/.*NoSuchBucket \(HTTP 404\)/);
  assert.doesNotMatch(outcome.reason, /\n/);
});

test('a service where nothing listens: retry later', async () => {
  const endpoint = `http://127.0.0.1:${await freePort()}`;

  const outcome = await s3Target(new URL(`s3://${BUCKET}/builds`), { ...settings, endpoint }).deliver(delivery(finishedRun('nightly'), ['hello']));

  assert.equal(outcome.kind, 'retry');
  assert.match(outcome.reason, /ECONNREFUSED/);
});

test('an artifact file that is missing: give up (it will not come back), and no run.json marks the run complete', async (t) => {
  const dir = tempDir(t);
  const run = finishedRun('nightly');
  const gone = { ...artifact(dir, 'gone', Buffer.from('x'), 0o644), file: path.join(dir, 'not-there') };

  const outcome = await s3Target(new URL(`s3://${BUCKET}/missing`), settings).deliver(delivery(run, ['hello'], [gone]));

  assert.equal(outcome.kind, 'give-up');
  assert.match(outcome.reason, /ENOENT/);
  assert.deepEqual(await listKeys(`missing/nightly/${run.id}/`), []);
});

test('prefixes: none puts runs at the bucket root, a nested one above them', async () => {
  for (const [url, base] of [
    [`s3://${BUCKET}`, ''],
    [`s3://${BUCKET}/`, ''],
    [`s3://${BUCKET}/a/b`, 'a/b/'],
    [`s3://${BUCKET}/a/b/`, 'a/b/'],
  ] as const) {
    const run = finishedRun(`prefix-${randomUUID().slice(0, 8)}`);
    const target = s3Target(new URL(url), settings);

    assert.deepEqual(await target.deliver(delivery(run, [])), { kind: 'delivered' }, url);

    const keys = [`${base}${run.job}/${run.id}/console.txt`, `${base}${run.job}/${run.id}/run.json`];
    assert.deepEqual(await listKeys(`${base}${run.job}/`), keys, url);
    assert.equal((await getObject(keys[0]!)).body.length, 0, `${url}: an empty console is an empty file`);
    assert.equal(target.description, `s3://${BUCKET}/${base.replace(/\/$/, '')} (endpoint ${settings.endpoint})`, url);
  }
});

test('the description names no secret', () => {
  const target = s3Target(new URL(`s3://${BUCKET}/x`), { ...settings, endpoint: 'http://user:pass@minio.example:9000/' });

  assert.equal(target.description, `s3://${BUCKET}/x (endpoint http://minio.example:9000)`);
  assert.doesNotMatch(target.description, /S3RVER|pass/);
});
