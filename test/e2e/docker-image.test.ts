/**
 * packaging/docker/Dockerfile built as CI can build it, with no registry: the base is made locally
 * (the host's node and tools), Kiln is this checkout's npm tarball installed on the host into the
 * context's kiln-prefix/ (no npm registry inside a build here). The image then runs as a worker
 * against a real server on the host and takes a job, as docs/deploy.md tells operators to run it,
 * and as a docker pool's image. Most of its time is disk: the installed package is ~146 MB in
 * ~14,000 files, sent as the build context and written into a layer (~3.5 min on a 2-core machine
 * at load 15; its diagnostics print each phase's time).
 */
import assert from 'node:assert/strict';
import { execFile, spawn, spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import path from 'node:path';
import { test, type TestContext } from 'node:test';
import { promisify } from 'node:util';
import { hostPlatform } from '../../src/host-info.js';
import { containersLabelled, nodeBaseImage, removeContainers, removeImagesLabelled } from '../helpers/docker-image.js';
import { followRun, kiln, startServer, tempDir } from '../helpers/processes.js';
import { needs } from '../helpers/requirements.js';

const ROOT = path.resolve(import.meta.dirname, '../..');
const run = promisify(execFile);
/** Bounds for the slow steps (a loaded 2-core machine: the build alone took ~2 min there). */
const STEP_MS = 300_000;
const CONTAINER_MS = 120_000;

/** `npm pack` of this checkout (built already: `npm test` builds first) into `dir`; the tarball's path. */
async function packInto(dir: string): Promise<string> {
  assert.ok(existsSync(path.join(ROOT, 'dist/kiln.js')), 'dist/ is missing: run `npm run build` first');
  const { stdout } = await run('npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', dir], { cwd: ROOT, timeout: STEP_MS });
  return path.join(dir, (JSON.parse(stdout) as { filename: string }[])[0]!.filename);
}

/**
 * Installs the tarball into `prefix` in npm's global layout the way the README says, so the
 * shrinkwrap's versions are kept: unpacked into lib/node_modules/kiln, `npm ci --omit=dev` there,
 * bin/kiln linked. Install scripts are skipped: the one that matters, better-sqlite3's, would
 * compile its addon (minutes here; no prebuilt download), so the checkout's build of the same
 * version is copied in, and compiled only if the versions differ.
 */
async function installInto(prefix: string, tarball: string): Promise<void> {
  const app = path.join(prefix, 'lib/node_modules/kiln');
  mkdirSync(app, { recursive: true });
  mkdirSync(path.join(prefix, 'bin'), { recursive: true });
  await run('tar', ['-xzf', tarball, '-C', app, '--strip-components=1'], { timeout: STEP_MS });
  await run('npm', ['ci', '--omit=dev', '--ignore-scripts', '--prefer-offline', '--no-audit', '--no-fund'], { cwd: app, timeout: STEP_MS });
  symlinkSync('../lib/node_modules/kiln/bin/kiln.mjs', path.join(prefix, 'bin/kiln'));
  const installed = path.join(app, 'node_modules/better-sqlite3');
  const ours = path.join(ROOT, 'node_modules/better-sqlite3');
  const version = (dir: string) => (JSON.parse(readFileSync(path.join(dir, 'package.json'), 'utf8')) as { version: string }).version;
  if (version(installed) === version(ours)) {
    mkdirSync(path.join(installed, 'build/Release'), { recursive: true });
    copyFileSync(path.join(ours, 'build/Release/better_sqlite3.node'), path.join(installed, 'build/Release/better_sqlite3.node'));
  } else {
    await run('npm', ['rebuild', 'better-sqlite3'], { cwd: app, timeout: STEP_MS });
  }
}

/** `docker build` of packaging/docker/Dockerfile on `base`, from `context`, as `tag`. */
async function buildImage(context: string, base: string, tag: string): Promise<void> {
  const args = ['build', '--force-rm', '-f', path.join(ROOT, 'packaging/docker/Dockerfile'), '--build-arg', `BASE=${base}`, '-t', tag, context];
  await run('docker', args, { timeout: STEP_MS, maxBuffer: 64 * 1024 * 1024 }).catch((err: { stdout?: string; stderr?: string; message: string }) => {
    assert.fail(`docker build failed: ${err.message}\n${err.stdout ?? ''}\n${err.stderr ?? ''}`);
  });
}

const unavailable = needs('docker');

