/**
 * `kiln worker` in the package: bin/kiln.mjs runs dist/worker.js, this module and the worker's code
 * bundled into one file (scripts/build.mjs). A worker is started on every build host and by every
 * cold pool instance, so its start is kept small: one file read, no module resolution beyond Node's
 * own (the ESM loader resolving a dozen chunks ran path code hot enough for V8's optimizing compiler,
 * ~4 MB of an idle worker, BENCHMARKS.md). What its flag reader cannot read exactly as the full CLI
 * would (--help, a bad option) goes to the full CLI, the package's other bundle.
 */
import { readWorkerArgs } from './worker-args.js';
import { workerMain } from './worker-main.js';

const flags = readWorkerArgs(process.argv.slice(3));
if (flags) await workerMain(flags);
// A URL made at run time: the bundler leaves it alone, so the full CLI is not copied into this file.
else await import(new URL('./kiln.js', import.meta.url).href);
