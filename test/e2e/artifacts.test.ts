/** Artifacts with real processes: exactly the right files, verified downloads, one blob per content. */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { followRun, KILN_BIN, kiln, startProxy, startServer, startWorker, tempDir } from '../helpers/processes.js';
import { skipUnless, whyMissing } from '../helpers/requirements.js';

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

test('per-file and per-run limits: files over them are skipped, said in the console and recorded on the run', async (t) => {
  const server = await startServer(t, { args: ['--max-artifact-file', '1kb', '--max-artifacts-per-run', '3kb'] });
  await startWorker(t, server, ['--platform', 'testos']);
  // big.bin (2000 B) is over the per-file limit; a, b and c (900 B each) fit; d would make 3600 > 3072.
  const script = 'head -c 2000 /dev/zero > big.bin; for f in a b c d; do head -c 900 /dev/zero > $f.txt; done';
  assert.equal((await kiln(server, ['schedule', 'limited', '--command', script, ...never])).code, 0);
  const runId = (await kiln(server, ['execute', 'limited'])).stdout.trim();
  const { lines, run } = await followRun(server, runId);
  assert.equal(run.status, 'succeeded', 'skipped artifacts do not fail the run');
  assert.deepEqual(lines.filter((l) => l.startsWith('kiln:')), [
    'kiln: artifact big.bin not kept: 2000 bytes is over the per-file limit of 1024 bytes',
    "kiln: artifact d.txt not kept: it would take the run's artifacts to 3600 bytes, over the per-run limit of 3072 bytes",
    'kiln: kept 3 of 5 artifacts (2700 bytes)',
  ]);
  const listed = JSON.parse((await kiln(server, ['artifacts', runId, '--json'])).stdout).artifacts;
  assert.deepEqual(listed.map((a: { path: string }) => a.path), ['a.txt', 'b.txt', 'c.txt']);
  const shown = JSON.parse((await kiln(server, ['show', runId, '--json'])).stdout);
  const skipped = shown.events.find((e: { kind: string }) => e.kind === 'artifacts-skipped');
  assert.deepEqual(skipped.detail.files.map((f: { path: string; size: number }) => [f.path, f.size]), [['big.bin', 2000], ['d.txt', 900]]);
  assert.match((await kiln(server, ['show', runId])).stdout, /artifacts-skipped .*big\.bin.*per-file limit/);
});

test('downloads of large files show progress on a terminal, and only there', async (t) => {
  const server = await startServer(t);
  await startWorker(t, server, ['--platform', 'testos']);
  assert.equal((await kiln(server, ['schedule', 'large', '--command', 'head -c 3000000 /dev/urandom > large.bin; echo small > small.txt', ...never])).code, 0);
  const runId = (await kiln(server, ['execute', 'large'])).stdout.trim();
  await followRun(server, runId);
  const piped = tempDir(t);
  const plain = await kiln(server, ['artifacts', runId, '--download', piped]);
  assert.equal(plain.code, 0, plain.stderr);
  assert.doesNotMatch(plain.stderr, /%/, 'no progress meter into a pipe');

  // `script` gives the CLI a pseudo-terminal, as a user's shell would.
  if (skipUnless(t, whyMissing('script'))) return;
  const onTerminal = tempDir(t);
  const command = [process.execPath, KILN_BIN, '--server', server.url, '--token', server.adminToken, 'artifacts', runId, '--download', onTerminal]
    .map((word) => `'${word}'`).join(' ');
  const shown = await runToEnd('script', ['-qec', command, '/dev/null']);
  assert.equal(shown.code, 0, shown.output);
  assert.match(shown.output, /large\.bin\s+100% 2\.9MB\/2\.9MB/);
  assert.doesNotMatch(shown.output, /small\.txt\s+\d+%/, 'small files need no meter');
  assert.equal(statSync(path.join(onTerminal, 'large.bin')).size, 3_000_000);
});

