/**
 * Per-worker tokens with real processes: `kiln worker-token create`, a `kiln worker` started with
 * the token from a file, a job with an artifact end to end, `list`, and `revoke` ending the worker.
 */
import assert from 'node:assert/strict';
import { existsSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { followRun, kiln, spawnKiln, startServer, tempDir } from '../helpers/processes.js';

test('a worker with its own token runs a job end to end; a revoked token ends it', async (t) => {
  const server = await startServer(t);
  const created = await kiln(server, ['worker-token', 'create', 'builder-1']);
  assert.equal(created.code, 0, created.stderr);
  const token = created.stdout.trim();
  assert.match(token, /^[A-Za-z0-9_-]{43}$/, 'the token alone on stdout');
  assert.match(created.stderr, /shown only now/);

  // Handed over in a file, as a service manager would; the worker removes it once read.
  const file = path.join(tempDir(t), 'builder-1.token');
  writeFileSync(file, token + '\n', { mode: 0o600 });
  const worker = spawnKiln(t, ['worker', '--server', server.url, '--name', 'builder-1', '--platform', 'testos'], { KILN_WORKER_TOKEN_FILE: file });
  await worker.waitFor(/connected to the server/);
  assert.equal(existsSync(file), false, 'the token file is gone once read');

  assert.equal((await kiln(server, ['schedule', 'build', '--command', 'echo built > out.txt; echo done', '--platform', 'testos', '--period', 'never'])).code, 0);
  const runId = (await kiln(server, ['execute', 'build'])).stdout.trim();
  const { lines, run } = await followRun(server, runId);
  assert.equal(run.status, 'succeeded');
  assert.ok(lines.includes('done'));
  const artifacts = JSON.parse((await kiln(server, ['artifacts', runId, '--json'])).stdout).artifacts;
  assert.deepEqual(artifacts.map((a: { path: string }) => a.path), ['out.txt'], 'its upload was accepted under its own credential');
  assert.equal(JSON.parse((await kiln(server, ['show', runId, '--json'])).stdout).run.worker, 'builder-1');

  const listed = await kiln(server, ['worker-token', 'list']);
  assert.equal(listed.code, 0, listed.stderr);
  assert.match(listed.stdout, /^NAME\s+CREATED\s+LAST USED\nbuilder-1\s+\S+\s+\d{4}-\d\d-\d\dT/);
  assert.equal(listed.stdout.includes(token), false, 'never the token');

  const revoked = await kiln(server, ['worker-token', 'revoke', 'builder-1']);
  assert.equal(revoked.code, 0, revoked.stderr);
  assert.match(revoked.stdout, /revoked the token of worker builder-1 \(disconnected 1 connection\)/);
  assert.deepEqual(await worker.exited, { code: 3, signal: null }, 'the worker stops: retrying cannot help');
  await worker.waitFor(/was revoked/);
  const again = await kiln(server, ['worker-token', 'revoke', 'builder-1']);
  assert.equal(again.code, 1);
  assert.match(again.stderr, /^kiln: no worker token named 'builder-1'/);
});

test("a worker whose token is bound to another name is refused and exits; --token on argv is warned about", async (t) => {
  const server = await startServer(t);
  const token = (await kiln(server, ['worker-token', 'create', 'builder-a'])).stdout.trim();
  const wrongName = spawnKiln(t, ['worker', '--server', server.url, '--name', 'builder-b'], { KILN_WORKER_TOKEN: token });
  assert.deepEqual(await wrongName.exited, { code: 3, signal: null });
  await wrongName.waitFor(/the token of worker 'builder-a' may only connect as 'builder-a', not as 'builder-b'/);

  const onArgv = spawnKiln(t, ['worker', '--server', server.url, '--name', 'builder-a', '--token', 'not-the-token']);
  assert.deepEqual(await onArgv.exited, { code: 3, signal: null });
  await onArgv.waitFor(/--token puts the worker token on the command line, where every local user can read it/);
});

test('--token-file reads the worker token from a file it leaves in place; a missing or empty one is a usage error', async (t) => {
  const server = await startServer(t);
  const token = (await kiln(server, ['worker-token', 'create', 'builder-f'])).stdout.trim();
  const dir = tempDir(t);
  const file = path.join(dir, 'builder-f.token');
  writeFileSync(file, token + '\n', { mode: 0o600 });
  const worker = spawnKiln(t, ['worker', '--server', server.url, '--name', 'builder-f', '--token-file', file]);
  await worker.waitFor(/connected to the server/);
  assert.equal(existsSync(file), true, 'a --token-file is the operator\'s: it stays');
  assert.equal(worker.stderr.some((line) => line.includes(token)), false, 'the token is never logged');
  await worker.kill('SIGTERM');

  const missing = spawnKiln(t, ['worker', '--server', server.url, '--name', 'builder-f', '--token-file', path.join(dir, 'nope')]);
  assert.deepEqual(await missing.exited, { code: 2, signal: null });
  await missing.waitFor(/^kiln: cannot read the worker token from --token-file .*nope: /);
  writeFileSync(path.join(dir, 'empty'), '\n');
  const empty = spawnKiln(t, ['worker', '--server', server.url, '--name', 'builder-f', '--token-file', path.join(dir, 'empty')]);
  assert.deepEqual(await empty.exited, { code: 2, signal: null });
  await empty.waitFor(/--token-file .*empty is empty/);
});
