/**
 * `npm run build`: bundles Kiln into dist/ with esbuild, so a start reads a few files instead of ~200
 * modules (BENCHMARKS.md, "Start-up and idle memory"). Three bundles: dist/kiln.js (src/cli/main.ts:
 * the CLI, the server, `kiln up`), where what only some commands need stays behind a dynamic import
 * in a chunk of its own, dist/worker.js (src/cli/worker-entry.ts: `kiln worker`), one file, and
 * dist/server.js (src/cli/server-entry.ts: `kiln server`, `kiln up`), one file.
 * Every output file sits directly in dist/ (src/package-paths.ts relies on it). Source maps point at
 * the .ts lines.
 */
import { cpSync, rmSync } from 'node:fs';
import { build } from 'esbuild';
import { builtinsRequired, lazyBuiltins, lazyRequires } from './esbuild-plugins.mjs';

const ROOT = new URL('../', import.meta.url);
const DIST = new URL('dist/', ROOT);

/**
 * Left in node_modules, loaded from there if ever: the native SQLite binding, optional native
 * add-ons some packages try to require, the large clients only some servers load (pools, uploads)
 * whose own lazy loading a bundle would undo, and what fastify requires only when it is not given
 * compilers (ajv, fast-json-stringify: Kiln gives its own, src/server/server.ts) or for inject()
 * (light-my-request, tests only): ~450 KB of source every server start would otherwise read and
 * keep (1.6 MB of RSS).
 */
const EXTERNAL = [
  'better-sqlite3', 'bufferutil', 'utf-8-validate',
  '@aws-sdk/*', '@kubernetes/client-node', 'dockerode', 'tar-stream', 'form-data', 'yaml', 'pg',
  '@fastify/ajv-compiler', '@fastify/fast-json-stringify-compiler', 'light-my-request',
  // Only `--ca` loads undici (src/cli/api-client.ts).
  'undici',
];

/**
 * Left outside, and loaded only where used: in a bundle without chunks, esbuild hoists a lazily
 * imported module's `import` of an external package to the top of the file, so every start would load
 * them (a single bundle measured 85 MB). Each is reached through a one-line CommonJS module that
 * require()s it, which esbuild runs only when the importing module is first initialised.
 */
const LAZY = ['dockerode', 'tar-stream', 'form-data', '@aws-sdk/client-s3', 'yaml', 'pg'];

/**
 * Node's own modules a server loads only for features it may never use: fastify requires http2 and
 * https at load (for `http2: true` and TLS options Kiln does not pass), ws requires https, tls and
 * zlib (client connections, permessage-deflate). Each costs its source, compiled code and objects:
 * ~1 MB of an idle server's RSS for these, http2 most (BENCHMARKS.md). A
 * CommonJS require() of one of them gets a stand-in that requires the real module at the first
 * property read, so a server that never uses it never loads it. Kiln's own code requires these where
 * it uses them (createRequire at the call), never at the top of a module.
 */
const LAZY_BUILTINS = ['http2', 'https', 'tls', 'zlib'];

/** What every bundle is built with. */
const COMMON = {
  // node:http is required, not imported: on Node 24 its ESM import loads undici (builtinsRequired).
  plugins: [builtinsRequired(['http'])],
  absWorkingDir: new URL('.', ROOT).pathname,
  outdir: 'dist',
  bundle: true,
  format: 'esm',
  platform: 'node',
  target: 'node20',
  external: EXTERNAL,
  // Less source text to read, parse and keep in memory; names kept, so stacks and errors read the same.
  minifyWhitespace: true,
  minifySyntax: true,
  keepNames: true,
  sourcemap: true,
  sourcesContent: false,
  legalComments: 'none',
  // The bundled CommonJS packages call require() for Node's built-ins.
  banner: { js: "import { createRequire as __kilnCreateRequire } from 'node:module'; const require = __kilnCreateRequire(import.meta.url);" },
  logLevel: 'warning',
};

rmSync(DIST, { recursive: true, force: true });
// The CLI, the server and `kiln up`: split at each lazy import.
await build({ ...COMMON, entryPoints: { kiln: 'src/cli/main.ts' }, chunkNames: 'chunk-[hash]', splitting: true });
// `kiln worker`: one file, no chunks (src/cli/worker-entry.ts says why); picomatch, for jobs that
// name artifact globs, stays where a worker loads it only then.
await build({ ...COMMON, entryPoints: { worker: 'src/cli/worker-entry.ts' }, splitting: false, external: [...EXTERNAL, 'picomatch'] });
// `kiln server` and `kiln up`: one file (src/cli/server-entry.ts says why), with better-sqlite3's
// JavaScript inside (its add-on is named by path: src/store/sqlite/open-database.ts). Without
// keepNames: its __name() ran for every function and class at load, hot enough to wake V8's
// optimizing compiler (~5 MB of an idle server); names are still the source's, as nothing is
// minified, but for the rare one esbuild renames on a clash. The packages only some servers load
// are required where they are used, not imported at the top of the file (lazyRequires).
await build({
  ...COMMON, entryPoints: { server: 'src/cli/server-entry.ts' }, splitting: false, keepNames: false,
  external: EXTERNAL.filter((name) => name !== 'better-sqlite3'), plugins: [...COMMON.plugins, lazyRequires(LAZY, new URL('.', ROOT).pathname), lazyBuiltins(LAZY_BUILTINS)],
});
// The dashboard (web/): its script (Preact, bundled: nothing from a CDN) and styles, minified for the
// browser, with the page and its icon beside them in dist/web/, which the server reads from disk.
await build({
  absWorkingDir: new URL('.', ROOT).pathname, entryPoints: { app: 'web/src/main.tsx', 'app-styles': 'web/app.css' }, outdir: 'dist/web', bundle: true, format: 'esm',
  platform: 'browser', target: ['chrome110', 'firefox115', 'safari16'], minify: true, sourcemap: true, sourcesContent: false, legalComments: 'none',
  jsx: 'automatic', jsxImportSource: 'preact', tsconfig: 'web/tsconfig.json', entryNames: '[name]', logLevel: 'warning',
});
cpSync(new URL('dist/web/app-styles.css', ROOT), new URL('dist/web/app.css', ROOT));
rmSync(new URL('dist/web/app-styles.css', ROOT));
rmSync(new URL('dist/web/app-styles.css.map', ROOT), { force: true });
for (const file of ['index.html', 'favicon.svg']) cpSync(new URL(`web/${file}`, ROOT), new URL(`dist/web/${file}`, ROOT));
cpSync(new URL('src/store/sqlite/migrations/', ROOT), new URL('store/sqlite/migrations/', DIST), { recursive: true });
cpSync(new URL('src/store/postgres/migrations/', ROOT), new URL('store/postgres/migrations/', DIST), { recursive: true });
