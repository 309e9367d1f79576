#!/usr/bin/env node
// Runs the compiled CLI in dist/ (built by `npm run build`, which `npm ci` runs through `prepare`).
// KILN_DEBUG=1 turns on source maps, so stack traces point at the .ts lines.
if (process.env.KILN_DEBUG) process.setSourceMapsEnabled(true);
// A server's start allocates mostly what it keeps (modules, routes, schemas), and V8 reads the many
// survivors as a reason to grow its young generation from 2 to 8 MB, which an idle server then holds
// (~5 MB of its RSS, BENCHMARKS.md). The server keeps it at its first size for its life: its
// per-request garbage is small and short-lived, so the extra scavenges are cheap. V8 reads the flag
// at each growth, so it is set here, before anything loads. Workers and client commands are left as they are.
if (process.argv[2] === 'server' || process.argv[2] === 'up') {
  const { setFlagsFromString } = await import('node:v8');
  setFlagsFromString('--semi-space-growth-factor=1');
}
// A worker runs its own bundle (src/cli/worker-entry.ts), a server its own (src/cli/server-entry.ts);
// everything else the CLI's.
const BUNDLES = { worker: '../dist/worker.js', server: '../dist/server.js', up: '../dist/server.js' };
const entry = Object.hasOwn(BUNDLES, process.argv[2] ?? '') ? BUNDLES[process.argv[2]] : '../dist/kiln.js';
try {
  await import(entry);
} catch (err) {
  if (err?.code === 'ERR_MODULE_NOT_FOUND' && String(err.message).includes(entry.slice(2))) {
    process.stderr.write('kiln: not built: run `npm run build` (or `npm ci`) in the checkout first\n');
    process.exit(2);
  }
  throw err;
}
