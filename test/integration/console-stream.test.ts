/** Observing consoles: replay then live with no gap or duplicate, and slow observers that never slow the run. */
import assert from 'node:assert/strict';
import http from 'node:http';
import { test } from 'node:test';
import { consoleEvents, runOnFakeWorker } from '../helpers/in-process.js';

function batch(from: number, count: number, width = 20) {
  return Array.from({ length: count }, (_, i) => ({ seq: from + i, ts: Date.now(), text: `line ${String(from + i).padStart(width, '0')}` }));
}

test('an observer joining mid-run gets every line once, in order, then the end', async (t) => {
  const { server, worker, runId } = await runOnFakeWorker(t);
  for (let i = 0; i < 10; i += 1) worker.send({ v: 1, type: 'run.output', runId, lines: batch(i * 100, 100) });
  const observing = consoleEvents(server, runId);
  for (let i = 10; i < 20; i += 1) worker.send({ v: 1, type: 'run.output', runId, lines: batch(i * 100, 100) });
  worker.send({ v: 1, type: 'run.finished', runId, result: { kind: 'exited', code: 1 } });
  const events = await observing;
  const seqs = events.filter((e) => e.type === 'line').map((e) => e.seq);
  assert.deepEqual(seqs, Array.from({ length: 2000 }, (_, i) => i));
  assert.equal(events.at(-1).type, 'end');
  assert.equal(events.at(-1).run.resultText, 'exited 1');
});

test('a slow observer never slows the run and still gets every line, from the store', async (t) => {
  const { server, worker, runId } = await runOnFakeWorker(t);
  worker.send({ v: 1, type: 'run.output', runId, lines: batch(0, 1) });

  // An observer that stops reading: its socket fills up and the server must not wait for it.
  const url = new URL(`${server.url}/api/runs/${runId}/console?follow=true`);
  const response = await new Promise<http.IncomingMessage>((resolve) =>
    http.get(url, { headers: { authorization: `Bearer ${server.tokens.admin}` } }, resolve),
  );
  response.pause();
  t.after(() => response.destroy());

  const total = 100_000;
  for (let from = 1; from < total; from += 5000) worker.send({ v: 1, type: 'run.output', runId, lines: batch(from, Math.min(5000, total - from), 200) });
  worker.send({ v: 1, type: 'run.finished', runId, result: { kind: 'exited', code: 0 } });

  // The run ends while that observer is stalled: its end does not wait for the observer.
  const followed = await consoleEvents(server, runId);
  assert.equal(followed.filter((e) => e.type === 'line').length, total, 'a reading observer gets every line');
  assert.equal(followed.at(-1).run.status, 'succeeded');
  const stored = await consoleEvents(server, runId, false);
  assert.equal(stored.filter((e) => e.type === 'line').length, total, 'the durable console is complete');

  // Now the slow observer reads: it gets all 20 MB, in order, then the end.
  let text = '';
  response.setEncoding('utf8');
  response.on('data', (chunk: string) => (text += chunk));
  response.resume();
  await new Promise((resolve) => response.on('end', resolve));
  const events = text.split('\n').filter(Boolean).map((l) => JSON.parse(l));
  const seqs = events.filter((e) => e.type === 'line').map((e) => e.seq);
  assert.equal(seqs.length, total);
  assert.ok(seqs.every((seq, i) => seq === i), 'every line once, in order');
  assert.equal(events.at(-1).type, 'end');
});
