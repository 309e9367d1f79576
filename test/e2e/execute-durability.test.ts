/**
 * An execute answered 2xx survives a server crash: next to an idle worker the run is queued and
 * claimed in one commit before the answer, and sent after it may or may not have left; either way
 * the restarted server and the worker's hello settle it, and the job runs exactly once.
 */
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { api, followRun, kiln, startServer, startWorker, tempDir, type ServerProcess } from '../helpers/processes.js';

const ROUNDS = 4;

test(`SIGKILL the server right after it answers an execute (${ROUNDS} times): every answered run runs once and succeeds`, { timeout: 300_000 }, async (t) => {
  const dir = tempDir(t);
  const executions = path.join(dir, 'executions');
  writeFileSync(executions, '');
  // A grace longer than the test: a run the worker never got must be settled by its hello, not by waiting.
  const serverArgs = ['--reattach-grace', '1h'];
  let server: ServerProcess = await startServer(t, { args: serverArgs });
  const port = Number(new URL(server.url).port);
  const worker = await startWorker(t, server, ['--platform', 'testos', '--name', 'w1']);
  const added = await kiln(server, ['schedule', 'once', '--command', `echo "$KILN_RUN" >> ${executions}; echo done`, '--platform', 'testos', '--period', 'never', '--retries', '0']);
  assert.equal(added.code, 0, added.stderr);

  const answered: string[] = [];
  for (let round = 0; round < ROUNDS; round += 1) {
    const reply = await api<{ run: { id: string } }>(server, 'POST', '/api/jobs/once/execute', {});
    answered.push(reply.run.id);
    await server.kill('SIGKILL');
    const mark = worker.stderr.length;
    server = await startServer(t, { dataDir: server.dataDir, port, args: serverArgs });
    await worker.waitFor(/connected to the server/, mark);
    const { run, lines } = await followRun(server, reply.run.id);
    assert.equal(run.status, 'succeeded', `round ${round}: ${lines.join('\n')}`);
  }
  const ran = readFileSync(executions, 'utf8').trim().split('\n');
  assert.deepEqual(ran, answered, 'each answered run ran once, in order');
});
