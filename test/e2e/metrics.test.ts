/**
 * Prometheus metrics with a real Prometheus (Debian's package): it scrapes a real server's own
 * metrics listener (--metrics-listen) every second while a worker runs jobs, and the values are
 * queried back through Prometheus's HTTP API. On the main listener, /metrics needs a person's token
 * of any role (--metrics), and a server without metrics has no /metrics at all.
 */
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { freePort, kiln, spawnCommand, startServer, startWorker, tempDir } from '../helpers/processes.js';
import { needs } from '../helpers/requirements.js';

/** How long Prometheus may take to show a value (it scrapes every second). */
const PROMETHEUS_DEADLINE_MS = 60_000;

/** One sample of an instant query's answer. */
interface Sample {
  metric: Record<string, string>;
  value: [number, string];
}

/** Asks Prometheus `query` until `accept` takes its answer (no event says a scrape happened: polled, with a deadline). */
async function queryUntil(base: string, query: string, accept: (samples: Sample[]) => boolean): Promise<Sample[]> {
  const deadline = Date.now() + PROMETHEUS_DEADLINE_MS;
  let last: unknown;
  while (Date.now() < deadline) {
    try {
      const reply = await fetch(`${base}/api/v1/query?query=${encodeURIComponent(query)}`);
      const body = (await reply.json()) as { status: string; data?: { result: Sample[] } };
      last = body;
      if (body.status === 'success' && accept(body.data!.result)) return body.data!.result;
    } catch (raw) {
      // Not listening yet.
      last = raw;
    }
    await sleep(200);
  }
  assert.fail(`Prometheus did not answer ${query} as expected within ${PROMETHEUS_DEADLINE_MS / 1000} s; last answer: ${JSON.stringify(last)}`);
}

/** The value of a query with exactly one sample. */
const single = (samples: Sample[]) => (samples.length === 1 ? Number(samples[0]!.value[1]) : NaN);

test('a real Prometheus scrapes the metrics listener and reads back runs, queues, workers, console, artifacts and store timings', { skip: needs('prometheus') }, async (t) => {
  const dir = tempDir(t);
  const metricsPort = await freePort();
  const server = await startServer(t, { args: ['--metrics-listen', `127.0.0.1:${metricsPort}`] });
  await server.waitFor(new RegExp(`^kiln server listening on .*, metrics at http://127\\.0\\.0\\.1:${metricsPort}/metrics$`));
  await startWorker(t, server, ['--name', 'metered', '--platform', 'metricos']);

  const promPort = await freePort();
  const config = path.join(dir, 'prometheus.yml');
  writeFileSync(config, [
    'global:', '  scrape_interval: 1s', '  evaluation_interval: 1s',
    'scrape_configs:', '  - job_name: kiln', '    scrape_interval: 1s', '    static_configs:', `      - targets: ['127.0.0.1:${metricsPort}']`, '',
  ].join('\n'));
  const prometheus = spawnCommand(t, '/usr/bin/prometheus', [
    `--config.file=${config}`, `--storage.tsdb.path=${path.join(dir, 'tsdb')}`, `--web.listen-address=127.0.0.1:${promPort}`,
  ], { name: 'prometheus' });
  const prom = `http://127.0.0.1:${promPort}`;
  // Up: Prometheus scraped the server's listener at least once.
  await queryUntil(prom, 'up{job="kiln"}', (samples) => single(samples) === 1);

  // Three runs that succeed (two lines and a 6-byte artifact each), one that fails.
  assert.equal((await kiln(server, ['schedule', 'good', '--command', 'echo one; echo two; printf hello! > out.bin', '--platform', 'metricos', '--period', 'never'])).code, 0);
  assert.equal((await kiln(server, ['schedule', 'bad', '--command', 'echo failing; exit 1', '--platform', 'metricos', '--period', 'never'])).code, 0);
  for (const job of ['good', 'good', 'good', 'bad']) {
    const runId = (await kiln(server, ['execute', job])).stdout.trim();
    await kiln(server, ['observe', runId]);
  }

  assert.equal(single(await queryUntil(prom, 'kiln_runs_ended_total{status="succeeded",platform="metricos"}', (s) => single(s) === 3)), 3);
  assert.equal(single(await queryUntil(prom, 'kiln_runs_ended_total{status="failed",platform="metricos"}', (s) => single(s) === 1)), 1);
  assert.equal(single(await queryUntil(prom, 'kiln_run_queue_wait_seconds_count{platform="metricos"}', (s) => single(s) === 4)), 4);
  assert.equal(single(await queryUntil(prom, 'kiln_run_first_line_seconds_count{platform="metricos"}', (s) => single(s) === 4)), 4);
  // Each good run's two lines and its worker's note of the artifact it kept; the bad run's one line.
  assert.equal(single(await queryUntil(prom, 'kiln_console_lines_received_total', (s) => single(s) === 10)), 10);
  assert.equal(single(await queryUntil(prom, 'kiln_artifact_bytes_received_total', (s) => single(s) === 18)), 18);
  assert.equal(single(await queryUntil(prom, 'kiln_artifacts_received_total', (s) => single(s) === 3)), 3);
  assert.equal(single(await queryUntil(prom, 'kiln_workers_connected{platform="metricos"}', (s) => single(s) === 1)), 1);
  assert.equal(single(await queryUntil(prom, 'kiln_workers_busy{platform="metricos"}', (s) => single(s) === 0)), 0);
  assert.equal(single(await queryUntil(prom, 'kiln_queued_runs{platform="metricos"}', (s) => single(s) === 0)), 0);
  // Every run's end went through one timed store operation.
  assert.ok(single(await queryUntil(prom, 'kiln_store_operation_duration_seconds_count{operation="endAttempt"}', (s) => single(s) >= 4)) >= 4);
  assert.equal(single(await queryUntil(prom, 'kiln_outbox_pending_deliveries', (s) => s.length === 1)), 0);

  // A run waiting for a platform nobody serves shows in its queue's depth and oldest wait.
  assert.equal((await kiln(server, ['schedule', 'stuck', '--command', 'true', '--platform', 'nowhere', '--period', 'never'])).code, 0);
  assert.equal((await kiln(server, ['execute', 'stuck'])).code, 0);
  assert.equal(single(await queryUntil(prom, 'kiln_queued_runs{platform="nowhere"}', (s) => single(s) === 1)), 1);
  assert.ok(single(await queryUntil(prom, 'kiln_queue_oldest_wait_seconds{platform="nowhere"}', (s) => single(s) > 0)) > 0);

  await prometheus.kill('SIGTERM');
});

