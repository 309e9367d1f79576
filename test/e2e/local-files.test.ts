/**
 * What the server and the worker leave on disk is theirs alone (issue 12, item 3): the data dir,
 * the database with its WAL and SHM, artifacts, the worker's spool and work dirs. And no token is
 * on a kiln process's command line in the documented ways of starting one.
 */
import assert from 'node:assert/strict';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { test } from 'node:test';
import { firstLine, followRun, freePort, kiln, spawnKiln, startServer, startWorker, tempDir } from '../helpers/processes.js';

const never = ['--platform', 'testos', '--period', 'never'];
const modeOf = (file: string) => (statSync(file).mode & 0o777).toString(8);

test('a server makes its data dir private (tightening an old 0755 one) and keeps its database, tokens and artifacts 0600', async (t) => {
  const root = tempDir(t);
  const dataDir = path.join(root, 'data');
  mkdirSync(dataDir);
  chmodSync(dataDir, 0o755); // as an earlier Kiln left it
  const server = await startServer(t, { dataDir });
  // Said before it listens, so already printed.
  assert.ok(server.stderr.some((line) => /"was":"0755".*made it private \(0700\)/.test(line)), server.stderr.join('\n'));
  const worker = await startWorker(t, server, ['--platform', 'testos']);
  assert.equal((await kiln(server, ['schedule', 'keep', '--command', 'echo secret > out.txt', '--artifacts', 'out.txt', ...never])).code, 0);
  const runId = (await kiln(server, ['execute', 'keep'])).stdout.trim();
  assert.equal((await followRun(server, runId)).run.status, 'succeeded');

  assert.equal(modeOf(dataDir), '700');
  const files = ['kiln.db', 'kiln.db-wal', 'kiln.db-shm', 'admin.token', 'worker.token', 'server.lock', 'server.owner'];
  for (const file of files) assert.equal(modeOf(path.join(dataDir, file)), '600', file);
  const artifacts = path.join(dataDir, 'artifacts');
  assert.equal(modeOf(artifacts), '700');
  const blobDirs = readdirSync(artifacts).filter((name) => name !== 'tmp');
  assert.equal(blobDirs.length, 1, 'one blob kept');
  assert.equal(modeOf(path.join(artifacts, blobDirs[0]!)), '700');
  for (const blob of readdirSync(path.join(artifacts, blobDirs[0]!))) assert.equal(modeOf(path.join(artifacts, blobDirs[0]!, blob)), '600');
  await worker.kill('SIGTERM');
});

test('a data dir open to others that cannot be made private stops the server with one line (exit 2)', async (t) => {
  // A 0755 dir on a read-only tmpfs: chmod fails (EROFS), as it would on another user's dir.
  const mountPoint = mkdtempSync(path.join(os.tmpdir(), 'kiln-mount-'));
  const mounted = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=1m,mode=0755', 'tmpfs', mountPoint]).status === 0;
  t.after(() => {
    if (mounted) spawnSync('umount', ['--lazy', mountPoint]);
    rmSync(mountPoint, { recursive: true, force: true });
  });
  if (!mounted) return t.skip('needs root to mount a tmpfs (CI runs as root)');
  mkdirSync(path.join(mountPoint, 'data'), { mode: 0o755 });
  chmodSync(path.join(mountPoint, 'data'), 0o755);
  assert.equal(spawnSync('mount', ['-o', 'remount,ro', mountPoint]).status, 0);
  const server = spawnKiln(t, ['server', '--listen', `127.0.0.1:${await freePort()}`, '--data', path.join(mountPoint, 'data')]);
  assert.equal((await server.exited).code, 2);
  assert.deepEqual(server.stderr, [
    `kiln: the data dir ${path.join(mountPoint, 'data')} is mode 0755, owned by uid 0, and cannot be made private (EROFS): it holds the tokens and every job's script, so it must be private (chmod 700 it, or give --data another dir)`,
  ]);
});

test('an existing database readable by everyone (an older Kiln) is made 0600 with its WAL and SHM at start', async (t) => {
  const server = await startServer(t);
  await server.kill('SIGKILL'); // leaves kiln.db-wal and kiln.db-shm behind
  for (const file of ['kiln.db', 'kiln.db-wal', 'kiln.db-shm']) chmodSync(path.join(server.dataDir, file), 0o644);
  await startServer(t, { dataDir: server.dataDir });
  for (const file of ['kiln.db', 'kiln.db-wal', 'kiln.db-shm']) assert.equal(modeOf(path.join(server.dataDir, file)), '600', file);
});

