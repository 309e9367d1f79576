/**
 * `kiln worker` started as pools and `kiln up` start it: its flags read and the worker run without
 * commander or the client commands' modules (cli/main.ts comes here for `kiln worker ...` when
 * readWorkerArgs can read the rest).
 */
import { runWorker, type WorkerFlags } from './commands/worker.js';
import { reportFailure } from './exit-codes.js';
import { survivePrintErrors } from './output.js';

export async function workerMain(flags: WorkerFlags): Promise<void> {
  // A long-running command: a closed or full stdout or stderr must not end it.
  survivePrintErrors();
  try {
    await runWorker(flags);
  } catch (raw) {
    reportFailure(raw);
  }
}
