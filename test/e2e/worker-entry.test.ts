/**
 * `kiln worker` (the compiled package) starts on its own entry: it loads none of commander, zod,
 * pino, ws, the client commands or the server, yet runs jobs and logs as before; a command line its
 * entry does not read (--help, a bad option) still gets the full CLI's answer.
 */
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';
import { api, followRun, kiln, startServer, startWorker, tempDir } from '../helpers/processes.js';

const ROOT = path.resolve(import.meta.dirname, '../..');

/** Module hooks that append every URL the ESM loader resolves, and every CommonJS require, to $KILN_TEST_MODULE_LOG. */
const HOOK = `
import { appendFileSync } from 'node:fs';
import { createRequire, register } from 'node:module';
const Module = createRequire(import.meta.url)('node:module');
const load = Module._load;
Module._load = function (request, ...rest) {
  appendFileSync(process.env.KILN_TEST_MODULE_LOG, 'require:' + request + '\\n');
  return load.call(this, request, ...rest);
};
register('data:text/javascript,' + encodeURIComponent(\`
import { appendFileSync } from 'node:fs';
export async function resolve(specifier, context, next) {
  const found = await next(specifier, context);
  appendFileSync(process.env.KILN_TEST_MODULE_LOG, found.url + '\\\\n');
  return found;
}\`));
`;

/**
 * What a process may not load to count as the worker's own entry: node_modules packages, Kiln's
 * modules (as the bundle's source maps name them), and built-ins only some workers need.
 */
const NOT_IN_A_WORKER = [/\/node_modules\/(zod|commander|pino|croner|fastify|better-sqlite3|yaml|ws)\//, /^require:(ws|pino|commander|zod)$/,
  // TLS for an https:// server only, readline for reading a spool back after a reconnect only.
  /^(require:)?(node:)?(https|tls|readline)$/, /\/src\/server\//, /\/src\/cli\/(program|context|api-client)\.ts$/, /\/src\/cli\/commands\/(jobs|runs|info|artifacts|daemons|worker-tokens)\.ts$/];

/**
 * What the hook saw, with each file of the bundle (dist/*.js) replaced by the sources it was built
 * from (its source map's `sources`, as absolute paths): what a process loaded, module by module.
 */
function loadedModules(seen: string[]): string[] {
  return seen.flatMap((entry) => {
    if (!entry.startsWith('file:') || !/\/dist\/[^/]+\.js$/.test(entry)) return [entry];
    const file = fileURLToPath(entry);
    const map = JSON.parse(readFileSync(`${file}.map`, 'utf8')) as { sources: string[] };
    return map.sources.map((source) => path.resolve(path.dirname(file), source));
  });
}

test('a worker of an http:// server loads no commander, zod, pino, ws, TLS, readline, client command or server module, and runs a job', async (t) => {
  const dir = tempDir(t);
  const hook = path.join(dir, 'hook.mjs');
  const log = path.join(dir, 'modules.log');
  writeFileSync(hook, HOOK);
  writeFileSync(log, '');
  const server = await startServer(t);
  // Passed to the worker alone (the server starts first, without it).
  process.env.NODE_OPTIONS = `--import ${hook}`;
  process.env.KILN_TEST_MODULE_LOG = log;
  let worker;
  try {
    worker = await startWorker(t, server, ['--name', 'lean-1', '--platform', 'lean', '--label', 'size=small']);
  } finally {
    delete process.env.NODE_OPTIONS;
    delete process.env.KILN_TEST_MODULE_LOG;
  }
  await api(server, 'POST', '/api/jobs', { name: 'hello', platform: 'lean', labels: { size: 'small' }, script: 'echo hello from a lean worker\n', period: 'never' });
  const { run } = await api<{ run: { id: string } }>(server, 'POST', '/api/jobs/hello/execute', {});
  const followed = await followRun(server, run.id);
  assert.equal(followed.run.status, 'succeeded', followed.run.resultText ?? '');
  assert.ok(followed.lines.includes('hello from a lean worker'), followed.lines.join('\n'));

  const seen = readFileSync(log, 'utf8').split('\n').filter(Boolean);
  // One file of Kiln's besides bin/: the worker's own bundle (the CLI's chunks resolved one by one
  // ran the loader's path code hot enough for V8's optimizing compiler, ~4 MB).
  const kilnFiles = [...new Set(seen.filter((url) => url.startsWith('file:')).map((url) => path.relative(ROOT, fileURLToPath(url))).filter((file) => /^(bin|dist|src)\//.test(file)))];
  assert.deepEqual(kilnFiles, ['bin/kiln.mjs', 'dist/worker.js']);
  const loaded = loadedModules(seen);
  assert.ok(loaded.some((module) => module.endsWith('/src/worker/agent.ts')), `the hook saw the worker's modules:\n${loaded.join('\n')}`);
  const unwanted = loaded.filter((url) => NOT_IN_A_WORKER.some((pattern) => pattern.test(url)));
  assert.deepEqual(unwanted, [], 'modules a worker should not load');
  // Its log lines are still pino's shape: level, time, pid, the worker's name, msg.
  const connected = JSON.parse(worker.stderr.find((line) => line.includes('connected to the server'))!) as Record<string, unknown>;
  assert.deepEqual(Object.keys(connected).slice(0, 4), ['level', 'time', 'pid', 'worker']);
  assert.equal(connected.level, 30);
  assert.equal(connected.worker, 'lean-1');
});

test('kiln worker --help and a bad option still get the full CLI\'s answers', async () => {
  const help = await kiln(undefined, ['worker', '--help']);
  assert.equal(help.code, 0);
  assert.match(help.stdout, /--drain-timeout <duration>/);
  assert.match(help.stdout, /--ro-bind <src\[:dest\]>/);
  const bad = await kiln(undefined, ['worker', '--no-such-flag']);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /^kiln: unknown option '--no-such-flag' \(see --help\)\n$/);
  // A value the entry reads but the worker refuses: the usage error and its exit code, as before.
  const capacity = await kiln(undefined, ['worker', '--capacity', '0'], { env: { KILN_WORKER_TOKEN: 'x' } });
  assert.equal(capacity.code, 2);
  assert.match(capacity.stderr, /^kiln: bad --capacity '0': give a number from 1 to 256$/m);
});
