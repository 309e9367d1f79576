/**
 * What the dashboard reads, over real HTTP on an in-process server: the farm's events as SSE, a
 * run's console as SSE (the same events as NDJSON, framed for EventSource), the queues with why
 * each run waits, the page itself with its headers.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { test } from 'node:test';
import { createParser } from 'eventsource-parser';
import type { KilnServer } from '../../src/server/index.js';
import { call, consoleEvents, FakeWorker, inProcessServer, runOnFakeWorker } from '../helpers/in-process.js';

/** Reads an SSE stream's events (JSON data) one by one until the caller stops. */
async function* sse(server: KilnServer, path: string, signal: AbortSignal): AsyncGenerator<Record<string, any>> {
  const response = await fetch(server.url + path, { headers: { authorization: `Bearer ${server.tokens.admin}`, accept: 'text/event-stream' }, signal });
  assert.equal(response.status, 200);
  assert.match(response.headers.get('content-type') ?? '', /^text\/event-stream/);
  const queue: Record<string, any>[] = [];
  const parser = createParser({ onEvent: (message) => queue.push(JSON.parse(message.data)) });
  const decoder = new TextDecoder();
  for await (const chunk of response.body as unknown as AsyncIterable<Uint8Array>) {
    parser.feed(decoder.decode(chunk, { stream: true }));
    while (queue.length) yield queue.shift()!;
  }
}

/** The events of `stream` up to and including the first that `until` accepts. */
async function readUntil(stream: AsyncGenerator<Record<string, any>>, until: (event: Record<string, any>) => boolean): Promise<Record<string, any>[]> {
  const seen: Record<string, any>[] = [];
  // next(), not for-await: leaving a for-await loop would close the stream for the next read.
  for (let read = await stream.next(); !read.done; read = await stream.next()) {
    seen.push(read.value);
    if (until(read.value)) return seen;
  }
  throw new Error(`the stream ended before the event waited for: ${JSON.stringify(seen)}`);
}

test('GET /api/events streams the lifecycle\'s events as SSE: hello, then jobs, runs and workers as they move', async (t) => {
  const server = await inProcessServer(t);
  const controller = new AbortController();
  t.after(() => controller.abort());
  const events = sse(server, '/api/events', controller.signal);
  assert.equal((await events.next()).value?.type, 'hello');

  await call(server, 'POST', '/api/jobs', { name: 'build', platform: 'testos', script: 'echo hi\n', period: 'never' });
  const runId: string = (await call(server, 'POST', '/api/jobs/build/execute', {})).body.run.id;
  const queued = await readUntil(events, (e) => e.type === 'run.queued');
  assert.ok(queued.some((e) => e.type === 'job.changed' && e.job === 'build'));
  assert.deepEqual(queued.at(-1)!.runs, [{ id: runId, job: 'build', platform: 'testos' }]);

  const worker = await FakeWorker.connect(t, server);
  await worker.hello();
  const dispatched = await readUntil(events, (e) => e.type === 'run.dispatched');
  assert.ok(dispatched.some((e) => e.type === 'worker.joined' && e.worker === 'fake-1'));
  assert.deepEqual(dispatched.at(-1), { type: 'run.dispatched', runId, job: 'build', platform: 'testos', worker: 'fake-1' });
  await worker.next();
  worker.send({ v: 1, type: 'run.finished', runId, result: { kind: 'exited', code: 0 } });
  assert.deepEqual((await readUntil(events, (e) => e.type === 'run.ended')).at(-1), { type: 'run.ended', runId, from: 'running', status: 'succeeded' });
});

test('a console asked for as text/event-stream is the same events as NDJSON, one per SSE message, ending with the run', async (t) => {
  const { server, worker, runId } = await runOnFakeWorker(t);
  const controller = new AbortController();
  t.after(() => controller.abort());
  worker.send({ v: 1, type: 'run.output', runId, lines: [{ seq: 0, ts: 1, text: 'first' }, { seq: 1, ts: 2, text: 'data: not a field\n\nx' }] });
  const stream = sse(server, `/api/runs/${runId}/console?follow=true`, controller.signal);
  const before = await readUntil(stream, (e) => e.type === 'line' && e.seq === 1);
  assert.deepEqual(before.map((e) => e.text), ['first', 'data: not a field\n\nx'], 'a line that looks like SSE framing stays one line of data');
  worker.send({ v: 1, type: 'run.output', runId, lines: [{ seq: 2, ts: 3, text: 'live' }] });
  worker.send({ v: 1, type: 'run.finished', runId, result: { kind: 'exited', code: 0 } });
  const after = await readUntil(stream, (e) => e.type === 'end');
  assert.deepEqual(after.filter((e) => e.type === 'line').map((e) => e.text), ['live']);
  assert.equal(after.at(-1)!.run.status, 'succeeded');
  // The NDJSON the CLI reads says the same.
  const ndjson = await consoleEvents(server, runId);
  assert.deepEqual(ndjson.filter((e) => e.type === 'line').map((e) => e.text), ['first', 'data: not a field\n\nx', 'live']);
});

