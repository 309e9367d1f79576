/** The esbuild plugins of scripts/build.mjs: what they defer is loaded only when used, and then works. */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { pathToFileURL } from 'node:url';
import { build } from 'esbuild';
import { tempDir } from '../helpers/processes.js';

const ROOT = path.resolve(import.meta.dirname, '../..');

test('lazyBuiltins: a CommonJS require() of zlib loads it at the first use, not before, and the module then works', async (t) => {
  const { lazyBuiltins } = await import(pathToFileURL(path.join(ROOT, 'scripts/esbuild-plugins.mjs')).href);
  const dir = tempDir(t);
  // A CommonJS package as fastify or ws is: it requires zlib at its top and uses it later.
  writeFileSync(path.join(dir, 'package.cjs'), `const zlib = require('node:zlib');
module.exports = (text) => zlib.gunzipSync(zlib.gzipSync(Buffer.from(text))).toString();
module.exports.hasConstant = () => 'Z_SYNC_FLUSH' in zlib && Object.keys(zlib).includes('gzipSync');\n`);
  writeFileSync(path.join(dir, 'entry.mjs'), `import roundTrip from './package.cjs';
const loaded = () => process.moduleLoadList.includes('NativeModule zlib');
const before = loaded();
const text = roundTrip('hello');
console.log(JSON.stringify({ before, after: loaded(), text, hasConstant: roundTrip.hasConstant() }));\n`);
  await build({
    entryPoints: [path.join(dir, 'entry.mjs')], outfile: path.join(dir, 'out.mjs'), bundle: true, format: 'esm', platform: 'node',
    banner: { js: "import { createRequire } from 'node:module'; const require = createRequire(import.meta.url);" },
    plugins: [lazyBuiltins(['zlib'])], logLevel: 'silent',
  });
  const result = JSON.parse(execFileSync(process.execPath, [path.join(dir, 'out.mjs')], { encoding: 'utf8' }));
  assert.deepEqual(result, { before: false, after: true, text: 'hello', hasConstant: true });
});

test('builtinsRequired: an ESM import of node:http becomes a require() (its ESM facade loads undici on Node 24), and works as the import did', async (t) => {
  const { builtinsRequired } = await import(pathToFileURL(path.join(ROOT, 'scripts/esbuild-plugins.mjs')).href);
  const dir = tempDir(t);
  writeFileSync(path.join(dir, 'entry.ts'), `import http, { STATUS_CODES } from 'node:http';
import * as namespace from 'http';
console.log(JSON.stringify({ server: typeof http.createServer, status: STATUS_CODES[404], agent: typeof namespace.Agent }));\n`);
  await build({
    entryPoints: [path.join(dir, 'entry.ts')], outfile: path.join(dir, 'out.mjs'), bundle: true, format: 'esm', platform: 'node',
    banner: { js: "import { createRequire } from 'node:module'; const require = createRequire(import.meta.url);" },
    plugins: [builtinsRequired(['http'])], logLevel: 'silent',
  });
  const bundle = readFileSync(path.join(dir, 'out.mjs'), 'utf8');
  assert.doesNotMatch(bundle, /from\s*["'](node:)?http["']/);
  const result = JSON.parse(execFileSync(process.execPath, [path.join(dir, 'out.mjs')], { encoding: 'utf8' }));
  assert.deepEqual(result, { server: 'function', status: 'Not Found', agent: 'function' });
});