test('a worker spools into a private dir it makes itself (0700, files 0600, unpredictable name), runs jobs in 0700 work dirs, and removes the spool at exit', async (t) => {
  const server = await startServer(t);
  const tmp = tempDir(t); // the worker's TMPDIR, so its spool dir can be found
  const gate = path.join(tempDir(t), 'go');
  const worker = spawnKiln(t, ['worker', '--server', server.url, '--platform', 'testos', '--name', 'spooler'], { KILN_WORKER_TOKEN: server.workerToken, TMPDIR: tmp });
  await worker.waitFor(/connected to the server/);
  const script = `echo "workdir mode $(stat -c %a "$PWD")"; while [ ! -e ${gate} ]; do sleep 0.05; done; echo done`;
  assert.equal((await kiln(server, ['schedule', 'spooled', '--command', script, ...never])).code, 0);
  const runId = (await kiln(server, ['execute', 'spooled'])).stdout.trim();
  await firstLine(server, runId);

  const spools = readdirSync(tmp).filter((name) => name.startsWith('kiln-spool-'));
  assert.equal(spools.length, 1, `one spool dir in ${readdirSync(tmp).join(' ')}`);
  assert.match(spools[0]!, /^kiln-spool-spooler-[A-Za-z0-9]{6}$/, 'not the predictable kiln-spool-NAME');
  const spoolDir = path.join(tmp, spools[0]!);
  const info = statSync(spoolDir);
  assert.equal(modeOf(spoolDir), '700');
  assert.equal(info.uid, process.getuid!(), 'owned by the worker\'s user');
  // The worker spools each line before it sends it: the server has the first, so the file is there.
  const spoolFiles = readdirSync(spoolDir);
  assert.deepEqual(spoolFiles, [`${runId}.1.ndjson`]);
  assert.equal(modeOf(path.join(spoolDir, spoolFiles[0]!)), '600');

  writeFileSync(gate, '');
  const { lines, run } = await followRun(server, runId);
  assert.equal(run.status, 'succeeded');
  assert.ok(lines.includes('workdir mode 700'), lines.join('\n'));
  worker.child.kill('SIGTERM');
  assert.equal((await worker.exited).code, 0);
  assert.equal(existsSync(spoolDir), false, 'the spool dir is removed at exit');
});

test('no kiln process has a token on its command line in the documented ways of starting one', async (t) => {
  // `kiln up`: the server and its local worker.
  const dataDir = tempDir(t);
  const up = spawnKiln(t, ['up', '--data', dataDir, '--listen', `127.0.0.1:${await freePort()}`]);
  await up.waitFor(/^Kiln is up at /);
  // A worker as README, docs/deploy.md and the packaging start one: the token in its environment.
  const server = await startServer(t);
  const worker = await startWorker(t, server, ['--platform', 'testos']);
  const tokens = [server.adminToken, server.workerToken, readFileSync(path.join(dataDir, 'admin.token'), 'utf8').trim(), readFileSync(path.join(dataDir, 'worker.token'), 'utf8').trim()];

  const kilnPids = readdirSync('/proc').filter((name) => /^\d+$/.test(name)).filter((pid) => {
    try {
      return readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('kiln.mjs');
    } catch {
      return false; // gone meanwhile
    }
  });
  const ours = [up.pid, server.pid, worker.pid].map(String);
  for (const pid of ours) assert.ok(kilnPids.includes(pid), `pid ${pid} is seen`);
  assert.ok(kilnPids.length >= 4, "kiln up's local worker is seen too");
  for (const pid of kilnPids) {
    const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ');
    for (const token of tokens) assert.ok(!argv.includes(token), `pid ${pid} shows a token: ${argv}`);
  }
  // --token still works, and says what it costs.
  const exposed = spawnKiln(t, ['worker', '--server', server.url, '--platform', 'testos', '--token', server.workerToken]);
  await exposed.waitFor(/connected to the server/);
  assert.ok(exposed.stderr.some((line) => /--token puts the worker token on the command line, where every local user can read it/.test(line)));
});

test('no example in README, docs or packaging puts a token on a worker\'s command line', () => {
  const repo = path.resolve(import.meta.dirname, '../..');
  const files = (dir: string): string[] => readdirSync(dir, { withFileTypes: true }).flatMap((entry) =>
    entry.isDirectory() ? files(path.join(dir, entry.name)) : [path.join(dir, entry.name)]);
  const examples: [string, string][] = [];
  for (const doc of [path.join(repo, 'README.md'), ...files(path.join(repo, 'docs'))].filter((f) => f.endsWith('.md'))) {
    // What readers copy: the fenced code blocks.
    const blocks = readFileSync(doc, 'utf8').split(/^```.*$/m).filter((_, i) => i % 2 === 1);
    for (const line of blocks.join('\n').split('\n')) examples.push([doc, line]);
  }
  for (const file of files(path.join(repo, 'packaging'))) for (const line of readFileSync(file, 'utf8').split('\n')) examples.push([file, line]);
  const offending = examples.filter(([, line]) => /\bworker\b/.test(line) && /--token(?![-\w])/.test(line)).map(([file, line]) => `${path.relative(repo, file)}: ${line}`);
  assert.deepEqual(offending, []);
});
