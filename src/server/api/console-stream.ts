/**
 * `GET /api/runs/:id/console`: a run's console as NDJSON (or server-sent events, for a client that
 * accepts text/event-stream: the dashboard), replayed from the first line, then
 * (with `follow`) live until the run ends. The last event is always `{type: "end", run}`.
 *
 * A slow observer never slows the run or grows the server's memory: while its socket pushes
 * back, live lines for it are not buffered beyond a bound; once it drains, it catches up from the
 * store (where every line is kept) and then follows live again. So it loses nothing either.
 */
import type { FastifyReply, FastifyRequest } from 'fastify';
import { isFinal } from '../../core/index.js';
import { coerceError } from '../../errors.js';
import type { JobStore, Run, StoredLine } from '../../store/index.js';
import type { ConsoleHub } from '../console-hub.js';
import { eventFormat, startEventStream } from './event-writer.js';
import { presentRun } from './present.js';

/** Lines read from the store per query while replaying (the memory an observer may cost). */
const PAGE = 1000;
/** Most live lines held for an observer that is catching up before it re-reads the store instead. */
const MAX_HELD = 1000;
/** A silent followed stream gets a keep-alive event this often, so clients and proxies never time it out. */
const KEEPALIVE_MS = 20_000;

/** Streams a run's console into the reply (which it takes over). */
export async function streamConsole(
  request: FastifyRequest, reply: FastifyReply, store: JobStore, hub: ConsoleHub, run: Run, follow: boolean, after = -1,
): Promise<void> {
  reply.hijack();
  // Headers go out now: a queued run may print nothing for a long time.
  const out = startEventStream(reply.raw, eventFormat(request.headers.accept));
  let lastSeq = after;
  const emit = (line: StoredLine) => {
    if (line.seq <= lastSeq) return;
    lastSeq = line.seq;
    out.write({ type: 'line', ...line });
  };
  /** Sends stored lines after the last one sent, paced by the client. */
  const replay = async () => {
    for (;;) {
      const page = await store.readConsole(run.id, lastSeq, PAGE);
      for (const line of page) emit(line);
      await out.drained();
      if (page.length < PAGE || out.closed) return;
    }
  };
  const finish = async () => {
    await replay();
    out.end({ type: 'end', run: presentRun(await store.findRun(run.id)) });
  };
  /** A store error while streaming ends this stream (the client sees it broken and may resume), never the server. */
  const guarded = (work: () => Promise<void>) => (): Promise<void> =>
    work().catch((raw) => {
      request.log.error({ err: coerceError(raw), runId: run.id }, 'console stream failed');
      reply.raw.destroy();
    });

  if (!follow || isFinal(run.status)) return finish();

  let live = false;
  let catchingUp: Promise<void> | undefined;
  let ended = false;
  let held: StoredLine[] = [];
  let overflowed = false;

  /** Replays from the store until no line is missing, then goes live with what was held meanwhile. */
  const catchUp = async () => {
    live = false;
    do {
      overflowed = false;
      held = [];
      await out.drained();
      // After this flush every line received so far is in the store; later ones are held.
      await hub.flush();
      await replay();
    } while (overflowed && !out.closed);
    // Lines written from now on by another server are read for it after what the replay sent.
    subscription.caughtUp(lastSeq);
    for (const line of held) emit(line);
    held = [];
    live = true;
    catchingUp = undefined;
    if (ended || isFinal((await store.findRun(run.id)).status)) {
      subscription.unsubscribe();
      await finish();
    }
  };

  const subscription = hub.subscribe(run.id, {
    line: (line) => {
      if (live && !out.blocked) return emit(line);
      if (held.length < MAX_HELD) held.push(line);
      else overflowed = true;
      if (live) catchingUp ??= guarded(catchUp)();
    },
    end: () => {
      ended = true;
      if (live) void guarded(finish)();
    },
    // The hub dropped it: no more lines would come, so the stream ends broken (the client may resume).
    abort: () => {
      clearInterval(keepalive);
      reply.raw.destroy();
    },
  });
  const keepalive = setInterval(() => {
    if (!out.blocked) out.write({ type: 'keepalive' });
  }, KEEPALIVE_MS);
  reply.raw.on('close', () => {
    clearInterval(keepalive);
    subscription.unsubscribe();
  });
  catchingUp = guarded(catchUp)();
  await catchingUp;
  request.log.debug({ runId: run.id }, 'observer following live');
}
