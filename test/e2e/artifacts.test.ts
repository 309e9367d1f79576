/** Artifacts with real processes: exactly the right files, verified downloads, one blob per content. */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { followRun, kiln, startServer, startWorker, tempDir } from '../helpers/processes.js';

const never = ['--platform', 'testos', '--period', 'never'];

test('a run keeps its non-dot files (not its script, not symlinks), downloads are verified with their modes', async (t) => {
  const server = await startServer(t);
  await startWorker(t, server, ['--platform', 'testos']);
  const script = [
    'mkdir -p out/deep .cache',
    'echo one > a.txt',
    'printf "two" > out/deep/b.bin && chmod 750 out/deep/b.bin',
    'echo hidden > .cache/x && echo dot > .env',
    'ln -s /etc/passwd stolen',
  ].join('; ');
  assert.equal((await kiln(server, ['schedule', 'build', '--command', script, ...never])).code, 0);
  const first = (await kiln(server, ['execute', 'build'])).stdout.trim();
  const { lines, run } = await followRun(server, first);
  assert.equal(run.status, 'succeeded');
  assert.equal(lines.at(-1), 'kiln: kept 2 of 2 artifacts (7 bytes)');

  const listed = JSON.parse((await kiln(server, ['artifacts', first, '--json'])).stdout).artifacts;
  assert.deepEqual(listed.map((a: { path: string; size: number; mode: number }) => [a.path, a.size, a.mode]), [['a.txt', 4, 0o644], ['out/deep/b.bin', 3, 0o750]]);

  const dir = tempDir(t);
  const downloaded = await kiln(server, ['artifacts', first.slice(0, 8), '--download', dir]);
  assert.equal(downloaded.code, 0, downloaded.stderr);
  assert.equal(readFileSync(path.join(dir, 'out/deep/b.bin'), 'utf8'), 'two');
  assert.equal(statSync(path.join(dir, 'out/deep/b.bin')).mode & 0o777, 0o750);
  assert.equal(readFileSync(path.join(dir, 'a.txt'), 'utf8'), 'one\n');

  // A second run with the same files adds no blob: the store is content-addressed.
  const second = (await kiln(server, ['execute', 'build'])).stdout.trim();
  await followRun(server, second);
  const blobs = path.join(server.dataDir, 'artifacts');
  const stored = readdirSync(blobs).filter((d) => d !== 'tmp').flatMap((d) => readdirSync(path.join(blobs, d)));
  assert.equal(stored.length, 2);
});

test('--artifacts globs choose the files; a failed run keeps none unless --artifacts-on-failure', async (t) => {
  const server = await startServer(t);
  await startWorker(t, server, ['--platform', 'testos', '--kill-grace', '200ms']);
  const make = 'mkdir -p dist; echo a > dist/app.tar; echo b > dist/notes.md; echo c > log.txt';
  assert.equal((await kiln(server, ['schedule', 'globbed', '--command', make, '--artifacts', 'dist/*.tar', '--artifacts', 'log.*', ...never])).code, 0);
  const globbed = (await kiln(server, ['execute', 'globbed'])).stdout.trim();
  await followRun(server, globbed);
  assert.equal((await kiln(server, ['artifacts', globbed])).stdout.split('\n').slice(1).filter(Boolean).map((l) => l.split(/\s+/)[0]).join(' '), 'dist/app.tar log.txt');

  assert.equal((await kiln(server, ['schedule', 'killed', '--command', `${make}; kill -KILL $$`, ...never])).code, 0);
  assert.equal((await kiln(server, ['schedule', 'kept', '--command', `${make}; kill -KILL $$`, '--artifacts-on-failure', ...never])).code, 0);
  const killed = (await kiln(server, ['execute', 'killed'])).stdout.trim();
  const kept = (await kiln(server, ['execute', 'kept'])).stdout.trim();
  assert.equal((await followRun(server, killed)).run.resultText, 'signalled SIGKILL');
  assert.equal((await followRun(server, kept)).run.resultText, 'signalled SIGKILL');
  assert.equal(JSON.parse((await kiln(server, ['artifacts', killed, '--json'])).stdout).artifacts.length, 0);
  assert.equal(JSON.parse((await kiln(server, ['artifacts', kept, '--json'])).stdout).artifacts.length, 3);
});
