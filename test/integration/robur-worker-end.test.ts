/**
 * A robur worker's Job_finished while the store is away: builder's worker sends its result once and
 * exits, so the server holds it and writes it again, rather than losing the run to the reaper and
 * running it a second time. Real in-process server, the stand-in builder-worker over real TCP.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { StoreUnavailableError } from '../../src/errors.js';
import type { JobStore } from '../../src/store/index.js';
import { inProcessServer, within } from '../helpers/in-process.js';
import { roburClient, roburWorker } from '../helpers/robur-peers.js';

test("a robur run's end the store refuses is held and written again: the run ends as the worker said, with its file and console, once", { timeout: 60_000 }, async (t) => {
  let refusals = 0;
  let refuseEnds = false;
  const wrapStore = (store: JobStore): JobStore => new Proxy(store, {
    get(target, key, receiver) {
      const value = Reflect.get(target, key, receiver) as unknown;
      if (key !== 'endAttempt' || typeof value !== 'function') return value;
      return (...args: unknown[]) => {
        // The first three ends are refused as a store that is away refuses them.
        if (refuseEnds && refusals < 3) {
          refusals += 1;
          return Promise.reject(new StoreUnavailableError('test', 'the store is away'));
        }
        return (value as (...a: unknown[]) => Promise<unknown>).apply(target, args);
      };
    },
  });
  const server = await inProcessServer(t, { wrapStore, robur: { host: '127.0.0.1', port: 0 } });
  const port = Number(server.roburAddress!.split(':').at(-1));
  const job = { name: 'held', script: '#!/bin/sh\necho built\necho artifact > out.txt\n', platform: 'debian-12' };
  assert.deepEqual(await roburClient(port, { type: 'schedule', period: 'never', job }), [{ type: 'success' }]);
  refuseEnds = true;
  // The run's next step, whichever it is: ended (its end written), or lost (left to the reaper, and retried).
  const next = new Promise<string>((resolve) => {
    const offs = [
      server.events.on('run.ended', (e) => done(`ended ${e.run?.id}`)),
      server.events.on('run.lost', (e) => done(`lost ${e.runId}`)),
    ];
    const done = (what: string) => (offs.forEach((off) => off()), resolve(what));
  });
  const worker = roburWorker(port, 'debian-12');
  const { uuid } = await worker.scheduled;
  assert.deepEqual(await worker.done, { sent: { kind: 'exited', code: 0 }, closed: false, lines: ['built'] });
  // The worker has gone; the server writes its end once the store answers again (the fourth try).
  assert.equal(await next, `ended ${uuid}`);
  const store = server.roburClient.store;
  const run = await store.findRun(uuid);
  assert.equal(refusals, 3);
  assert.deepEqual([run.status, run.result, run.attempt], ['succeeded', { kind: 'exited', code: 0 }, 1], 'ended as the worker said, not lost and retried');
  assert.deepEqual((await store.listArtifacts(uuid)).map((a) => [a.path, a.size]), [['out.txt', 9]]);
  assert.deepEqual((await store.readConsole(uuid)).map((l) => l.text), ['built']);
  assert.deepEqual((await store.listQueued()).map((r) => r.job), [], 'nothing queued again');
});

test('a server stopping while it holds a robur run\'s end for the store is not held up: it stops at once, the run left to the reaper', { timeout: 60_000 }, async (t) => {
  let refusing = false;
  let refused = 0;
  let firstRefusal!: () => void;
  const retrying = new Promise<void>((resolve) => (firstRefusal = resolve));
  const wrapStore = (store: JobStore): JobStore => new Proxy(store, {
    get(target, key, receiver) {
      const value = Reflect.get(target, key, receiver) as unknown;
      if (key !== 'endAttempt' || typeof value !== 'function') return value;
      return (...args: unknown[]) => {
        if (!refusing) return (value as (...a: unknown[]) => Promise<unknown>).apply(target, args);
        refused += 1;
        // Twice: the end was held and tried again (the backoff's first wait is 0.1 s), and is waiting for the next try.
        if (refused === 2) firstRefusal();
        return Promise.reject(new StoreUnavailableError('test', 'the store is away'));
      };
    },
  });
  const server = await inProcessServer(t, { wrapStore, robur: { host: '127.0.0.1', port: 0 } });
  const port = Number(server.roburAddress!.split(':').at(-1));
  const job = { name: 'stopping', script: '#!/bin/sh\necho built\n', platform: 'debian-12' };
  assert.deepEqual(await roburClient(port, { type: 'schedule', period: 'never', job }), [{ type: 'success' }]);
  refusing = true;
  const worker = roburWorker(port, 'debian-12');
  await worker.scheduled;
  await worker.done;
  await retrying;
  // Held for up to a minute while the store is away, but not past a stop.
  await within(server.close(), 'the server stops while a robur end is held', 10_000);
});