test('GET /api/queues: every platform, each waiting run with why it waits; runs filter by worker', async (t) => {
  const { server, runId } = await runOnFakeWorker(t);
  await call(server, 'POST', '/api/jobs', { name: 'second', platform: 'testos', script: 'true\n', period: 'never' });
  await call(server, 'POST', '/api/jobs', { name: 'gpu', platform: 'testos', script: 'true\n', period: 'never', labels: { gpu: 'yes' } });
  await call(server, 'POST', '/api/jobs', { name: 'elsewhere', platform: 'bsd', script: 'true\n', period: 'never' });
  const second = (await call(server, 'POST', '/api/jobs/second/execute', {})).body.run.id;
  const gpu = (await call(server, 'POST', '/api/jobs/gpu/execute', {})).body.run.id;
  const elsewhere = (await call(server, 'POST', '/api/jobs/elsewhere/execute', {})).body.run.id;
  await call(server, 'POST', '/api/platforms/gone/drop', {});

  const { queues } = (await call(server, 'GET', '/api/queues')).body;
  const shown = Object.fromEntries(queues.map((q: any) => [q.platform, q.runs.map((r: any) => [r.run.id, r.waiting.kind])]));
  assert.deepEqual(Object.keys(shown), ['bsd', 'gone', 'testos'], 'every platform the farm knows, by name');
  assert.deepEqual(shown.bsd, [[elsewhere, 'no-worker']]);
  assert.deepEqual(shown.gone, []);
  assert.equal(queues.find((q: any) => q.platform === 'gone').dropped, true);
  // The fake worker (capacity 1) runs the first run: the gpu run (executed last, so first in line)
  // waits for a worker with gpu=yes, the other for the busy worker.
  assert.deepEqual(shown.testos, [[gpu, 'no-worker-with-labels'], [second, 'all-busy']]);
  assert.equal(queues.find((q: any) => q.platform === 'testos').workers, 1);

  const byWorker = (await call(server, 'GET', '/api/runs?worker=fake-1')).body.runs.map((r: any) => r.id);
  assert.deepEqual(byWorker, [runId]);
});

test('GET /api/jobs gives each job its platforms and last run (the dashboard\'s jobs page in one request); never run: null', async (t) => {
  const { server, worker, runId } = await runOnFakeWorker(t);
  await call(server, 'POST', '/api/jobs', { name: 'idle', platform: 'testos', script: 'true\n', period: 'never' });
  await call(server, 'POST', '/api/jobs', { name: 'elsewhere', platform: 'bsd', script: 'true\n', period: 'never' });
  const waiting: string = (await call(server, 'POST', '/api/jobs/elsewhere/execute', {})).body.run.id;
  worker.send({ v: 1, type: 'run.finished', runId, result: { kind: 'exited', code: 3 } });
  // The run's end is committed once its console says so.
  assert.equal((await consoleEvents(server, runId)).at(-1).run.status, 'failed');

  const reply = await call(server, 'GET', '/api/jobs');
  assert.equal(reply.status, 200);
  const byName = new Map((reply.body.jobs as Record<string, any>[]).map((job) => [job.name, job]));
  assert.deepEqual([...byName.keys()], ['build', 'elsewhere', 'idle']);
  for (const name of ['build', 'elsewhere']) {
    assert.deepEqual(byName.get(name)!.lastRun, (await call(server, 'GET', `/api/runs/latest?job=${name}`)).body.run, `${name}: as /api/runs/latest says`);
  }
  assert.equal(byName.get('build')!.lastRun.id, runId);
  assert.equal(byName.get('build')!.lastRun.status, 'failed');
  assert.equal(byName.get('build')!.lastRun.resultText, 'exited 3');
  assert.equal(byName.get('elsewhere')!.lastRun.id, waiting);
  assert.equal(byName.get('elsewhere')!.lastRun.status, 'queued');
  assert.equal(byName.get('idle')!.lastRun, null);
  assert.deepEqual(byName.get('elsewhere')!.platforms, ['bsd']);
  // What it listed before stays (the CLI's `kiln jobs` reads it).
  assert.equal(byName.get('idle')!.scheduleText, (await call(server, 'GET', '/api/jobs/idle')).body.job.scheduleText);
});

