/**
 * `GET /api/events`: what happens on the farm, live, as server-sent events (or NDJSON): runs queued,
 * dispatched, ended, retried, cancelled; workers joining and leaving; platforms dropped; jobs
 * changed; pool instances starting, failing, stopping. Each event is small (ids and names): a
 * client re-reads what it shows, so the stream never carries a run's console or a job's script.
 * The dashboard subscribes once per page instead of polling.
 *
 * A slow client never grows the server's memory: while its socket pushes back, events for it are
 * dropped, and once it drains it gets `{type: "resync"}` (re-read everything).
 */
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { EventBus, KilnEventName, KilnEvents } from '../events.js';
import { eventFormat, startEventStream } from './event-writer.js';

/** A silent stream gets a keep-alive event this often, so clients and proxies never time it out. */
const KEEPALIVE_MS = 20_000;

type Presenters = { [K in KilnEventName]?: (payload: KilnEvents[K]) => object };

/** The events a client sees, each as a few ids and names. */
const PRESENT: Presenters = {
  'run.queued': ({ runs }) => ({ runs: runs.map((r) => ({ id: r.id, job: r.job, platform: r.platform })) }),
  'run.dispatched': ({ run, worker }) => ({ runId: run.id, job: run.job, platform: run.platform, worker }),
  'run.attached': ({ runId, worker }) => ({ runId, worker }),
  'run.ended': ({ runId, from, status }) => ({ runId, from, status }),
  'run.retried': ({ run, unstarted }) => ({ runId: run.id, job: run.job, platform: run.platform, unstarted }),
  'run.lost': ({ runId, worker, reason }) => ({ runId, worker: worker ?? null, reason }),
  'run.cancel-requested': ({ run }) => ({ runId: run.id }),
  'worker.joined': ({ session }) => ({ worker: session.name, platform: session.platform }),
  'worker.freed': ({ session }) => ({ worker: session.name, platform: session.platform }),
  'worker.left': ({ session }) => ({ worker: session.name, platform: session.platform }),
  // A worker joining or leaving another server of the farm (several servers on one PostgreSQL).
  'worker.elsewhere': ({ name, platform, change }) => ({ worker: name, platform, change }),
  'platform.dropped': ({ platform, cancelled }) => ({ platform, cancelled }),
  'platform.undropped': ({ platform }) => ({ platform }),
  'job.changed': ({ name }) => ({ job: name }),
  'pool.instance.starting': ({ pool, instance, runId }) => ({ pool, instance, runId: runId ?? null }),
  'pool.instance.adopted': ({ pool, instance }) => ({ pool, instance }),
  'pool.instance.failed': ({ pool, instance, error }) => ({ pool, instance, error }),
  'pool.instance.stopped': ({ pool, instance, why }) => ({ pool, instance, why }),
};

/** Streams the farm's events into the reply (which it takes over) until the client goes. */
export function streamFarmEvents(request: FastifyRequest, reply: FastifyReply, events: EventBus): void {
  reply.hijack();
  const out = startEventStream(reply.raw, eventFormat(request.headers.accept));
  let missed = false;
  const send = (event: object) => {
    if (out.blocked) {
      missed = true;
      return;
    }
    out.write(event);
  };
  const unsubscribers = (Object.keys(PRESENT) as KilnEventName[]).map((name) =>
    events.on(name, (payload) => send({ type: name, ...(PRESENT[name] as (p: typeof payload) => object)(payload) })),
  );
  const resync = () => {
    if (!missed || out.closed) return;
    missed = false;
    out.write({ type: 'resync' });
  };
  reply.raw.on('drain', resync);
  const keepalive = setInterval(() => send({ type: 'keepalive' }), KEEPALIVE_MS);
  reply.raw.on('close', () => {
    clearInterval(keepalive);
    for (const unsubscribe of unsubscribers) unsubscribe();
  });
  // Subscribed: from here on the client misses nothing (it reads its state after this event).
  send({ type: 'hello' });
}
