/**
 * The CLI users run is the compiled one: bin/kiln.mjs runs dist/ (built by `npm ci` through
 * `prepare`), never the TypeScript sources, and KILN_DEBUG=1 maps an internal error's stack back to
 * the .ts lines through the source maps the build writes.
 */
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { test } from 'node:test';
import { freePort, kiln, spawnKiln, tempDir } from '../helpers/processes.js';

const ROOT = path.resolve(import.meta.dirname, '../..');

/**
 * A server that answers every request 200 with JSON of the wrong shape (`{}`): the client fails
 * inside its own code, in a frame every Node version keeps (a body that is not JSON at all fails
 * inside fetch, whose stack on Node 24 holds no frame of Kiln's).
 */
async function garbageServer(t: { after: (fn: () => void) => void }): Promise<string> {
  const server = http.createServer((_req, res) => res.writeHead(200, { 'content-type': 'application/json' }).end('{}'));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.after(() => server.close());
  return `http://127.0.0.1:${(server.address() as { port: number }).port}`;
}

test('bin/kiln.mjs runs the compiled dist/, with its source maps beside it', async () => {
  assert.ok(existsSync(path.join(ROOT, 'dist/kiln.js')), 'npm run build wrote dist/kiln.js');
  assert.ok(existsSync(path.join(ROOT, 'dist/kiln.js.map')), 'and its source map');
  assert.ok(existsSync(path.join(ROOT, 'dist/store/sqlite/migrations/0001_init.sql')), 'and the migrations');
  const { code, stdout } = await kiln(undefined, ['--version']);
  assert.equal(code, 0);
  assert.match(stdout, /^\d+\.\d+\.\d+/);
});

test('KILN_DEBUG=1 prints an internal error\'s stack with .ts file names and lines; without it, one line', async (t) => {
  const url = await garbageServer(t);
  const server = { url, adminToken: 'x' };
  const plain = await kiln(server, ['jobs']);
  assert.notEqual(plain.code, 0);
  assert.equal(plain.stderr.trim().split('\n').length, 1, plain.stderr);
  const debug = await kiln(server, ['jobs'], { env: { KILN_DEBUG: '1' } });
  assert.notEqual(debug.code, 0);
  assert.match(debug.stderr, /src\/cli\/[\w-]+\.ts:\d+:\d+/, `a frame in Kiln's own .ts source:\n${debug.stderr}`);
  assert.doesNotMatch(debug.stderr, /dist\/[\w-]+\.js:\d+/, `no frame left in compiled .js:\n${debug.stderr}`);
});

