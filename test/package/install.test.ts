/**
 * Kiln as a user installs it: `npm pack` the checkout, install the tarball the README's way (unpack
 * it under a prefix and `npm ci --omit=dev` there, so npm-shrinkwrap.json decides every version),
 * then run the installed `kiln`: `--version`, `kiln up` and a job through its CLI.
 *
 * Slow by nature (npm compiles better-sqlite3 when no prebuilt binary can be downloaded, minutes
 * on a busy 2-core machine), so it has its own script, `npm run test:package`, with a longer
 * per-file bound than test:e2e's 180 s (Node 20 stops a whole file at --test-timeout).
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, symlinkSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { freePort, kiln, spawnCommand, tempDir } from '../helpers/processes.js';
import { needs } from '../helpers/requirements.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
/** npm pack builds dist/ first (prepare); npm ci may compile better-sqlite3 from source. */
const PACK_MS = 5 * 60_000;
const INSTALL_MS = 12 * 60_000;

interface Packed {
  filename: string;
  files: { path: string }[];
}

interface LockEntry {
  version?: string;
  dev?: boolean;
  optional?: boolean;
}

/** Runs a program to its end; rejects with its output when it fails or overruns `timeout`. */
function run(file: string, args: string[], options: { cwd: string; env?: NodeJS.ProcessEnv; timeout: number }): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(file, args, { ...options, killSignal: 'SIGKILL', maxBuffer: 64 * 1024 * 1024 }, (error, stdout, stderr) => {
      if (error) reject(new Error(`${file} ${args.join(' ')} failed (${error.code ?? error.signal}):\n${stdout}\n${stderr}`));
      else resolve(stdout);
    });
  });
}

