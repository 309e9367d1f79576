/**
 * `GET /api/runs/:id/console`: a run's console as NDJSON (or server-sent events, for a client that
 * accepts text/event-stream: the dashboard), replayed from the first line, then
 * (with `follow`) live until the run ends. The last event is always `{type: "end", run}`.
 * Following itself (replay, live, backpressure) is console-follow.ts's.
 */
import type { FastifyReply, FastifyRequest } from 'fastify';
import { isFinal } from '../../core/index.js';
import type { JobStore, Run } from '../../store/index.js';
import type { ConsoleHub } from '../console-hub.js';
import { followConsole, type ConsoleSink } from '../console-follow.js';
import { eventFormat, startEventStream } from './event-writer.js';
import { presentRun } from './present.js';

/** A silent followed stream gets a keep-alive event this often, so clients and proxies never time it out. */
const KEEPALIVE_MS = 20_000;

/** Streams a run's console into the reply (which it takes over). */
export async function streamConsole(
  request: FastifyRequest, reply: FastifyReply, store: JobStore, hub: ConsoleHub, run: Run, follow: boolean, after = -1,
): Promise<void> {
  reply.hijack();
  // Headers go out now: a queued run may print nothing for a long time.
  const out = startEventStream(reply.raw, eventFormat(request.headers.accept));
  const keepalive = follow && !isFinal(run.status)
    ? setInterval(() => {
      if (!out.blocked) out.write({ type: 'keepalive' });
    }, KEEPALIVE_MS)
    : undefined;
  const sink: ConsoleSink = {
    line: (line) => out.write({ type: 'line', ...line }),
    get blocked() {
      return out.blocked;
    },
    get closed() {
      return out.closed;
    },
    drained: () => out.drained(),
    end: (ended) => out.end({ type: 'end', run: presentRun(ended) }),
    fail: (err) => {
      clearInterval(keepalive);
      request.log.error({ err, runId: run.id }, 'console stream failed');
      // Broken, not ended: the client may resume.
      reply.raw.destroy();
    },
    onClose: (listener) => reply.raw.on('close', () => {
      clearInterval(keepalive);
      listener();
    }),
  };
  await followConsole(store, hub, run, sink, follow, after).live;
  if (follow) request.log.debug({ runId: run.id }, 'observer following live');
}
