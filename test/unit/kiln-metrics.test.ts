/** The metrics move on the lifecycle's events, the gauges read their sources at scrape time, and the store wrapper times every operation. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { createEventBus } from '../../src/server/events.js';
import { KilnMetrics } from '../../src/server/metrics/kiln-metrics.js';
import type { WorkerRegistry } from '../../src/server/worker-registry.js';
import type { JobStore, Run } from '../../src/store/index.js';
import pino from 'pino';

const T0 = 1_800_000_000_000;

/** The value of one sample line `name{labels} value` in the text (undefined when absent). */
function sample(text: string, series: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

function fixture() {
  let now = T0;
  const events = createEventBus(pino({ level: 'silent' }));
  const queued = [
    { id: 'q1', platform: 'linux', queuedAt: T0 - 30_000 },
    { id: 'q2', platform: 'linux', queuedAt: T0 - 10_000 },
  ];
  const store = {
    listQueued: async () => queued,
    outboxSummary: async () => ({ pending: 4, delivered: 0, failed: 0, oldestPendingAt: null, troubled: [] }),
    findRun: async (id: string) => ({ id, platform: 'bsd' }),
    fails: async () => {
      throw new Error('down');
    },
    name: 'the store',
  } as unknown as JobStore;
  const sessions = [
    { platform: 'linux', running: new Set(['r1']) },
    { platform: 'linux', running: new Set() },
    { platform: 'bsd', running: new Set() },
  ];
  const workers = { list: () => sessions } as unknown as WorkerRegistry;
  const metrics = new KilnMetrics();
  const pools = () => [{ name: 'local', instances: [{ state: 'busy' }, { state: 'starting' }] }] as never;
  metrics.watch({ events, store, workers, pools, now: () => now });
  return { events, metrics, store, queued, sessions, advance: (ms: number) => (now += ms) };
}

test('counters and histograms follow the events; gauges are read at scrape time', async () => {
  const { events, metrics, advance } = fixture();
  const run = { id: 'r1', job: 'j', platform: 'linux', queuedAt: T0 - 2000 } as Run;
  events.publish('run.dispatched', { run, worker: 'w' });
  advance(500);
  events.publish('run.line', { runId: 'r1', lines: [{ seq: 0, ts: T0, text: 'server says' }], source: 'server' });
  events.publish('run.line', { runId: 'r1', lines: [{ seq: 1, ts: T0, text: 'a' }, { seq: 2, ts: T0, text: 'b' }], source: 'worker' });
  events.publish('run.line', { runId: 'r1', lines: [{ seq: 3, ts: T0, text: 'c' }], source: 'worker' });
  events.publish('run.ended', { runId: 'r1', from: 'running', status: 'succeeded', platform: 'linux', run: { ...run, status: 'succeeded' } });
  events.publish('run.ended', { runId: 'r2', from: 'queued', status: 'cancelled', platform: 'linux' });
  // No platform in the event: read from the store.
  events.publish('run.ended', { runId: 'r3', from: 'queued', status: 'cancelled' });
  events.publish('artifact.stored', { runId: 'r1', path: 'a.bin', size: 1000 });
  events.publish('artifact.stored', { runId: 'r1', path: 'b.bin', size: 24 });
  events.publish('delivery.attempted', { runId: 'r1', outcome: 'retrying' });
  events.publish('delivery.attempted', { runId: 'r1', outcome: 'delivered' });
  events.publish('pool.instance.starting', { pool: 'local', instance: 'i1' });
  events.publish('pool.instance.failed', { pool: 'local', instance: 'i1', error: 'no' });
  await new Promise((resolve) => setImmediate(resolve));

  const { body, contentType } = await metrics.render();
  assert.match(contentType, /^text\/plain/);
  assert.equal(sample(body, 'kiln_runs_ended_total{status="succeeded",platform="linux"}'), 1);
  assert.equal(sample(body, 'kiln_runs_ended_total{status="cancelled",platform="linux"}'), 1);
  assert.equal(sample(body, 'kiln_runs_ended_total{status="cancelled",platform="bsd"}'), 1);
  assert.equal(sample(body, 'kiln_run_queue_wait_seconds_sum{platform="linux"}'), 2);
  assert.equal(sample(body, 'kiln_run_first_line_seconds_sum{platform="linux"}'), 0.5, 'the first worker line, not the server\'s');
  assert.equal(sample(body, 'kiln_run_first_line_seconds_count{platform="linux"}'), 1);
  assert.equal(sample(body, 'kiln_console_lines_received_total'), 3, 'worker lines only');
  assert.equal(sample(body, 'kiln_artifact_bytes_received_total'), 1024);
  assert.equal(sample(body, 'kiln_artifacts_received_total'), 2);
  assert.equal(sample(body, 'kiln_outbox_delivery_attempts_total{outcome="retrying"}'), 1);
  assert.equal(sample(body, 'kiln_outbox_delivery_attempts_total{outcome="delivered"}'), 1);
  assert.equal(sample(body, 'kiln_outbox_pending_deliveries'), 4);
  assert.equal(sample(body, 'kiln_pool_instance_starts_total{pool="local"}'), 1);
  assert.equal(sample(body, 'kiln_pool_instance_failures_total{pool="local"}'), 1);
  assert.equal(sample(body, 'kiln_pool_instances{pool="local",state="busy"}'), 1);
  assert.equal(sample(body, 'kiln_pool_instances{pool="local",state="idle"}'), 0);
  assert.equal(sample(body, 'kiln_queued_runs{platform="linux"}'), 2);
  assert.equal(sample(body, 'kiln_queued_runs{platform="bsd"}'), 0, 'a platform with workers and an empty queue says 0');
  assert.equal(sample(body, 'kiln_queue_oldest_wait_seconds{platform="linux"}'), 30.5);
  assert.equal(sample(body, 'kiln_workers_connected{platform="linux"}'), 2);
  assert.equal(sample(body, 'kiln_workers_busy{platform="linux"}'), 1);
  assert.equal(sample(body, 'kiln_workers_busy{platform="bsd"}'), 0);
  assert.match(body, /^kiln_build_info\{version="[^"]+"\} 1$/m);
});

test("other servers' events (remote, through the feed) are not counted here: each server counts what it did", async () => {
  const { events, metrics } = fixture();
  const run = { id: 'r9', job: 'j', platform: 'linux', queuedAt: T0 - 2000 } as Run;
  events.publish('run.dispatched', { run, worker: 'w', remote: true });
  events.publish('run.retried', { run, unstarted: false, remote: true });
  events.publish('run.ended', { runId: 'r9', from: 'running', status: 'succeeded', platform: 'linux', remote: true });
  events.publish('run.ended', { runId: 'r8', from: 'queued', status: 'cancelled', remote: true });
  const { body } = await metrics.render();
  assert.equal(sample(body, 'kiln_runs_ended_total{status="succeeded",platform="linux"}'), undefined);
  assert.equal(sample(body, 'kiln_runs_ended_total{status="cancelled",platform="bsd"}'), undefined, 'not even read from the store');
  assert.equal(sample(body, 'kiln_run_queue_wait_seconds_count{platform="linux"}'), undefined);
});

test("a platform's queue and worker series last while it has queued runs or a connected worker, then are dropped", async () => {
  const { metrics, queued, sessions } = fixture();
  sessions.push({ platform: 'gone-soon', running: new Set() });
  queued.push({ id: 'q3', platform: 'orphan', queuedAt: T0 - 1000 });
  let { body } = await metrics.render();
  assert.equal(sample(body, 'kiln_workers_connected{platform="gone-soon"}'), 1);
  assert.equal(sample(body, 'kiln_queued_runs{platform="gone-soon"}'), 0, 'a worker and an empty queue: 0');
  assert.equal(sample(body, 'kiln_workers_connected{platform="orphan"}'), 0, 'runs wait and no worker: 0, not absent');
  assert.equal(sample(body, 'kiln_queued_runs{platform="orphan"}'), 1);
  // The worker leaves, the orphan's run is cancelled: neither platform has anything left.
  sessions.pop();
  queued.pop();
  ({ body } = await metrics.render());
  for (const series of ['kiln_queued_runs', 'kiln_queue_oldest_wait_seconds', 'kiln_workers_connected', 'kiln_workers_busy']) {
    for (const platform of ['gone-soon', 'orphan']) assert.equal(sample(body, `${series}{platform="${platform}"}`), undefined, `${series} ${platform}: dropped`);
  }
  assert.equal(sample(body, 'kiln_queued_runs{platform="linux"}'), 2, 'the others stay');
  assert.equal(sample(body, 'kiln_workers_connected{platform="bsd"}'), 1);
});

test('the timed store passes calls, results and errors through, and times each operation by name', async () => {
  const { metrics, store } = fixture();
  const timed = metrics.timedStore(store);
  assert.equal((await timed.findRun('x')).platform, 'bsd');
  assert.equal((await timed.findRun('y')).id, 'y');
  await assert.rejects((timed as unknown as { fails(): Promise<void> }).fails(), /down/);
  assert.equal((timed as unknown as { name: string }).name, 'the store', 'other properties as they are');
  const { body } = await metrics.render();
  assert.equal(sample(body, 'kiln_store_operation_duration_seconds_count{operation="findRun"}'), 2);
  assert.equal(sample(body, 'kiln_store_operation_duration_seconds_count{operation="fails"}'), 1, 'a failed operation is timed too');
});
