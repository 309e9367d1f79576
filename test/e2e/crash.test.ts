/**
 * The crash test: 200 short jobs on 2 workers while the server is SIGKILLed at seeded random
 * moments and restarted. Afterwards every run has ended exactly once, every console is complete,
 * in order and without duplicates, and no run was executed twice unless it is recorded as retried.
 */
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { api, followRun, startServer, startWorker, tempDir, type ServerProcess } from '../helpers/processes.js';
import { seededRandom } from '../helpers/seeded-random.js';

const SEED = Number(process.env.KILN_CRASH_SEED ?? 20261122);
const JOBS = 200;
const KILLS = 5;

test(`crash test: ${JOBS} jobs, 2 workers, the server SIGKILLed up to ${KILLS} times (seed ${SEED})`, { timeout: 300_000 }, async (t) => {
  const rand = seededRandom(SEED);
  const dir = tempDir(t);
  const executions = path.join(dir, 'executions');
  writeFileSync(executions, '');
  const serverArgs = ['--reattach-grace', '3s'];
  let server: ServerProcess = await startServer(t, { args: serverArgs });
  const port = Number(new URL(server.url).port);
  await startWorker(t, server, ['--platform', 'testos', '--name', 'w1', '--capacity', '2']);
  await startWorker(t, server, ['--platform', 'testos', '--name', 'w2', '--capacity', '2']);

  const script = [
    `echo "$KILN_RUN $KILN_ATTEMPT" >> ${executions}`,
    'for i in 1 2 3 4 5; do echo "line $i"; sleep 0.01; done',
  ].join('\n');
  const runIds: string[] = [];
  for (let i = 0; i < JOBS; i += 1) {
    const reply = await api<{ run: { id: string } }>(server, 'POST', '/api/jobs', { name: `job-${i}`, platform: 'testos', script, period: 'weekly' });
    runIds.push(reply.run.id);
  }

  // Kill after a random number of runs ended on the current server process (an event, not a timer).
  // Lines arrive in bursts, so kills overshoot; once every run has ended there is nothing left to
  // interrupt (and no further line to wait for), so the kills stop there.
  const killedAfter: number[] = [];
  let endedBefore = 0;
  for (let kill = 0; kill < KILLS; kill += 1) {
    const after = 3 + Math.floor(rand() * 20);
    let ended = 0;
    await new Promise<void>((resolve) => {
      const count = () => {
        ended = server.stderr.filter((line) => /"msg":"run ended"/.test(line)).length;
        const retried = server.stderr.filter((line) => /"msg":"run retried"/.test(line)).length;
        if (ended + retried >= after || endedBefore + ended >= JOBS) return resolve();
        void server.waitFor(/run (ended|retried)/, server.stderr.length).then(count, () => resolve());
      };
      count();
    });
    endedBefore += ended;
    if (endedBefore >= JOBS) break;
    killedAfter.push(ended);
    await server.kill('SIGKILL');
    server = await startServer(t, { dataDir: server.dataDir, port, args: serverArgs });
  }

  const finals = await Promise.all(runIds.map((id) => followRun(server, id)));
  const histories = await Promise.all(runIds.map((id) => api<{ run: { attempt: number; status: string }; events: { kind: string }[] }>(server, 'GET', `/api/runs/${id}/events`)));
  const executed = new Map<string, number>();
  for (const line of readFileSync(executions, 'utf8').split('\n').filter(Boolean)) {
    const [id] = line.split(' ');
    executed.set(id!, (executed.get(id!) ?? 0) + 1);
  }

  const statuses: Record<string, number> = {};
  let retried = 0;
  let requeued = 0;
  runIds.forEach((id, i) => {
    const { lines, run } = finals[i]!;
    const { events, run: shown } = histories[i]!;
    statuses[run.status] = (statuses[run.status] ?? 0) + 1;
    assert.equal(events.filter((e) => e.kind === 'ended').length, 1, `run ${id} ended exactly once`);
    const retries = events.filter((e) => e.kind === 'retried').length;
    assert.equal(shown.attempt, retries + 1, `run ${id}: one attempt per retry`);
    if (retries > 0) retried += 1;
    const runs = executed.get(id) ?? 0;
    assert.ok(runs >= 1 && runs <= shown.attempt, `run ${id} executed ${runs} times in ${shown.attempt} attempt(s)`);
    // The last attempt's console is whole and in order; earlier attempts end at a retry note.
    const lastAttempt = lines.slice(lines.findLastIndex((l) => l.startsWith('kiln: attempt')) + 1);
    assert.deepEqual(lastAttempt, ['line 1', 'line 2', 'line 3', 'line 4', 'line 5'], `console of run ${id}`);
    // A dispatch committed but never sent (the server died in between) is requeued as the same attempt, with a note.
    const notes = lines.filter((l) => /^kiln: attempt \d+ on \S+ never started /.test(l)).length;
    if (notes > 0) requeued += 1;
    if (retries === 0) assert.equal(lines.length - notes, 5, `run ${id}: no duplicate line`);
  });
  assert.deepEqual(statuses, { succeeded: JOBS });
  assert.ok(killedAfter.length >= 1, 'the server was killed at least once while runs were left');
  t.diagnostic(`seed ${SEED}: ${JOBS} runs, ${killedAfter.length} server kills after ${killedAfter.join(', ')} ended runs; outcomes ${JSON.stringify(statuses)}; ${retried} retried; ${requeued} requeued unstarted`);
});
