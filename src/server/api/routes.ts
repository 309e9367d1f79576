/** The client API: JSON over HTTP, each route for the roles it names (see auth.ts). */
import type { FastifyInstance } from 'fastify';
import type { Delivery, JobStore } from '../../store/index.js';
import type { ConsoleHub } from '../console-hub.js';
import { parseTime, type JobService } from '../job-service.js';
import type { RunLifecycle } from '../run-lifecycle.js';
import type { WorkerRegistry } from '../worker-registry.js';
import { streamConsole } from './console-stream.js';
import { presentDelivery, presentEvent, presentJob, presentRun, presentWorker } from './present.js';
import { cancelledBy, isoInZone, scheduleZone, upcoming, waitReasons, type FarmView, type WorkerSlotView } from '../../core/index.js';
import type { EventBus } from '../events.js';
import { freeSlots } from '../worker-registry.js';
import { streamFarmEvents } from './event-stream.js';
import type { Templates } from '../templates.js';
import type { ArtifactSweeper } from '../artifact-sweeper.js';
import type { PoolView } from '../latent/pool-manager.js';
import type { PresentedServer } from './present.js';
import {
  cancelBody, consoleQuery, gcBody, nextQuery, platformParam, createJobBody, executeBody, latestRunQuery, listRunsQuery, modifyJobBody, parse, rescheduleBody,
} from './schemas.js';
import { JobNotFoundError, NotRedeliverableError, RunNotFoundError, UnauthorizedError } from '../../errors.js';
import { traceNow, traceStage, tracing } from '../../latency-trace.js';
import { forAdmin, forOperator, forViewer, mayReadSecrets } from './auth.js';

/** What the routes need. */
export interface RouteParts {
  store: JobStore;
  hub: ConsoleHub;
  registry: WorkerRegistry;
  /** The job use cases. */
  jobService: JobService;
  /** Cancels go there. */
  lifecycle: RunLifecycle;
  templates: Templates;
  sweeper: ArtifactSweeper;
  /** The latent worker pools, as `kiln workers` shows them (a pool another server manages as the store records it). */
  pools: () => Promise<PoolView[]>;
  /** Where runs are uploaded, without secrets. */
  uploadTarget: string | undefined;
  /** The run lifecycle's events, streamed to clients (`GET /api/events`). */
  events: EventBus;
  /** The run a worker is kept for (a pool instance made for one run), if any. */
  reservedFor: (worker: string) => string | undefined;
  /** Queues the run's failed delivery again and wakes the outbox (`kiln redeliver`); undefined: none failed. */
  redeliver: (runId: string) => Promise<Delivery | undefined>;
  /** The server's clock (injected in tests): a pool's quarantine is judged against it. */
  now: () => number;
  /** The farm's servers with their leases, `self` marking this one (`GET /api/info`). */
  servers: () => Promise<PresentedServer[]>;
  /** This server's id in its farm (workers recorded on other servers are told apart by it). */
  serverId: string;
  /** `HOST:PORT` of this server's robur port (`--robur-listen`), when on. */
  roburAddress?: () => string | undefined;
}

const nameParam = (params: unknown) => (params as { name: string }).name;
const idParam = (params: unknown) => (params as { id: string }).id;