test(
  'the packed tarball holds only what a user runs; installed from it, kiln runs a job with the shrinkwrapped dependencies and no tsx',
  { skip: needs('npm', 'tar', 'make', 'g++', 'python3'), timeout: PACK_MS + INSTALL_MS + 120_000 },
  async (t) => {
    const work = tempDir(t, 'kiln-package-');
    // The installed kiln runs as a user's would: its own `#!/usr/bin/env node` (this test's node
    // first on PATH), no tsx loader inherited, and nowhere near the checkout's node_modules.
    const env: NodeJS.ProcessEnv = { ...process.env, PATH: `${path.dirname(process.execPath)}:${process.env.PATH}` };
    delete env.NODE_OPTIONS;
    const userEnv = { PATH: env.PATH!, NODE_OPTIONS: '' };

    let started = Date.now();
    const [packed] = JSON.parse(await run('npm', ['pack', '--json', '--pack-destination', work], { cwd: ROOT, env, timeout: PACK_MS })) as Packed[];
    t.diagnostic(`npm pack: ${((Date.now() - started) / 1000).toFixed(1)} s`);
    const files = packed!.files.map((f) => f.path);
    for (const kept of ['bin/kiln.mjs', 'dist/kiln.js', 'dist/kiln.js.map', 'dist/worker.js', 'dist/worker.js.map', 'dist/store/sqlite/migrations/0001_init.sql', 'dist/store/postgres/migrations/0001_init.sql', 'npm-shrinkwrap.json', 'README.md', 'docs/errors.md', 'dist/web/index.html', 'dist/web/app.js', 'dist/web/app.css']) {
      assert.ok(files.includes(kept), `the tarball lacks ${kept}`);
    }
    const unwanted = files.filter((f) => /^(test|bench|\.ci|src|node_modules)\/|^dist\/\.tsbuildinfo$|^tsconfig/.test(f));
    assert.deepEqual(unwanted, [], 'the tarball holds files a user does not run');

    // The README's install: unpack under PREFIX, as `npm install -g` lays it out, then `npm ci`.
    const prefix = path.join(work, 'prefix');
    const home = path.join(prefix, 'lib/node_modules/kiln');
    mkdirSync(home, { recursive: true });
    mkdirSync(path.join(prefix, 'bin'));
    await run('tar', ['xzf', path.join(work, packed!.filename), '-C', home, '--strip-components=1'], { cwd: work, timeout: 60_000 });
    started = Date.now();
    // --prefer-offline: the npm cache first (the machine reaches only the registry); JOBS: node-gyp
    // compiles on every core.
    await run('npm', ['ci', '--omit=dev', '--prefer-offline', '--no-audit', '--no-fund'], { cwd: home, env: { ...env, JOBS: 'max' }, timeout: INSTALL_MS });
    t.diagnostic(`npm ci --omit=dev: ${((Date.now() - started) / 1000).toFixed(1)} s`);
    const bin = path.join(prefix, 'bin/kiln');
    symlinkSync('../lib/node_modules/kiln/bin/kiln.mjs', bin);

    // Every dependency at its shrinkwrapped version; nothing that only development needs.
    const lock = JSON.parse(readFileSync(path.join(home, 'npm-shrinkwrap.json'), 'utf8')) as { packages: Record<string, LockEntry> };
    const wrong: string[] = [];
    let checked = 0;
    for (const [location, entry] of Object.entries(lock.packages)) {
      if (location === '') continue;
      const manifest = path.join(home, location, 'package.json');
      if (entry.dev) {
        if (existsSync(manifest)) wrong.push(`${location}: installed, but only development needs it`);
      } else if (existsSync(manifest)) {
        const { version } = JSON.parse(readFileSync(manifest, 'utf8')) as { version: string };
        if (version !== entry.version) wrong.push(`${location}: ${version}, shrinkwrap says ${entry.version}`);
        checked += 1;
      } else if (!entry.optional) {
        wrong.push(`${location}: missing`);
      }
    }
    assert.deepEqual(wrong, []);
    assert.ok(checked > 100, `only ${checked} dependencies checked`);
    for (const devOnly of ['tsx', 'typescript', 'esbuild']) assert.equal(existsSync(path.join(home, 'node_modules', devOnly)), false, `${devOnly} is installed`);

    const cwd = tempDir(t);
    const version = await kiln(undefined, ['--version'], { bin, cwd, env: userEnv });
    assert.equal(version.code, 0, version.stderr);
    assert.equal(version.stdout.trim(), JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')).version);

    const port = await freePort();
    const url = `http://127.0.0.1:${port}`;
    const up = spawnCommand(t, bin, ['up', '--listen', `127.0.0.1:${port}`], { name: 'installed kiln up', env: userEnv, cwd });
    await up.waitFor(/Kiln is up at/);
    await up.waitFor(/connected to the server/);
    // The processes run the installed files, not the checkout's.
    const command = readFileSync(`/proc/${up.pid}/cmdline`, 'utf8').split('\0');
    assert.ok(command.some((arg) => arg.startsWith(prefix)), command.join(' '));

    const cli = (args: string[]) => kiln(undefined, ['--server', url, ...args], { bin, cwd, env: userEnv });
    const scheduled = await cli(['schedule', 'hello', '--command', 'echo "hello from $KILN_PLATFORM"; echo second line; exit 0', '--period', 'never']);
    assert.equal(scheduled.code, 0, scheduled.stderr);
    const executed = await cli(['execute', 'hello']);
    assert.equal(executed.code, 0, executed.stderr);
    const runId = executed.stdout.trim();
    const observed = await cli(['observe', runId]);
    assert.equal(observed.code, 0, observed.stderr);
    assert.match(observed.stdout, new RegExp(`^hello from \\S+\nsecond line\nkiln: run ${runId} succeeded: exited 0\n$`));
    // A failing job through the same install ends failed, with its exit code.
    await cli(['schedule', 'broken', '--command', 'echo about to fail; exit 3', '--period', 'never']);
    const failing = (await cli(['execute', 'broken'])).stdout.trim();
    const failed = await cli(['observe', failing]);
    assert.notEqual(failed.code, 0);
    assert.equal(failed.stdout, `about to fail\nkiln: run ${failing} failed: exited 3\n`);

    // The dashboard is served from the installed files (built at pack time; Preact was bundled, not installed).
    const page = await fetch(`${url}/`);
    assert.equal(page.status, 200);
    assert.match(await page.text(), /\/assets\/app\.js/);
    const script = await fetch(`${url}/assets/app.js`);
    assert.equal(script.status, 200);
    assert.ok((await script.text()).length > 10_000, 'the dashboard\'s script is the built bundle');

    await up.kill('SIGTERM');
    const { code } = await up.exited;
    assert.equal(code, 0, up.stderr.join('\n'));
  },
);
