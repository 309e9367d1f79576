/**
 * `GET /api/runs/:id/console`: a run's console as NDJSON, replayed from the first line, then
 * (with `follow`) live until the run ends. The last event is always `{type: "end", run}`.
 */
import type { FastifyReply, FastifyRequest } from 'fastify';
import { isFinal } from '../../core/index.js';
import type { JobStore, Run, StoredLine } from '../../store/index.js';
import type { ConsoleHub } from '../console-hub.js';
import { NdjsonWriter } from './ndjson-writer.js';
import { presentRun } from './present.js';

/** Lines read from the store per query while replaying. */
const PAGE = 5000;
/** Most lines held for a slow observer before it starts dropping. */
const MAX_QUEUED = 10_000;

/** Streams a run's console into the reply (which it takes over). */
export async function streamConsole(
  request: FastifyRequest, reply: FastifyReply, store: JobStore, hub: ConsoleHub, run: Run, follow: boolean,
): Promise<void> {
  reply.hijack();
  reply.raw.writeHead(200, { 'content-type': 'application/x-ndjson; charset=utf-8', 'cache-control': 'no-store', 'x-accel-buffering': 'no' });
  const out = new NdjsonWriter(reply.raw, MAX_QUEUED);
  let lastSeq = -1;
  const emit = (line: StoredLine) => {
    if (line.seq <= lastSeq) return;
    lastSeq = line.seq;
    out.write({ type: 'line', ...line });
  };
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

  if (!follow || isFinal(run.status)) return finish();

  // Subscribe before reading the store, so no line falls between the replay and the live feed.
  let live = false;
  let overflowed = false;
  let ended = false;
  const held: StoredLine[] = [];
  const subscription = hub.subscribe(run.id, {
    line: (line) => {
      if (live) emit(line);
      else if (held.length < MAX_QUEUED) held.push(line);
      else overflowed = true;
    },
    end: () => {
      ended = true;
      if (live) void finish();
    },
  });
  reply.raw.on('close', subscription.unsubscribe);

  // Whatever arrived before we subscribed is in the store after this flush.
  await hub.flush();
  await replay();
  while (overflowed && !out.closed) {
    overflowed = false;
    held.length = 0;
    await hub.flush();
    await replay();
  }
  for (const line of held) emit(line);
  live = true;
  if (ended || isFinal((await store.findRun(run.id)).status)) {
    subscription.unsubscribe();
    await finish();
  }
  request.log.debug({ runId: run.id }, 'observer following live');
}