test('GET / serves the page with headers that keep it to its own script and this server; assets are plain names only', async (t) => {
  const server = await inProcessServer(t);
  const page = await fetch(server.url + '/');
  assert.equal(page.status, 200);
  assert.match(page.headers.get('content-type') ?? '', /^text\/html/);
  assert.match(page.headers.get('content-security-policy') ?? '', /default-src 'none'; script-src 'self'.*frame-ancestors 'none'/);
  assert.match(await page.text(), /<script type="module" src="\/assets\/app.js">/);
  const script = await fetch(server.url + '/assets/app.js');
  assert.equal(script.status, 200);
  assert.match(script.headers.get('content-type') ?? '', /^text\/javascript/);
  const again = await fetch(server.url + '/assets/app.js', { headers: { 'if-modified-since': script.headers.get('last-modified')! } });
  assert.equal(again.status, 304);
  for (const path of ['/assets/..%2Fkiln.js', '/assets/.hidden.js', '/assets/server.js.txt', '/assets/%2e%2e%2fserver.js', '/assets/index']) {
    const answer = await fetch(server.url + path);
    assert.equal(answer.status, 404, path);
    assert.equal(((await answer.json()) as { error: { code: string } }).error.code, 'KILN_ERR_ROUTE_NOT_FOUND', path);
  }
});

test('API answers are not cached nor sniffed (JSON, refusals, 404s and event streams alike); artifacts download as attachments; the page keeps its own headers', async (t) => {
  const { server, runId } = await runOnFakeWorker(t);
  const admin = { authorization: `Bearer ${server.tokens.admin}` };
  const apiHeaders = (response: Response, what: string) => {
    assert.equal(response.headers.get('cache-control'), 'no-store', what);
    assert.equal(response.headers.get('x-content-type-options'), 'nosniff', what);
    assert.equal(response.headers.get('strict-transport-security'), null, `${what}: no HSTS over plain HTTP`);
  };
  apiHeaders(await fetch(`${server.url}/api/jobs`, { headers: admin }), 'a JSON answer');
  apiHeaders(await fetch(`${server.url}/api/jobs`), 'a 401');
  apiHeaders(await fetch(`${server.url}/api/nothing-here`, { headers: admin }), 'a 404');
  // The matched route decides, not the spelling of the URL.
  apiHeaders(await fetch(`${server.url}/api/jobs?x=/assets/app.js`, { headers: admin }), 'a JSON answer with a query');
  const controller = new AbortController();
  t.after(() => controller.abort());
  const stream = await fetch(`${server.url}/api/events`, { headers: { ...admin, accept: 'text/event-stream' }, signal: controller.signal });
  apiHeaders(stream, 'an event stream');
  controller.abort();
  await stream.body?.cancel().catch(() => {});

  // An artifact: uploaded by the run's worker, downloaded as an attachment named safely.
  const body = '<script>alert(1)</script>';
  const sha256 = createHash('sha256').update(body).digest('hex');
  const upload = await fetch(`${server.url}/api/runs/${runId}/artifacts/site/r%C3%A9sum%C3%A9%20%22x%22.html`, {
    method: 'PUT',
    headers: {
      authorization: `Bearer ${server.tokens.worker}`, 'content-type': 'application/octet-stream', 'x-kiln-worker': 'fake-1',
      'x-kiln-sha256': sha256, 'x-kiln-size': String(Buffer.byteLength(body)), 'x-kiln-mode': '420',
    },
    body,
  });
  assert.equal(upload.status, 201, await upload.clone().text());
  const download = await fetch(`${server.url}/api/runs/${runId}/artifacts/site/r%C3%A9sum%C3%A9%20%22x%22.html`, { headers: admin });
  assert.equal(download.status, 200);
  assert.equal(download.headers.get('content-disposition'), `attachment; filename="r_sum_ _x_.html"; filename*=UTF-8''r%C3%A9sum%C3%A9%20%22x%22.html`);
  assert.equal(download.headers.get('content-type'), 'application/octet-stream');
  apiHeaders(download, 'an artifact');
  assert.equal(await download.text(), body);

  const page = await fetch(`${server.url}/`);
  assert.equal(page.status, 200);
  assert.equal(page.headers.get('cache-control'), 'no-cache', 'the page keeps its own caching');
  await page.body?.cancel();
});
