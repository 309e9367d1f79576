/**
 * Prometheus metrics (`/metrics`, prom-client), built on the run lifecycle's events: counters and
 * histograms move when an event says something happened; queue, worker, pool and outbox gauges are
 * read at scrape time from the store and the registries, so they are never out of step. Store
 * operations are timed by wrapping the JobStore once (timedStore). README "Metrics" lists them.
 *
 * prom-client is required here, and only its metric classes (not its index, which loads cluster,
 * the default process metrics and OpenTelemetry: ~10 MB of RSS against ~0.6 MB): a server without
 * metrics never loads it (it is off by default: an idle server stays within its memory budget).
 */
import { createRequire } from 'node:module';
import type { Counter as CounterType, Gauge as GaugeType, Histogram as HistogramType, Registry as RegistryType } from 'prom-client';
import type { JobStore } from '../../store/index.js';
import { KILN_VERSION } from '../../version.js';
import type { EventBus } from '../events.js';
import type { PoolView } from '../latent/pool-manager.js';
import type { WorkerRegistry } from '../worker-registry.js';

/** The prom-client classes Kiln uses, required one by one. */
interface PromClient {
  Registry: typeof RegistryType;
  Counter: typeof CounterType;
  Gauge: typeof GaugeType;
  Histogram: typeof HistogramType;
}

function loadPromClient(): PromClient {
  const require = createRequire(import.meta.url);
  return {
    Registry: require('prom-client/lib/registry') as typeof RegistryType,
    Counter: require('prom-client/lib/counter') as typeof CounterType,
    Gauge: require('prom-client/lib/gauge') as typeof GaugeType,
    Histogram: require('prom-client/lib/histogram') as typeof HistogramType,
  };
}

/** Waits from a few ms (a run sent at once) to an hour (a queue that waited for a worker). */
const WAIT_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600];
/** Store calls: sub-millisecond (SQLite) to seconds (a PostgreSQL in trouble). */
const STORE_BUCKETS = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5];

/** What the scrape-time gauges read. */
export interface MetricSources {
  events: EventBus;
  store: JobStore;
  workers: WorkerRegistry;
  /** The pools' state (none without pools). */
  pools: () => PoolView[];
  now: () => number;
}

/** A server's metrics: make it before the store is wrapped, then watch the parts once built. */
export class KilnMetrics {
  private readonly prom = loadPromClient();
  private readonly registry = new this.prom.Registry();
  private readonly storeSeconds = new this.prom.Histogram({
    name: 'kiln_store_operation_duration_seconds', help: 'Time a store (JobStore) operation took, by operation.',
    labelNames: ['operation'], buckets: STORE_BUCKETS, registers: [this.registry],
  });

  /** The Prometheus text of every metric, and its content type. */
  async render(): Promise<{ contentType: string; body: string }> {
    return { contentType: this.registry.contentType, body: await this.registry.metrics() };
  }

  /** The store, each of its operations timed in kiln_store_operation_duration_seconds. */
  timedStore(store: JobStore): JobStore {
    const wrapped = new Map<PropertyKey, unknown>();
    const histogram = this.storeSeconds;
    return new Proxy(store, {
      get(target, key) {
        const value = Reflect.get(target, key, target) as unknown;
        if (typeof value !== 'function' || typeof key !== 'string') return value;
        let timed = wrapped.get(key);
        if (!timed) {
          timed = (...args: unknown[]) => {
            const end = histogram.startTimer({ operation: key });
            let result: unknown;
            try {
              result = (value as (...a: unknown[]) => unknown).apply(target, args);
            } catch (raw) {
              end();
              throw raw;
            }
            if (result instanceof Promise) return result.finally(end);
            end();
            return result;
          };
          wrapped.set(key, timed);
        }
        return timed;
      },
    });
  }