test('the Dockerfile builds from the npm tarball on a local base; its image runs jobs as an unprivileged user, by `docker run` and as a docker pool\'s', { skip: unavailable, timeout: 600_000 }, async (t) => {
  const id = `${process.pid}-${Date.now()}`;
  const base = `kiln-test-base:${id}`;
  const image = `kiln-test-packaged:${id}`;
  const label = `dev.kiln.test-image=${id}`;
  // The base, the image and the layers of a failed build all carry the base's label.
  t.after(() => removeImagesLabelled(label));
  const context = tempDir(t);
  const started = Date.now();
  const phase = (name: string) => t.diagnostic(`${name}: ${((Date.now() - started) / 1000).toFixed(1)} s`);
  const [tarball] = await Promise.all([packInto(context), nodeBaseImage(base, label)]);
  await installInto(path.join(context, 'kiln-prefix'), tarball);
  phase('tarball, base image and prefix ready');
  await buildImage(context, base, image);
  phase('image built');
  // Not needed any more: removed while the jobs run (its 14,000 files take a while on a busy disk).
  const contextRemoved = rm(context, { recursive: true, force: true });

  // The same image as a docker pool's, which gives its own command (`kiln worker ...`).
  const dataDir = tempDir(t);
  const pool = ['pools:', '  - name: packaged', '    provider: docker', '    platform: packaged-pool', '    max: 1', '    options:', `      image: "${image}"`, '      hostconfig: {network_mode: host}', ''];
  writeFileSync(path.join(dataDir, 'kiln.yaml'), pool.join('\n'));
  const server = await startServer(t, { dataDir, args: ['--config', path.join(dataDir, 'kiln.yaml')] });
  const owner = readFileSync(path.join(dataDir, 'pool-owner.id'), 'utf8').trim();
  t.after(() => removeContainers(containersLabelled(`dev.kiln.owner=${owner}`)));
  const script = [
    'echo "user: $(id -un) $(id -u)"',
    // The app is root-owned: a job cannot change the worker that runs it.
    '(echo >> /opt/kiln/lib/node_modules/kiln/package.json) 2>/dev/null && echo "app: writable" || echo "app: read-only"',
    'echo "token in my env: $(env | grep -c KILN_WORKER_TOKEN)"',
    // Every command line in the container (the worker's among them), where the token must not be.
    'for p in /proc/[0-9]*; do echo "argv: $(tr "\\0" " " < "$p/cmdline" 2>/dev/null)"; done',
  ].join('\n');
  const runIds: string[] = [];
  for (const [job, platform] of [['packaged', hostPlatform()], ['pooled', 'packaged-pool']]) {
    assert.equal((await kiln(server, ['schedule', job!, '--command', script, '--platform', platform!, '--period', 'never'])).code, 0);
    runIds.push((await kiln(server, ['execute', job!])).stdout.trim());
  }

  // As docs/deploy.md says: the token from the environment by name, the image's own CMD (--once).
  const name = `kiln-test-packaged-${id}`;
  t.after(() => spawnSync('docker', ['rm', '-f', name], { stdio: 'ignore' }));
  const container = spawn('docker', ['run', '--rm', '--init', '--network', 'host', '--name', name, '-e', 'KILN_SERVER', '-e', 'KILN_WORKER_TOKEN', image], {
    env: { ...process.env, KILN_SERVER: server.url, KILN_WORKER_TOKEN: server.workerToken },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  container.stdout!.on('data', (chunk: Buffer) => (output += chunk.toString()));
  container.stderr!.on('data', (chunk: Buffer) => (output += chunk.toString()));
  t.after(() => container.kill('SIGKILL'));
  const exited = new Promise<number | null>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`the container did not exit within ${CONTAINER_MS / 1000} s:\n${output}`)), CONTAINER_MS);
    container.on('exit', (code) => (clearTimeout(timer), resolve(code)));
  });
  exited.catch(() => undefined); // Awaited below; a timeout must not be an unhandled rejection meanwhile.

  for (const runId of runIds) {
    const { lines, run: result } = await followRun(server, runId);
    assert.equal(result.status, 'succeeded', `${result.resultText}\n${lines.join('\n')}\n${output}`);
    assert.ok(lines.some((line) => /^user: kiln [1-9]\d*$/.test(line)), `jobs run as the unprivileged user kiln\n${lines.join('\n')}`);
    assert.ok(lines.includes('app: read-only'), lines.join('\n'));
    assert.ok(lines.includes('token in my env: 0'), lines.join('\n'));
    const argv = lines.filter((line) => line.startsWith('argv: '));
    assert.ok(argv.some((line) => /^argv: node \/opt\/kiln\/bin\/kiln worker /.test(line)), `the worker runs from the installed package\n${argv.join('\n')}`);
  }
  const { lines } = await followRun(server, runIds[0]!);
  assert.equal(lines.some((line) => line.includes(server.workerToken)), false, 'the token given by `docker run -e` is on no command line');
  assert.equal(await exited, 0, `--once (the image's CMD): the worker exits 0 after its run\n${output}`);
  assert.match(output, /"msg":"run ended"/, 'the worker in the container ran it');
  phase('jobs ran through the image (docker run, and a docker pool)');
  await contextRemoved;
});
