/**
 * `artifacts.store: s3://...` with real processes: a server, a worker and s3rver (a real
 * S3-compatible service). A job's artifacts go to the bucket, not the data dir; they download
 * whole; the upload target's deliveries read them from the bucket; no secret reaches the logs.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { GetObjectCommand, ListObjectsV2Command, S3Client } from '@aws-sdk/client-s3';
import { followRun, kiln, startServer, startWorker, tempDir } from '../helpers/processes.js';
import { S3RVER_KEY, startS3rver } from '../helpers/s3rver.js';

test('a job\'s artifacts kept in an S3 bucket: downloaded back whole, and delivered from there to the upload target', { timeout: 120_000 }, async (t) => {
  const s3rver = await startS3rver('farm');
  t.after(() => s3rver.stop());
  const dataDir = tempDir(t);
  const config = path.join(dataDir, 'kiln.yaml');
  writeFileSync(config, [
    'artifacts:',
    `  store: s3://farm/blobs?endpoint=${s3rver.endpoint}&region=us-east-1&force_path_style=true`,
    `  access_key_id: ${S3RVER_KEY}`, `  secret_access_key: ${S3RVER_KEY}`,
    'upload:', '  url: s3://farm/runs', `  endpoint: ${s3rver.endpoint}`, '  region: us-east-1',
    `  access_key_id: ${S3RVER_KEY}`, `  secret_access_key: ${S3RVER_KEY}`, '  force_path_style: true', '',
  ].join('\n'), { mode: 0o600 });
  const server = await startServer(t, { dataDir, args: ['--config', config] });
  await startWorker(t, server, ['--platform', 'testos']);
  const script = 'mkdir -p out; head -c 300000 /dev/urandom > out/app.bin';
  assert.equal((await kiln(server, ['schedule', 'release', '--command', script, '--platform', 'testos', '--period', 'never'])).code, 0);
  const runId = (await kiln(server, ['execute', 'release'])).stdout.trim();
  await followRun(server, runId);
  await server.waitFor(/run delivered/);

  const listed = await fetch(`${server.url}/api/runs/${runId}/artifacts`, { headers: { authorization: `Bearer ${server.adminToken}` } }).then((r) => r.json() as Promise<{ artifacts: { path: string; size: number; sha256: string }[] }>);
  const artifact = listed.artifacts[0]!;
  assert.equal(artifact?.path, 'out/app.bin');
  const client = new S3Client({ endpoint: s3rver.endpoint, region: 'us-east-1', forcePathStyle: true, credentials: { accessKeyId: S3RVER_KEY, secretAccessKey: S3RVER_KEY } });
  t.after(() => client.destroy());
  const blobs = (await client.send(new ListObjectsV2Command({ Bucket: 'farm', Prefix: 'blobs/' }))).Contents?.map((o) => [o.Key, o.Size]);
  assert.deepEqual(blobs, [[`blobs/${artifact.sha256.slice(0, 2)}/${artifact.sha256}`, 300_000]]);
  assert.deepEqual(readdirSync(path.join(dataDir, 'artifacts')), ['tmp'], 'nothing kept on the server\'s disk');

  const download = await fetch(`${server.url}/api/runs/${runId}/artifacts/out/app.bin`, { headers: { authorization: `Bearer ${server.adminToken}` } });
  assert.equal(download.status, 200);
  const bytes = Buffer.from(await download.arrayBuffer());
  assert.equal(createHash('sha256').update(bytes).digest('hex'), artifact.sha256);

  const delivered = await client.send(new GetObjectCommand({ Bucket: 'farm', Key: `runs/release/${runId}/artifacts/out/app.bin` }));
  const sent = Buffer.from(await delivered.Body!.transformToByteArray());
  assert.equal(createHash('sha256').update(sent).digest('hex'), artifact.sha256, 'the delivery read the blob from the bucket');
  // s3rver's key id and secret are the same word: neither is in any log line.
  assert.ok(!server.stderr.some((line) => line.includes(S3RVER_KEY)), 'no credential in the logs');
  assert.match(server.stderr.join('\n'), /"artifacts":"s3:\/\/farm\/blobs \(endpoint http:\/\/127\.0\.0\.1:\d+\)"/);
});
