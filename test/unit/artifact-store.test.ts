/**
 * `artifacts.store` as written, the start-up warning for blobs other servers cannot reach, and the
 * dir store's dating of its files and its delete of settled blobs only.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, statSync, utimesSync } from 'node:fs';
import { Readable } from 'node:stream';
import { test } from 'node:test';
import { DEFAULT_ARTIFACT_LIMITS, DirBlobStore, parseBlobStore, unsharedBlobWarning } from '../../src/server/artifact-store.js';
import type { JobStore } from '../../src/store/index.js';
import { tempDir } from '../helpers/processes.js';

test('artifacts.store: dir:PATH from the base, s3:// with its query settings and the given credentials; anything else refused by code', () => {
  assert.deepEqual(parseBlobStore('dir:blobs', '/etc/kiln'), { kind: 'dir', root: '/etc/kiln/blobs' });
  assert.deepEqual(parseBlobStore('dir:/shared/kiln', '/etc/kiln'), { kind: 'dir', root: '/shared/kiln' });
  assert.deepEqual(parseBlobStore('s3://farm/kiln/blobs/?endpoint=http://minio:9000&region=eu-1&force_path_style=true', '/', { accessKeyId: 'id', secretAccessKey: 'secret' }), {
    kind: 's3', bucket: 'farm', prefix: 'kiln/blobs',
    settings: { endpoint: 'http://minio:9000', region: 'eu-1', forcePathStyle: true, accessKeyId: 'id', secretAccessKey: 'secret' },
  });
  assert.deepEqual(parseBlobStore('s3://farm', '/'), { kind: 's3', bucket: 'farm', prefix: '', settings: {} });
  const refused: [string, RegExp][] = [
    ['/shared/kiln', /use dir:PATH or s3:/],
    ['dir:', /give the directory/],
    ['s3://user:pw@farm/x', /not in the URL/],
    ['s3://farm/x?force_path_style=yes', /force_path_style is true or false/],
    ['s3://farm/x?endpoint=nope', /S3 endpoint is not a URL/],
    ['s3:///x', /must read s3:\/\/BUCKET\/PREFIX/],
  ];
  for (const [text, message] of refused) {
    assert.throws(() => parseBlobStore(text, '/'), (err: { code?: string; message: string }) => err.code === 'KILN_ERR_CONFIG' && message.test(err.message), text);
  }
  assert.throws(() => parseBlobStore('s3://farm', '/', { accessKeyId: 'id' }), /go together/);
  // The URL is logged: a refused one is shown without its query.
  assert.throws(() => parseBlobStore('ftp://farm?token=s3cret', '/'), (err: Error) => !err.message.includes('s3cret'));
});

test('the warning at start: on PostgreSQL only, for a dir store inside the data dir', () => {
  assert.equal(unsharedBlobWarning(false, undefined, '/var/lib/kiln'), undefined, 'SQLite: one server');
  assert.match(unsharedBlobWarning(true, undefined, '/var/lib/kiln') ?? '', /kept in \/var\/lib\/kiln\/artifacts, inside this server's data dir/);
  assert.match(unsharedBlobWarning(true, { kind: 'dir', root: '/var/lib/kiln/blobs' }, '/var/lib/kiln') ?? '', /inside this server's data dir/);
  assert.equal(unsharedBlobWarning(true, { kind: 'dir', root: '/mnt/shared/blobs' }, '/var/lib/kiln'), undefined);
  assert.equal(unsharedBlobWarning(true, { kind: 'dir', root: '/var/lib/kiln-shared' }, '/var/lib/kiln'), undefined, 'a sibling with a common prefix is outside');
  assert.equal(unsharedBlobWarning(true, { kind: 's3', bucket: 'b', prefix: '', settings: {} }, '/var/lib/kiln'), undefined);
});

test('a dir store dates a stored file by its clock, and deletes a blob only if its file is older than asked', async (t) => {
  const HOUR = 3_600_000;
  const clock = { at: Date.now() - 5 * HOUR };
  // Only put() reaches the store: a row made each time.
  const store = { touchBlob: async () => true } as unknown as JobStore;
  const root = tempDir(t);
  const blobs = new DirBlobStore(root, { dataDir: root, limits: DEFAULT_ARTIFACT_LIMITS, store, now: () => clock.at });
  const sha = (text: string) => createHash('sha256').update(text).digest('hex');
  const put = (content: string) => blobs.put(Readable.from([Buffer.from(content)]), { size: content.length, sha256: sha(content) });

  await put('old');
  assert.ok(Math.abs(statSync(blobs.blobPath(sha('old'))).mtimeMs - clock.at) < 1000, 'dated at the upload, by the store clock');
  clock.at = Date.now();
  await put('fresh');
  const settledBefore = Date.now() - HOUR;

  assert.equal(await blobs.deleteIfSettled(sha('fresh'), settledBefore), false, 'stored again since: kept');
  assert.equal(readFileSync(blobs.blobPath(sha('fresh')), 'utf8'), 'fresh', 'back in place');
  assert.equal(await blobs.deleteIfSettled(sha('old'), settledBefore), true);
  assert.ok(!existsSync(blobs.blobPath(sha('old'))));
  assert.equal(await blobs.deleteIfSettled(sha('never stored'), settledBefore), true, 'nothing to delete');
  assert.deepEqual(readdirSync(`${root}/tmp`), [], 'nothing left aside');
  // A file dated in the past by hand is settled whatever its row says (the row is the sweeper's).
  const past = new Date(Date.now() - 2 * HOUR);
  utimesSync(blobs.blobPath(sha('fresh')), past, past);
  assert.equal(await blobs.deleteIfSettled(sha('fresh'), settledBefore), true);
});
