/**
 * The CLI users run is the compiled one: bin/kiln.mjs runs dist/ (built by `npm ci` through
 * `prepare`), never the TypeScript sources, and KILN_DEBUG=1 maps an internal error's stack back to
 * the .ts lines through the source maps the build writes.
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { test } from 'node:test';
import { kiln } from '../helpers/processes.js';

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
  assert.ok(existsSync(path.join(ROOT, 'dist/cli/main.js')), 'npm run build wrote dist/cli/main.js');
  assert.ok(existsSync(path.join(ROOT, 'dist/cli/main.js.map')), 'and its source map');
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
  assert.doesNotMatch(debug.stderr, /dist\/cli\/[\w-]+\.js:\d+/, `no frame left in compiled .js:\n${debug.stderr}`);
});