  /** Subscribes to the events and registers the gauges read at scrape time. */
  watch(sources: MetricSources): void {
    const { Counter, Gauge, Histogram } = this.prom;
    const registers = [this.registry];
    const { events, store, workers, now } = sources;

    new Gauge({ name: 'kiln_build_info', help: 'Always 1; the version of this server.', labelNames: ['version'], registers }).set({ version: KILN_VERSION }, 1);

    // ---- runs ----
    const ended = new Counter({ name: 'kiln_runs_ended_total', help: 'Runs that reached a final state, by status and platform.', labelNames: ['status', 'platform'], registers });
    // Events of other servers (remote, through the feed) are theirs to count: each server counts what it did.
    events.on('run.ended', ({ runId, status, platform, run, remote }) => {
      if (remote) return;
      const known = run?.platform ?? platform;
      if (known !== undefined) return ended.inc({ status, platform: known });
      // A run cancelled with its job or by its schedule: its platform is read (rare, off the publisher's path).
      void store.findRun(runId).then((found) => ended.inc({ status, platform: found.platform }), () => ended.inc({ status, platform: 'unknown' }));
    });

    const queueWait = new Histogram({
      name: 'kiln_run_queue_wait_seconds', help: 'Time from a run joining its queue (execute, schedule, retry) to its dispatch to a worker.',
      labelNames: ['platform'], buckets: WAIT_BUCKETS, registers,
    });
    const firstLine = new Histogram({
      name: 'kiln_run_first_line_seconds', help: "Time from a run's dispatch to the first console line its worker sent.",
      labelNames: ['platform'], buckets: WAIT_BUCKETS, registers,
    });
    // Runs put back in the queue this life (retries): they wait from then, not from their first queueing.
    const requeuedAt = new Map<string, number>();
    // Runs dispatched whose worker has not sent a line yet (bounded by the running runs).
    const awaitingLine = new Map<string, { at: number; platform: string }>();
    events.on('run.retried', ({ run, remote }) => {
      if (remote) return;
      requeuedAt.set(run.id, now());
      awaitingLine.delete(run.id);
    });
    events.on('run.dispatched', ({ run, remote }) => {
      if (remote) return;
      const at = now();
      queueWait.observe({ platform: run.platform }, Math.max(0, at - (requeuedAt.get(run.id) ?? run.queuedAt)) / 1000);
      requeuedAt.delete(run.id);
      awaitingLine.set(run.id, { at, platform: run.platform });
    });
    const linesReceived = new Counter({ name: 'kiln_console_lines_received_total', help: 'Console lines received from workers.', registers });
    events.on('run.line', ({ runId, lines, source }) => {
      if (source !== 'worker') return;
      linesReceived.inc(lines.length);
      const waiting = awaitingLine.get(runId);
      if (!waiting) return;
      awaitingLine.delete(runId);
      firstLine.observe({ platform: waiting.platform }, Math.max(0, now() - waiting.at) / 1000);
    });
    events.on('run.ended', ({ runId, remote }) => {
      if (remote) return;
      awaitingLine.delete(runId);
      requeuedAt.delete(runId);
    });

    // ---- queues and workers (read at scrape time; the queue gauges from one read) ----
    // A platform has series while it has queued runs or a connected worker: then an empty queue, or
    // no worker for a waiting queue, says 0 rather than vanishing. Once it has neither its series are
    // dropped, so platforms that come and go (pools, renamed workers, typos) do not pile up.
    let reading: Promise<Map<string, { depth: number; oldest: number }>> | undefined;
    const queues = () => (reading ??= store.listQueued().then((runs) => {
      const byPlatform = new Map<string, { depth: number; oldest: number }>();
      for (const run of runs) {
        const entry = byPlatform.get(run.platform) ?? { depth: 0, oldest: run.queuedAt };
        entry.depth += 1;
        entry.oldest = Math.min(entry.oldest, run.queuedAt);
        byPlatform.set(run.platform, entry);
      }
      return byPlatform;
    }).finally(() => (reading = undefined)));
    const livePlatforms = (byPlatform: Map<string, unknown>) => new Set([...byPlatform.keys(), ...workers.list().map((session) => session.platform)]);
    /** Sets the gauge to exactly these platforms' values: reset first, so a platform no longer live has no series. */
    const setExactly = (gauge: GaugeType<'platform'>, platforms: Set<string>, value: (platform: string) => number) => {
      gauge.reset();
      for (const platform of platforms) gauge.set({ platform }, value(platform));
    };
    new Gauge({
      name: 'kiln_queued_runs', help: 'Runs waiting in their platform\'s queue.', labelNames: ['platform'], registers,
      async collect() {
        const byPlatform = await queues();
        setExactly(this, livePlatforms(byPlatform), (platform) => byPlatform.get(platform)?.depth ?? 0);
      },
    });
    new Gauge({
      name: 'kiln_queue_oldest_wait_seconds', help: 'How long the oldest run in each platform\'s queue has waited (0: none waits).', labelNames: ['platform'], registers,
      async collect() {
        const byPlatform = await queues();
        const at = now();
        setExactly(this, livePlatforms(byPlatform), (platform) => {
          const entry = byPlatform.get(platform);
          return entry ? Math.max(0, at - entry.oldest) / 1000 : 0;
        });
      },
    });
    const countWorkers = async (gauge: GaugeType<'platform'>, busyOnly: boolean) => {
      const counts = new Map<string, number>();
      for (const session of workers.list()) {
        if (!busyOnly || session.running.size > 0) counts.set(session.platform, (counts.get(session.platform) ?? 0) + 1);
      }
      setExactly(gauge, livePlatforms(await queues()), (platform) => counts.get(platform) ?? 0);
    };
    new Gauge({ name: 'kiln_workers_connected', help: 'Workers connected, by platform.', labelNames: ['platform'], registers, async collect() { await countWorkers(this, false); } });
    new Gauge({ name: 'kiln_workers_busy', help: 'Connected workers running at least one run, by platform.', labelNames: ['platform'], registers, async collect() { await countWorkers(this, true); } });

    // ---- pools ----
    const states = ['starting', 'idle', 'busy', 'stopping'] as const;
    new Gauge({
      name: 'kiln_pool_instances', help: 'Latent worker instances, by pool and state (starting, idle, busy, stopping).', labelNames: ['pool', 'state'], registers,
      collect() {
        for (const pool of sources.pools()) {
          for (const state of states) this.set({ pool: pool.name, state }, pool.instances.filter((i) => i.state === state).length);
        }
      },
    });
    const starts = new Counter({ name: 'kiln_pool_instance_starts_total', help: 'Latent worker instances started, by pool.', labelNames: ['pool'], registers });
    const failures = new Counter({ name: 'kiln_pool_instance_failures_total', help: 'Latent worker instances that failed to start or to connect in time, by pool.', labelNames: ['pool'], registers });
    events.on('pool.instance.starting', ({ pool }) => starts.inc({ pool }));
    events.on('pool.instance.failed', ({ pool }) => failures.inc({ pool }));

    // ---- outbox ----
    new Gauge({
      name: 'kiln_outbox_pending_deliveries', help: 'Finished runs waiting to be delivered to the upload target (the backlog).', registers,
      async collect() {
        this.set((await store.outboxSummary()).pending);
      },
    });
    const attempts = new Counter({
      name: 'kiln_outbox_delivery_attempts_total', help: 'Deliveries tried, by outcome: delivered, retrying (failed, tried again later), failed (given up).',
      labelNames: ['outcome'], registers,
    });
    events.on('delivery.attempted', ({ outcome }) => attempts.inc({ outcome }));

    // ---- artifacts ----
    const artifactBytes = new Counter({ name: 'kiln_artifact_bytes_received_total', help: 'Bytes of artifact files received from workers and stored.', registers });
    const artifactFiles = new Counter({ name: 'kiln_artifacts_received_total', help: 'Artifact files received from workers and stored.', registers });
    events.on('artifact.stored', ({ size }) => {
      artifactBytes.inc(size);
      artifactFiles.inc();
    });
  }
}