test('retention keeps the newest runs per job, kiln gc --dry-run says what would go, and blobs go once unreferenced', async (t) => {
  const dataDir = tempDir(t);
  const config = path.join(dataDir, 'kiln.yaml');
  writeFileSync(config, 'artifacts:\n  keep_runs: 2\n  blob_grace: 0s\n');
  const server = await startServer(t, { dataDir, args: ['--config', config] });
  await startWorker(t, server, ['--platform', 'testos']);
  // Each run keeps shared.txt (same content every time) and its own unique.txt.
  assert.equal((await kiln(server, ['schedule', 'nightly', '--command', 'echo same > shared.txt; echo $KILN_RUN > unique.txt', ...never])).code, 0);
  const runs: string[] = [];
  for (let i = 0; i < 4; i += 1) {
    runs.push((await kiln(server, ['execute', 'nightly'])).stdout.trim());
    await followRun(server, runs.at(-1)!);
  }
  const blobs = () => readdirSync(path.join(dataDir, 'artifacts')).filter((d) => d !== 'tmp').flatMap((d) => readdirSync(path.join(dataDir, 'artifacts', d)));
  assert.equal(blobs().length, 5, 'one shared blob and four unique ones');

  const dry = await kiln(server, ['gc', '--dry-run']);
  assert.equal(dry.code, 0, dry.stderr);
  assert.match(dry.stdout, /keeping the artifacts of the newest 2 runs of each job/);
  assert.match(dry.stdout, /would forget the artifacts of 2 runs \(4 files/);
  for (const old of runs.slice(0, 2)) assert.match(dry.stdout, new RegExp(old));
  assert.match(dry.stdout, /would delete 2 unreferenced blobs/, 'the shared blob stays: newer runs still hold it');
  assert.equal(blobs().length, 5, 'a dry run deletes nothing');
  assert.equal(JSON.parse((await kiln(server, ['artifacts', runs[0]!, '--json'])).stdout).artifacts.length, 2);

  const real = await kiln(server, ['gc', '--json']);
  const report = JSON.parse(real.stdout);
  assert.deepEqual(report.runs.map((r: { runId: string }) => r.runId), runs.slice(0, 2));
  assert.equal(report.blobs.length, 2);
  assert.equal(blobs().length, 3);
  assert.equal(JSON.parse((await kiln(server, ['artifacts', runs[0]!, '--json'])).stdout).artifacts.length, 0);
  const keptDir = tempDir(t);
  const download = await kiln(server, ['artifacts', runs[3]!, '--download', keptDir]);
  assert.equal(download.code, 0, download.stderr);
  assert.equal(readFileSync(path.join(keptDir, 'unique.txt'), 'utf8'), `${runs[3]}\n`);
  assert.equal(readFileSync(path.join(keptDir, 'shared.txt'), 'utf8'), 'same\n');
  assert.match((await kiln(server, ['gc', '--dry-run'])).stdout, /would forget the artifacts of 0 runs/);
  assert.match((await kiln(server, ['info'])).stdout, /artifacts: kept newest 2 runs per job/);

  // A one-off policy: keep only the newest run.
  assert.match((await kiln(server, ['gc', '--keep-runs', '1'])).stdout, /forget the artifacts of 1 runs/);
  assert.equal((await kiln(server, ['gc', '--keep-runs', 'many'])).code, 2);
});

/** Runs a command to its end, collecting stdout and stderr together. */
function runToEnd(command: string, args: string[]): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, output }));
  });
}

test('an upload cut mid-transfer is retried by the worker: the artifact arrives whole, nothing partial is kept', async (t) => {
  const server = await startServer(t);
  const proxy = await startProxy(t, Number(new URL(server.url).port));
  const worker = await startWorker(t, { ...server, url: `http://127.0.0.1:${proxy.port}` }, ['--platform', 'testos']);
  const script = 'head -c 300000000 /dev/urandom > big.bin; sha256sum big.bin';
  assert.equal((await kiln(server, ['schedule', 'cut-upload', '--command', script, ...never])).code, 0);
  const runId = (await kiln(server, ['execute', 'cut-upload'])).stdout.trim();
  await worker.waitFor(/"attempt":1.*uploading an artifact/);
  proxy.cut();
  await worker.waitFor(/"attempt":1.*artifact upload failed; retrying/);
  proxy.restore();
  const { lines, run } = await followRun(server, runId);
  assert.equal(run.status, 'succeeded', lines.join('\n'));
  assert.equal(lines.at(-1), 'kiln: kept 1 of 1 artifacts (300000000 bytes)');
  const [artifact] = JSON.parse((await kiln(server, ['artifacts', runId, '--json'])).stdout).artifacts;
  assert.equal(artifact.sha256, lines.find((l) => l.endsWith('  big.bin'))!.split(' ')[0], 'the stored content is the file the job made');
  assert.deepEqual(readdirSync(path.join(server.dataDir, 'artifacts', 'tmp')), [], 'the cut upload left no temp file');
  assert.ok(worker.stderr.some((l) => /"attempt":2.*uploading an artifact/.test(l)), 'a second attempt sent it');
});
