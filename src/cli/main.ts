/**
 * `kiln`: one command line for the server, workers and the client. A worker (a pool instance, the
 * worker of `kiln up`) starts on its own small entry, without commander and the client commands:
 * less to load at every cold start and less memory held while it idles. Each side loads only its
 * own modules (the worker's are not loaded for `kiln --version` or a client command).
 */
const worker = process.argv[2] === 'worker' ? (await import('./worker-args.js')).readWorkerArgs(process.argv.slice(3)) : undefined;
if (worker) await (await import('./worker-main.js')).workerMain(worker);
else {
  const [{ runCli }, { ALL_COMMANDS }] = await Promise.all([import('./program.js'), import('./all-commands.js')]);
  await runCli(process.argv, ALL_COMMANDS);
}