/** A resolve hook (registered through NODE_OPTIONS) that appends every file URL the process imports, or requires, to `log`. */
function importRecorder(dir: string, log: string): string {
  const hooks = path.join(dir, 'hooks.mjs');
  writeFileSync(hooks, `import { appendFileSync } from 'node:fs';
export async function resolve(specifier, context, next) {
  const resolved = await next(specifier, context);
  if (resolved.url.startsWith('file:')) appendFileSync(${JSON.stringify(log)}, resolved.url + '\\n');
  return resolved;
}\n`);
  const register = path.join(dir, 'register.mjs');
  // What require() loaded (the bundle's CommonJS parts call it for what is left outside) is in its cache at exit.
  writeFileSync(register, `import { appendFileSync } from 'node:fs';
import { createRequire, register } from 'node:module';
register(${JSON.stringify(`file://${hooks}`)});
const required = createRequire(import.meta.url).cache;
process.on('exit', () => appendFileSync(${JSON.stringify(log)}, Object.keys(required).map((file) => 'file://' + file + '\\n').join('')));\n`);
  return register;
}

test('kiln server runs from its own bundle, one file, and from node_modules loads only the native SQLite add-on', async (t) => {
  const dir = tempDir(t);
  const log = path.join(dir, 'imports.log');
  const port = await freePort();
  const server = spawnKiln(t, ['server', '--listen', `127.0.0.1:${port}`, '--data', path.join(dir, 'data')], { NODE_OPTIONS: `--import=${importRecorder(dir, log)}` });
  await server.waitFor(/kiln server listening/);
  await server.kill('SIGTERM');
  const imported = [...new Set(readFileSync(log, 'utf8').split('\n').filter(Boolean))].map((url) => new URL(url).pathname).filter((file) => !file.startsWith(dir));
  const ours = imported.map((file) => (file.includes('/node_modules/') ? file.slice(file.lastIndexOf('/node_modules/') + 1) : path.relative(ROOT, file)));
  // fastify, zod, pino, ws, commander and better-sqlite3's JavaScript are in dist/server.js: resolving
  // ~23 chunks and better-sqlite3's CommonJS files woke V8's optimizing compiler (BENCHMARKS.md).
  const outside = ours.filter((file) => file.startsWith('node_modules/'));
  assert.deepEqual(outside, ['node_modules/better-sqlite3/build/Release/better_sqlite3.node'], `loaded from node_modules:\n${outside.join('\n')}`);
  assert.deepEqual(ours.filter((file) => !file.startsWith('node_modules/')).sort(), ['bin/kiln.mjs', 'dist/server.js'], ours.join('\n'));
});

test('the server\'s bundle, built without keepNames, keeps the name of each of Kiln\'s error classes (errors.ts sets name from the class)', () => {
  const names = [...readFileSync(path.join(ROOT, 'src/errors.ts'), 'utf8').matchAll(/export class (\w+)/g)].map((match) => match[1]!);
  assert.ok(names.length > 5, names.join(' '));
  const bundle = readFileSync(path.join(ROOT, 'dist/server.js'), 'utf8');
  // esbuild renames a top-level name only on a clash, to NAME2, NAME3...: each of Kiln's keeps its own
  // (the client's errors are not in the server's bundle at all).
  const kept = names.filter((name) => new RegExp(`(\\b${name}=class|class ${name}) extends`).test(bundle));
  const renamed = names.filter((name) => new RegExp(`(\\b${name}\\d+=class|class ${name}\\d+) extends`).test(bundle));
  assert.ok(kept.length > 5, kept.join(' '));
  assert.deepEqual(renamed, []);
});

test('the bundle holds zod\'s English messages only, not its other locales', () => {
  const bundle = readdirSync(path.join(ROOT, 'dist')).filter((file) => file.endsWith('.js')).map((file) => readFileSync(path.join(ROOT, 'dist', file), 'utf8')).join('\n');
  assert.match(bundle, /Invalid input/);
  // A message of zod's German locale (zod/v4/locales/de.js): zod 4's `z` namespace re-exports every locale.
  assert.doesNotMatch(bundle, /Ungültige Eingabe/);
});

test('a server keeps V8\'s young generation at its first 2 MiB (its start would grow it to 8 MiB on Node 20)', async (t) => {
  const dir = tempDir(t);
  const report = path.join(dir, 'young.txt');
  const probe = path.join(dir, 'probe.mjs');
  // Read at exit, after the start and a request: the size the young generation grew to, if it did.
  writeFileSync(probe, `import { writeFileSync } from 'node:fs';
import v8 from 'node:v8';
process.on('exit', () => writeFileSync(${JSON.stringify(report)}, String(v8.getHeapSpaceStatistics().find((s) => s.space_name === 'new_space').space_size)));\n`);
  const port = await freePort();
  const server = spawnKiln(t, ['server', '--listen', `127.0.0.1:${port}`, '--data', path.join(dir, 'data')], { NODE_OPTIONS: `--import=${probe}` });
  await server.waitFor(/kiln server listening/);
  assert.equal((await fetch(`http://127.0.0.1:${port}/healthz`)).status, 200);
  await server.kill('SIGTERM');
  const young = Number(readFileSync(report, 'utf8'));
  assert.ok(young > 0 && young <= 2 * 1024 * 1024, `the server's young generation: ${young} bytes`);
});

test('a server without TLS, pools or uploads never loads Node\'s http2, https, tls, zlib or readline (each costs idle memory)', async (t) => {
  const dir = tempDir(t);
  const report = path.join(dir, 'builtins.txt');
  const probe = path.join(dir, 'probe.mjs');
  // Node's own modules, as loaded by the end of the server's life (after a request).
  writeFileSync(probe, `import { writeFileSync } from 'node:fs';
process.on('exit', () => writeFileSync(${JSON.stringify(report)}, process.moduleLoadList.filter((m) => m.startsWith('NativeModule ')).map((m) => m.slice(13)).join('\\n')));\n`);
  const port = await freePort();
  const server = spawnKiln(t, ['server', '--listen', `127.0.0.1:${port}`, '--data', path.join(dir, 'data')], { NODE_OPTIONS: `--import=${probe}` });
  await server.waitFor(/kiln server listening/);
  assert.equal((await fetch(`http://127.0.0.1:${port}/healthz`)).status, 200);
  await server.kill('SIGTERM');
  const loaded = readFileSync(report, 'utf8').split('\n');
  assert.ok(loaded.includes('http') && loaded.includes('crypto'), loaded.join(' '));
  // fastify requires http2 and https at load, ws https, tls and zlib: scripts/build.mjs gives them stand-ins.
  assert.deepEqual(loaded.filter((name) => ['http2', 'https', 'tls', 'zlib', 'readline'].includes(name)), []);
});