test('--metrics serves /metrics on the main listener for a person\'s token of any role, not for a worker or nobody; without it there is none', async (t) => {
  const server = await startServer(t, { args: ['--metrics'] });
  const anonymous = await fetch(`${server.url}/metrics`);
  assert.equal(anonymous.status, 401);
  assert.equal(((await anonymous.json()) as { error: { code: string } }).error.code, 'KILN_ERR_UNAUTHORIZED');
  const worker = await fetch(`${server.url}/metrics`, { headers: { authorization: `Bearer ${server.workerToken}` } });
  assert.ok(worker.status === 401 || worker.status === 403, `the worker token does not read metrics (${worker.status})`);
  const created = await kiln(server, ['token', 'create', 'prometheus', '--role', 'viewer']);
  assert.equal(created.code, 0, created.stderr);
  for (const token of [created.stdout.trim(), server.adminToken]) {
    const reply = await fetch(`${server.url}/metrics`, { headers: { authorization: `Bearer ${token}` } });
    assert.equal(reply.status, 200);
    assert.match(reply.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/);
    assert.match(await reply.text(), /^kiln_build_info\{version="\d+\.\d+\.\d+"\} 1$/m);
  }

  const plain = await startServer(t);
  const none = await fetch(`${plain.url}/metrics`, { headers: { authorization: `Bearer ${plain.adminToken}` } });
  assert.equal(none.status, 404, 'metrics are off by default');
});

test('a metrics listen address that is taken stops the server with one line', async (t) => {
  const taken = await startServer(t, { args: ['--metrics-listen', '127.0.0.1:0'] });
  const port = Number(new URL(taken.url).port);
  const result = await kiln(undefined, ['server', '--listen', `127.0.0.1:${await freePort()}`, '--data', tempDir(t), '--metrics-listen', `127.0.0.1:${port}`]);
  assert.equal(result.code, 1, result.stderr);
  assert.match(result.stderr, new RegExp(`^kiln: cannot listen on 127\\.0\\.0\\.1:${port} \\(--metrics-listen\\): the address is already in use \\(EADDRINUSE\\): stop what listens there or give --metrics-listen another port$`, 'm'));
  const bad = await kiln(undefined, ['server', '--data', tempDir(t), '--metrics-listen', 'nowhere']);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /^kiln: bad --metrics-listen 'nowhere': use HOST:PORT, e\.g\. 127\.0\.0\.1:9464$/m);
});
