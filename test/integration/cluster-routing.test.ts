/**
 * Two servers in this process on one PostgreSQL schema, joined by the feed (notes/issue16-plan.md
 * §3.2, §3.4, §3.5): a worker connected to B runs a job executed on A; a console followed on A
 * shows B's worker's lines live, every one once and in order, then the end; a cancel on A reaches
 * the worker on B; the worker's name is refused on A while it is connected to B.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { CloseCode } from '../../src/protocol/index.js';
import type { KilnServer } from '../../src/server/index.js';
import { call, FakeWorker, helloFrame, inProcessServer, within } from '../helpers/in-process.js';
import { freshSchema } from '../helpers/postgres.js';
import { needs } from '../helpers/requirements.js';

const skip = needs('postgres');
const T0 = 1_700_000_000_000;
const job = { name: 'long', platform: 'testos', script: 'for i in $(seq 100); do echo $i; done\n', period: 'never', timeoutMs: 60_000 };

/** A followed console, read as it comes: `until` waits for an event that matches. */
function follow(server: KilnServer, runId: string) {
  const events: any[] = [];
  const waiters: { match: (e: any) => boolean; resolve: () => void }[] = [];
  const done = (async () => {
    const response = await fetch(`${server.url}/api/runs/${runId}/console?follow=true`, { headers: { authorization: `Bearer ${server.tokens.admin}` } });
    assert.equal(response.status, 200);
    const decoder = new TextDecoder();
    let buffered = '';
    for await (const chunk of response.body!) {
      buffered += decoder.decode(chunk as Uint8Array, { stream: true });
      let newline: number;
      while ((newline = buffered.indexOf('\n')) >= 0) {
        const text = buffered.slice(0, newline);
        buffered = buffered.slice(newline + 1);
        if (!text) continue;
        const event = JSON.parse(text);
        events.push(event);
        for (const waiter of [...waiters]) {
          if (waiter.match(event)) {
            waiters.splice(waiters.indexOf(waiter), 1);
            waiter.resolve();
          }
        }
      }
    }
    return events;
  })();
  return {
    events,
    done,
    until: (match: (e: any) => boolean) => (events.some(match) ? Promise.resolve() : new Promise<void>((resolve) => waiters.push({ match, resolve }))),
  };
}

describe('two servers on one PostgreSQL schema', { skip }, () => {
  test('follow on A a run whose worker is on B: every line live and in order; cancel on A reaches the worker on B; its name is taken on A', async (t) => {
    const { url } = await freshSchema(t);
    const a = await inProcessServer(t, { store: url });
    const b = await inProcessServer(t, { store: url });
    assert.notEqual(a.serverId, b.serverId);

    const worker = await FakeWorker.connect(t, b);
    await worker.hello({ name: 'w1' });

    // Executed on A; B's dispatcher hears of it through the feed and gives it to its worker.
    assert.equal((await call(a, 'POST', '/api/jobs', job)).status, 201);
    const runId: string = (await call(a, 'POST', `/api/jobs/${job.name}/execute`, {})).body.run.id;
    const assign = await worker.next<{ type: string; run: { id: string } }>();
    assert.equal(assign.type, 'run.assign');
    assert.equal(assign.run.id, runId);

    const observer = follow(a, runId);
    // Lines in batches, each sent once the observer on A has the one before: they arrive live.
    let seq = 0;
    for (let batch = 0; batch < 10; batch++) {
      const lines = Array.from({ length: 10 }, () => ({ seq, ts: T0 + seq, text: `line ${seq++}` }));
      worker.send({ v: 1, type: 'run.output', runId, lines });
      const last = seq - 1;
      // Bounded below the feed's periodic resync (10 s): they come with the store's ranges, not with that.
      await within(observer.until((e) => e.type === 'line' && e.seq === last), `line ${last} on A`, 8000);
    }

    // Cancelled on A: the worker on B is asked, stops, and prints a last line.
    const cancelled = await call(a, 'POST', `/api/runs/${runId}/cancel`, { by: 'alice' });
    assert.equal(cancelled.body.state, 'requested');
    assert.deepEqual(await worker.next(), { v: 1, type: 'run.cancel', runId, reason: 'cancelled by admin (as alice)' });
    worker.send({ v: 1, type: 'run.output', runId, lines: [{ seq, ts: T0 + seq, text: `line ${seq++}` }] });
    worker.send({ v: 1, type: 'run.finished', runId, result: { kind: 'aborted', reason: 'cancelled by admin (as alice)' }, stoppedBy: 'cancel' });
    assert.deepEqual(await worker.next(), { v: 1, type: 'run.done', runId, applied: true });

    const events = await observer.done;
    const lines = events.filter((e) => e.type === 'line');
    assert.deepEqual(lines.map((e) => e.seq), Array.from({ length: seq }, (_, i) => i), 'every line once, in order');
    assert.deepEqual(events.at(-1).type, 'end');
    assert.equal(events.at(-1).run.status, 'cancelled');

    // The same name on A while it is connected to B: taken.
    const twin = await FakeWorker.connect(t, a);
    twin.send(helloFrame({ name: 'w1' }));
    const refusal = await twin.next<{ type: string; code: string }>();
    assert.deepEqual({ type: refusal.type, code: refusal.code }, { type: 'refused', code: 'KILN_ERR_WORKER_NAME_TAKEN' });
    assert.equal((await twin.closed).code, CloseCode.nameTaken);
    const listed = (await call(a, 'GET', '/api/workers')).body.workers;
    assert.equal(listed.find((w: { name: string }) => w.name === 'w1')?.server, b.serverId, 'A lists the worker on B');

    // Its connection on B closes: B records it gone (the close names the connection that claimed the name).
    worker.socket.close();
    await worker.closed;
    for (;;) {
      const row = (await call(a, 'GET', '/api/workers')).body.workers.find((w: { name: string }) => w.name === 'w1');
      if (row.state === 'disconnected') break;
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    // And the name is free for A now.
    const back = await FakeWorker.connect(t, a);
    await back.hello({ name: 'w1' });
  });

  test('a token revoked on A cuts its worker connected to B; a name given its own token on A cuts the shared-token worker under it on B', async (t) => {
    const { url } = await freshSchema(t);
    const a = await inProcessServer(t, { store: url });
    const b = await inProcessServer(t, { store: url });
    const created = await call(a, 'POST', '/api/worker-tokens', { name: 'wt' });
    assert.equal(created.status, 201);
    const owned = await FakeWorker.connect(t, b, created.body.token);
    await owned.hello({ name: 'wt' });
    const shared = await FakeWorker.connect(t, b);
    await shared.hello({ name: 'wc' });

    assert.equal((await call(a, 'DELETE', '/api/worker-tokens/wt')).status, 200);
    const revoked = await within(owned.next<{ type: string; code: string }>(), 'the revoked worker on B is told', 5000);
    assert.deepEqual({ type: revoked.type, code: revoked.code }, { type: 'refused', code: 'KILN_ERR_UNAUTHORIZED' });
    assert.equal((await owned.closed).code, CloseCode.revoked);

    assert.equal((await call(a, 'POST', '/api/worker-tokens', { name: 'wc' })).status, 201);
    const taken = await within(shared.next<{ type: string; code: string }>(), 'the shared-token worker on B is told', 5000);
    assert.deepEqual({ type: taken.type, code: taken.code }, { type: 'refused', code: 'KILN_ERR_WORKER_IDENTITY' });
    assert.equal((await shared.closed).code, CloseCode.identity);
  });
});