/** Registers every client route on `app`. */
export function registerRoutes(app: FastifyInstance, { store, hub, registry, jobService, lifecycle, templates, sweeper, uploadTarget, pools, redeliver, events, reservedFor, now, servers, serverId, roburAddress }: RouteParts): void {
  app.post('/api/jobs', forAdmin, async (request, reply) => {
    const body = parse(createJobBody, request.body, 'job');
    const { job, runs } = await jobService.schedule(body);
    return reply.code(201).send({ job: presentJob(job, request.log, mayReadSecrets(request)), runs: runs.map(presentRun), run: runs[0] ? presentRun(runs[0]) : null });
  });

  // Each job with the platforms it runs on and its last run: the dashboard's jobs page in one request and two reads, however many jobs.
  app.get('/api/jobs', forViewer, async (request) => {
    const [jobs, lastRuns] = await Promise.all([store.listJobs(), store.lastRuns()]);
    return {
      jobs: jobs.map((job) => {
        const last = lastRuns.get(job.name);
        return { ...presentJob(job, request.log, mayReadSecrets(request)), platforms: jobService.platformsFor(job), lastRun: last ? presentRun(last) : null };
      }),
    };
  });

  app.get('/api/jobs/:name', forViewer, async (request) => {
    const job = await store.getJob(nameParam(request.params));
    if (!job) throw new JobNotFoundError(nameParam(request.params));
    return { job: presentJob(job, request.log, mayReadSecrets(request)) };
  });

  app.patch('/api/jobs/:name', forAdmin, async (request) => {
    const patch = parse(modifyJobBody, request.body, 'job change');
    return { job: presentJob(await jobService.modify(nameParam(request.params), patch), request.log, mayReadSecrets(request)) };
  });

  app.delete('/api/jobs/:name', forAdmin, async (request) => ({ cancelled: await jobService.unschedule(nameParam(request.params)) }));

  app.post('/api/jobs/:name/execute', forOperator, async (request, reply) => {
    const receivedAt = tracing ? traceNow() : 0;
    const body = parse(executeBody, request.body, 'execute request');
    const { runs, created } = await jobService.execute(nameParam(request.params), body.platform);
    if (tracing) for (const run of runs) traceStage(run.id, 'http-received', receivedAt);
    return reply.code(created ? 201 : 200).send({ run: presentRun(runs[0]!), runs: runs.map(presentRun), created });
  });

  app.post('/api/jobs/:name/reschedule', forAdmin, async (request) => {
    const body = parse(rescheduleBody, request.body, 'reschedule request');
    return { job: presentJob(await jobService.reschedule(nameParam(request.params), parseTime(body.next)), request.log, mayReadSecrets(request)) };
  });

  app.post('/api/jobs/:name/pause', forOperator, async (request) => ({ job: presentJob(await jobService.pause(nameParam(request.params)), request.log, mayReadSecrets(request)) }));
  app.post('/api/jobs/:name/resume', forOperator, async (request) => ({ job: presentJob(await jobService.resume(nameParam(request.params)), request.log, mayReadSecrets(request)) }));

  app.get('/api/jobs/:name/next', forViewer, async (request) => {
    const { count } = parse(nextQuery, request.query, 'preview request');
    const job = await store.getJob(nameParam(request.params));
    if (!job) throw new JobNotFoundError(nameParam(request.params));
    const shown = presentJob(job, request.log);
    try {
      const zone = scheduleZone(job.schedule);
      return { job: job.name, schedule: shown.scheduleText, next: upcoming(job.schedule, job.nextAt, count).map((at) => isoInZone(at, zone)) };
    } catch (raw) {
      // A stored schedule this runtime cannot follow (a zone it lacks, say): none to show, not a 500.
      request.log.warn({ job: job.name, schedule: job.schedule, err: (raw as Error).message }, 'stored schedule cannot be previewed; none shown');
      return { job: job.name, schedule: shown.scheduleText, next: [] };
    }
  });

  app.get('/api/templates', forViewer, async () => ({ directory: templates.dir, builderDirectory: templates.builderDir ?? null, templates: templates.list() }));

  app.get('/api/platforms/dropped', forViewer, async () => ({ dropped: await droppedPlatforms() }));
  app.post('/api/platforms/:platform/drop', forOperator, async (request) => {
    const { platform } = parse(platformParam, request.params, 'platform');
    return { platform, cancelled: await jobService.dropPlatform(platform) };
  });
  app.post('/api/platforms/:platform/undrop', forOperator, async (request) => {
    const { platform } = parse(platformParam, request.params, 'platform');
    return { platform, lifted: await jobService.undropPlatform(platform) };
  });

  app.get('/api/runs', forViewer, async (request) => {
    const filter = parse(listRunsQuery, request.query, 'run filter');
    return { runs: (await store.listRuns(filter)).map(presentRun) };
  });

  app.get('/api/runs/latest', forViewer, async (request) => {
    const filter = parse(latestRunQuery, request.query, 'run filter');
    const [run] = await store.listRuns({ ...filter, limit: 1 });
    if (!run) throw new RunNotFoundError(`latest${filter.job ? ` of job ${filter.job}` : ''}${filter.platform ? ` on ${filter.platform}` : ''}`);
    return { run: presentRun(run) };
  });

  app.get('/api/runs/:id', forViewer, async (request) => ({ run: presentRun(await store.findRun(idParam(request.params))) }));

  app.post('/api/runs/:id/cancel', forOperator, async (request) => {
    const body = parse(cancelBody, request.body, 'cancel request');
    const who = request.credential;
    if (who.kind !== 'person') throw new UnauthorizedError('invalid token');
    const { run, state } = await lifecycle.cancel(idParam(request.params), cancelledBy(who.name, body.by));
    return { run: presentRun(run), state };
  });

  app.get('/api/runs/:id/events', forViewer, async (request) => {
    const run = await store.findRun(idParam(request.params));
    const [events, deliveries] = await Promise.all([store.listEvents(run.id), store.listDeliveries(run.id)]);
    return { run: presentRun(run), events: events.map(presentEvent), deliveries: deliveries.map(presentDelivery) };
  });

  // `kiln redeliver`: a delivery the target refused, or failed too often, is queued again.
  app.post('/api/runs/:id/redeliver', forOperator, async (request) => {
    const run = await store.findRun(idParam(request.params));
    if (uploadTarget === undefined) throw new NotRedeliverableError('this server has no upload target (--upload): nothing to redeliver to');
    const delivery = await redeliver(run.id);
    if (!delivery) {
      const states = (await store.listDeliveries(run.id)).map((d) => d.state);
      throw new NotRedeliverableError(`run ${run.id} has no failed delivery to send again (${states.length ? states.join(', ') : 'it has no delivery'})`);
    }
    return { delivery: presentDelivery(delivery) };
  });

  app.get('/api/runs/:id/console', forViewer, async (request, reply) => {
    const { follow, after } = parse(consoleQuery, request.query, 'console request');
    const run = await store.findRun(idParam(request.params));
    await streamConsole(request, reply, store, hub, run, follow, after);
  });

  /**
   * Workers connected to the farm's other servers (several servers on PostgreSQL), as slots: their
   * capacity less the runs the store says they hold. Alone on a store, none (a row still marked
   * connected without a server is a past life's).
   */
  const workersElsewhere = async (): Promise<WorkerSlotView[]> => {
    const [recorded, running] = await Promise.all([store.listWorkers(), store.listRunning()]);
    const here = new Set(registry.list().map((s) => s.name));
    const held = new Map<string, number>();
    for (const run of running) if (run.worker) held.set(run.worker, (held.get(run.worker) ?? 0) + 1);
    return recorded
      .filter((w) => w.connected && w.server && w.server !== serverId && !here.has(w.name))
      .map((w) => ({ name: w.name, platform: w.platform, labels: w.labels, freeSlots: Math.max(0, w.capacity - (held.get(w.name) ?? 0)) }));
  };

  // Every platform the farm knows (queued runs, jobs, workers, pools, drops), with why each waiting run waits.
  app.get('/api/queues', forViewer, async () => {
    const [queued, dropped, jobs, elsewhere] = await Promise.all([store.listQueued(), store.listDroppedPlatforms(), store.listJobs(), workersElsewhere()]);
    const sessions = registry.list();
    const poolViews = await pools();
    const workerSlots = [
      ...sessions.map((s) => ({ name: s.name, platform: s.platform, labels: s.labels, freeSlots: freeSlots(s), onlyRun: reservedFor(s.name) })),
      ...elsewhere,
    ];
    const farm: FarmView = {
      workers: workerSlots,
      pools: poolViews.map((p) => {
        const live = p.instances.filter((i) => i.state !== 'stopping');
        const starting = live.filter((i) => i.state === 'starting');
        return {
          name: p.name, platform: p.platform, labels: p.labels, max: p.max, live: live.length, starting: starting.length,
          startingFor: starting.flatMap((i) => (i.forRun ? [i.forRun] : [])),
          quarantinedUntil: p.quarantinedUntil === null ? null : Date.parse(p.quarantinedUntil), lastError: p.lastError,
        };
      }),
      dropped: new Set(dropped.map((d) => d.platform)),
      now: now(),
    };
    // Platforms are names users choose: a Map, as `constructor` or `toString` would find Object's own.
    const byPlatform = new Map<string, typeof queued>();
    const known = [...queued.map((r) => r.platform), ...jobs.flatMap((job) => jobService.platformsFor(job)), ...workerSlots.map((s) => s.platform), ...poolViews.map((p) => p.platform), ...farm.dropped];
    for (const platform of known) {
      if (!byPlatform.has(platform)) byPlatform.set(platform, []);
    }
    for (const run of queued) byPlatform.get(run.platform)!.push(run);
    return {
      queues: [...byPlatform].sort(([a], [b]) => a.localeCompare(b)).map(([platform, runs]) => {
        const reasons = waitReasons(runs, farm);
        const workers = workerSlots.filter((s) => s.platform === platform);
        return {
          platform, dropped: farm.dropped.has(platform),
          workers: workers.length, freeSlots: workers.reduce((n, s) => n + s.freeSlots, 0),
          pools: poolViews.filter((p) => p.platform === platform).map((p) => p.name),
          runs: runs.map((run, i) => ({ run: presentRun(run), waiting: reasons[i]! })),
        };
      }),
    };
  });

  // The farm's events, live (server-sent events, or NDJSON): the dashboard re-reads on them instead of polling.
  app.get('/api/events', forViewer, async (request, reply) => streamFarmEvents(request, reply, events));

  app.get('/api/workers', forViewer, async () => ({ workers: await listWorkers(), pools: await pools() }));

  app.get('/api/info', forViewer, async (request) => {
    const [jobs, queued, running, workers, summary, farm] = await Promise.all([
      store.listJobs(), store.listQueued(), store.listRunning(), listWorkers(), store.outboxSummary(), servers(),
    ]);
    // Platforms are names users choose: a Map, as `constructor` or `toString` would find Object's own.
    const byPlatform = new Map<string, ReturnType<typeof presentRun>[]>();
    for (const run of queued) {
      const queue = byPlatform.get(run.platform) ?? [];
      if (queue.length === 0) byPlatform.set(run.platform, queue);
      queue.push(presentRun(run));
    }
    const queues = Object.fromEntries(byPlatform);
    return {
      schedule: jobs.map((job) => {
        const shown = presentJob(job, request.log);
        return {
          job: job.name, platforms: jobService.platformsFor(job), schedule: shown.scheduleText, paused: job.paused, overlap: job.overlap,
          nextAt: shown.nextAt, skipped: job.skipped, lastSkip: shown.lastSkip,
        };
      }),
      queues,
      running: running.map(presentRun),
      workers,
      dropped: await droppedPlatforms(),
      artifacts: { keepRuns: sweeper.settings.keepRuns ?? null, keepForMs: sweeper.settings.keepForMs ?? null },
      servers: farm,
      robur: roburAddress?.() ?? null,
      upload: uploadTarget === undefined && summary.pending + summary.delivered + summary.failed === 0 ? null : {
        target: uploadTarget ?? null,
        pending: summary.pending, delivered: summary.delivered, failed: summary.failed,
        oldestPendingAt: summary.oldestPendingAt === null ? null : new Date(summary.oldestPendingAt).toISOString(),
        troubled: summary.troubled.map(presentDelivery),
      },
    };
  });

  app.post('/api/artifacts/gc', forAdmin, async (request) => {
    const body = parse(gcBody, request.body, 'gc request');
    const keep = body.keepRuns !== undefined || body.keepForMs !== undefined ? { keepRuns: body.keepRuns, keepForMs: body.keepForMs } : sweeper.settings;
    const report = await sweeper.sweep(body.dryRun, keep);
    return {
      ...report,
      runs: report.runs.map((r) => ({ ...r, finishedAt: new Date(r.finishedAt).toISOString() })),
      policy: { keepRuns: keep.keepRuns ?? null, keepForMs: keep.keepForMs ?? null },
    };
  });

  async function droppedPlatforms() {
    return (await store.listDroppedPlatforms()).map((d) => ({ platform: d.platform, droppedAt: new Date(d.droppedAt).toISOString() }));
  }

  async function listWorkers() {
    return (await store.listWorkers()).map((record) => presentWorker(record, [...(registry.session(record.name)?.running ?? [])]));
  }
}
