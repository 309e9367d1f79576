/** Artifact uploads against a real server: every bad upload is refused with a clear error and stores nothing. */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readdirSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { call, runOnFakeWorker } from '../helpers/in-process.js';

const sha = (text: string) => createHash('sha256').update(text).digest('hex');

test('uploads are checked: path, hash, size, holder, token and limit; good ones are stored once', async (t) => {
  const { server, runId } = await runOnFakeWorker(t, undefined, { artifactLimits: { fileBytes: 1000 } });
  const put = (rawPath: string, body: string, headers: Record<string, string> = {}, token = server.tokens.worker) =>
    fetch(`${server.url}/api/runs/${runId}/artifacts/${rawPath}`, {
      method: 'PUT',
      headers: {
        authorization: `Bearer ${token}`, 'content-type': 'application/octet-stream', 'x-kiln-worker': 'fake-1',
        'x-kiln-sha256': sha(body), 'x-kiln-size': String(Buffer.byteLength(body)), 'x-kiln-mode': '420', ...headers,
      },
      body,
    }).then(async (r) => ({ status: r.status, body: (await r.json()) as { error?: { code: string; message: string } } }));

  const bad: [string, Awaited<ReturnType<typeof put>>, number, string, RegExp][] = [
    ['a path escaping the work dir', await put('..%2F..%2Fetc%2Fpasswd', 'x'), 400, 'KILN_ERR_INVALID_REQUEST', /may not contain '\.\.'/],
    ['an absolute path', await put('%2Fetc%2Fpasswd', 'x'), 400, 'KILN_ERR_INVALID_REQUEST', /must be relative/],
    ['a NUL in the path', await put('a%00b', 'x'), 400, 'KILN_ERR_INVALID_REQUEST', /NUL/],
    ['a wrong hash', await put('f.txt', 'hello', { 'x-kiln-sha256': sha('other') }), 400, 'KILN_ERR_INVALID_REQUEST', /sha256 mismatch/],
    ['more bytes than announced', await put('f.txt', 'hello world', { 'x-kiln-size': '5', 'x-kiln-sha256': sha('hello') }), 400, 'KILN_ERR_INVALID_REQUEST', /more bytes than the announced 5/],
    ['fewer bytes than announced', await put('f.txt', 'hi', { 'x-kiln-size': '10' }), 400, 'KILN_ERR_INVALID_REQUEST', /got 2 bytes, 10 were announced/],
    ['no size', await put('f.txt', 'hi', { 'x-kiln-size': '' }), 400, 'KILN_ERR_INVALID_REQUEST', /x-kiln-size/],
    ['over the size limit', await put('big', 'x'.repeat(1001)), 413, 'KILN_ERR_PAYLOAD_TOO_LARGE', /larger than the per-file limit of 1000 bytes/],
    ['a worker that does not hold the run', await put('f.txt', 'hi', { 'x-kiln-worker': 'someone-else' }), 409, 'KILN_ERR_ARTIFACT_REFUSED', /does not hold run/],
    ['the admin token', await put('f.txt', 'hi', {}, server.tokens.admin), 403, 'KILN_ERR_FORBIDDEN', /takes a worker token/],
    ['a JSON body', await put('f.txt', '{"a":1}', { 'content-type': 'application/json' }), 400, 'KILN_ERR_INVALID_REQUEST', /application\/octet-stream/],
  ];
  for (const [what, reply, status, code, message] of bad) {
    assert.equal(reply.status, status, `${what}: ${JSON.stringify(reply.body)}`);
    assert.equal(reply.body.error?.code, code, what);
    assert.match(reply.body.error?.message ?? '', message, what);
  }
  assert.deepEqual((await call(server, 'GET', `/api/runs/${runId}/artifacts`)).body.artifacts, [], 'nothing stored');
  const blobs = path.join(server.dataDir, 'artifacts');
  assert.deepEqual(readdirSync(path.join(blobs, 'tmp')), [], 'no temp file left behind');

  assert.equal((await put('./out//same.txt', 'same')).status, 201);
  assert.equal((await put('other.txt', 'same')).status, 201);
  const listed = (await call(server, 'GET', `/api/runs/${runId}/artifacts`)).body.artifacts;
  assert.deepEqual(listed.map((a: { path: string }) => a.path), ['other.txt', 'out/same.txt'], 'paths are normalised');
  const stored = readdirSync(blobs).filter((d) => d !== 'tmp').flatMap((d) => readdirSync(path.join(blobs, d)));
  assert.deepEqual(stored, [sha('same')], 'the same content is stored once');

  // A worker cannot hand a downloader a setuid, setgid or sticky file: permission bits only are kept.
  assert.equal((await put('tool', 'tool', { 'x-kiln-mode': String(0o7755) })).status, 201);
  const tool = (await call(server, 'GET', `/api/runs/${runId}/artifacts`)).body.artifacts.find((a: { path: string }) => a.path === 'tool');
  assert.equal(tool.mode, 0o755);

  const file = await fetch(`${server.url}/api/runs/${runId}/artifacts/out/same.txt`, { headers: { authorization: `Bearer ${server.tokens.admin}` } });
  assert.equal(file.headers.get('etag'), `"${sha('same')}"`);
  assert.equal(file.headers.get('content-length'), '4');
  assert.equal(await file.text(), 'same');
});

test('a run keeps at most the per-run limit of artifact bytes; replacing a file counts its new size only', async (t) => {
  const { server, runId } = await runOnFakeWorker(t, undefined, { artifactLimits: { runBytes: 10 } });
  const put = (name: string, body: string) =>
    fetch(`${server.url}/api/runs/${runId}/artifacts/${name}`, {
      method: 'PUT',
      headers: {
        authorization: `Bearer ${server.tokens.worker}`, 'content-type': 'application/octet-stream', 'x-kiln-worker': 'fake-1',
        'x-kiln-sha256': sha(body), 'x-kiln-size': String(Buffer.byteLength(body)),
      },
      body,
    }).then(async (r) => ({ status: r.status, body: (await r.json()) as { error?: { code: string; message: string } } }));

  assert.equal((await put('a', '123456')).status, 201);
  const over = await put('b', '123456');
  assert.equal(over.status, 413);
  assert.equal(over.body.error?.code, 'KILN_ERR_PAYLOAD_TOO_LARGE');
  assert.match(over.body.error?.message ?? '', /would take the run's artifacts to 12 bytes, over the per-run limit of 10 bytes/);
  assert.equal((await put('a', '1234567')).status, 201, 'a replaced file counts once');
  const listed = (await call(server, 'GET', `/api/runs/${runId}/artifacts`)).body.artifacts;
  assert.deepEqual(listed.map((a: { path: string; size: number }) => [a.path, a.size]), [['a', 7]]);
});
