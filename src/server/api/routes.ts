/** The client API: JSON over HTTP, every route behind the admin token. */
import type { FastifyInstance } from 'fastify';
import type { JobStore } from '../../store/index.js';
import type { ConsoleHub } from '../console-hub.js';
import type { Dispatcher } from '../dispatcher.js';
import { KilnService } from '../kiln-service.js';
import { streamConsole } from './console-stream.js';
import { presentEvent, presentJob, presentRun, presentWorker } from './present.js';
import {
  cancelBody, consoleQuery, createJobBody, executeBody, latestRunQuery, listRunsQuery, modifyJobBody, parse, rescheduleBody,
} from './schemas.js';
import { JobNotFoundError, RunNotFoundError } from '../../errors.js';

/** What the routes need. */
export interface RouteParts {
  store: JobStore;
  hub: ConsoleHub;
  dispatcher: Dispatcher;
  service: KilnService;
}

const nameParam = (params: unknown) => (params as { name: string }).name;
const idParam = (params: unknown) => (params as { id: string }).id;

/** Registers every client route on `app`. */
export function registerRoutes(app: FastifyInstance, { store, hub, dispatcher, service }: RouteParts): void {
  app.post('/api/jobs', async (request, reply) => {
    const body = parse(createJobBody, request.body, 'job');
    const { job, run } = await service.schedule(body);
    return reply.code(201).send({ job: presentJob(job), run: run ? presentRun(run) : null });
  });

  app.get('/api/jobs', async () => ({ jobs: (await store.listJobs()).map(presentJob) }));

  app.get('/api/jobs/:name', async (request) => {
    const job = await store.getJob(nameParam(request.params));
    if (!job) throw new JobNotFoundError(nameParam(request.params));
    return { job: presentJob(job) };
  });

  app.patch('/api/jobs/:name', async (request) => {
    const patch = parse(modifyJobBody, request.body, 'job change');
    return { job: presentJob(await service.modify(nameParam(request.params), patch)) };
  });

  app.delete('/api/jobs/:name', async (request) => ({ cancelled: await service.unschedule(nameParam(request.params)) }));

  app.post('/api/jobs/:name/execute', async (request, reply) => {
    const body = parse(executeBody, request.body, 'execute request');
    const { run, created } = await service.execute(nameParam(request.params), body.platform);
    return reply.code(created ? 201 : 200).send({ run: presentRun(run), created });
  });

  app.post('/api/jobs/:name/reschedule', async (request) => {
    const body = parse(rescheduleBody, request.body, 'reschedule request');
    return { job: presentJob(await service.reschedule(nameParam(request.params), KilnService.parseTime(body.next))) };
  });

  app.get('/api/runs', async (request) => {
    const filter = parse(listRunsQuery, request.query, 'run filter');
    return { runs: (await store.listRuns(filter)).map(presentRun) };
  });

  app.get('/api/runs/latest', async (request) => {
    const filter = parse(latestRunQuery, request.query, 'run filter');
    const [run] = await store.listRuns({ ...filter, limit: 1 });
    if (!run) throw new RunNotFoundError(`latest${filter.job ? ` of job ${filter.job}` : ''}${filter.platform ? ` on ${filter.platform}` : ''}`);
    return { run: presentRun(run) };
  });

  app.get('/api/runs/:id', async (request) => ({ run: presentRun(await store.findRun(idParam(request.params))) }));

  app.post('/api/runs/:id/cancel', async (request) => {
    const body = parse(cancelBody, request.body, 'cancel request');
    const { run, state } = await service.cancel(idParam(request.params), body.by ?? 'admin');
    return { run: presentRun(run), state };
  });

  app.get('/api/runs/:id/events', async (request) => {
    const run = await store.findRun(idParam(request.params));
    return { run: presentRun(run), events: (await store.listEvents(run.id)).map(presentEvent) };
  });

  app.get('/api/runs/:id/console', async (request, reply) => {
    const { follow, after } = parse(consoleQuery, request.query, 'console request');
    const run = await store.findRun(idParam(request.params));
    await streamConsole(request, reply, store, hub, run, follow, after);
  });

  app.get('/api/workers', async () => ({ workers: await listWorkers() }));

  app.get('/api/info', async () => {
    const [jobs, queued, running, workers] = await Promise.all([store.listJobs(), store.listQueued(), store.listRunning(), listWorkers()]);
    const queues: Record<string, ReturnType<typeof presentRun>[]> = {};
    for (const run of queued) (queues[run.platform] ??= []).push(presentRun(run));
    return {
      schedule: jobs.map((job) => ({ job: job.name, platform: job.platform, period: job.period, nextAt: presentJob(job).nextAt })),
      queues,
      running: running.map(presentRun),
      workers,
    };
  });

  async function listWorkers() {
    return (await store.listWorkers()).map((record) => presentWorker(record, [...(dispatcher.session(record.name)?.running ?? [])]));
  }
}
