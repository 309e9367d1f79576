#!/usr/bin/env node
// Runs the compiled CLI in dist/ (built by `npm run build`, which `npm ci` runs through `prepare`).
// KILN_DEBUG=1 turns on source maps, so stack traces point at the .ts lines.
if (process.env.KILN_DEBUG) process.setSourceMapsEnabled(true);
try {
  await import('../dist/kiln.js');
} catch (err) {
  if (err?.code === 'ERR_MODULE_NOT_FOUND' && String(err.message).includes('/dist/kiln.js')) {
    process.stderr.write('kiln: not built: run `npm run build` (or `npm ci`) in the checkout first\n');
    process.exit(2);
  }
  throw err;
}
