/**
 * The server's event bus: what happened to runs, workers, platforms, jobs and pools, published
 * after the store has committed it. The run lifecycle, the job use cases, the worker registry, the
 * dispatcher and the pools publish; the console hub, the dispatcher, the outbox, the pools, the
 * scheduler (and later metrics and the dashboard) subscribe. Nobody is told by hand.
 *
 * Delivery is synchronous, in subscription order, before `publish` returns: a subscriber sees the
 * world as the publisher left it (a dispatcher kicked on `run.ended` sees the worker's slot free).
 * A subscriber that throws is logged and skipped; the publisher and the other subscribers go on.
 * Subscribers that need I/O start it and return (they must not hold the publisher).
 */
import type { Logger } from 'pino';
import type { RunStatus } from '../core/index.js';
import { coerceError } from '../errors.js';
import type { ConsoleRange, Run, StoredLine } from '../store/index.js';
import type { WorkerSession } from './worker-registry.js';

/**
 * The events, by name, with their payloads. With several servers on one database, the feed bridge
 * (cluster/feed-bridge.ts) sends some of them to the other servers, which publish them on their own
 * bus with `remote: true`: a subscriber that counts (metrics) or writes must skip remote ones; one
 * that only wakes a loop or tells a local worker takes both. A remote event carries ids and names
 * only: its `run` (run.dispatched, run.retried, run.cancel-requested) has just id, job, platform,
 * queuedAt, attempt, worker and deadlineAt; run.ended has no `run`.
 */
export interface KilnEvents {
  /**
   * Runs joined their platform's queue and wait there: first runs of a new job, an execute, a
   * schedule firing, or a run put back unstarted. Not published for a run queued and claimed in
   * the same commit (that one is `run.dispatched` at once). Subscribers: dispatcher (kicks), pools.
   */
  'run.queued': { runs: Pick<Run, 'id' | 'job' | 'platform'>[]; remote?: true };
  /** A run was sent to a worker (it is `running` on it). Subscriber: metrics (the wait in the queue). */
  'run.dispatched': { run: Run; worker: string; remote?: true };
  /** A worker that came back still holds this run: it goes on there. */
  'run.attached': { runId: string; worker: string; remote?: true };
  /**
   * Console lines of a run, in seq order (a worker's batch, or a server line: a retry's note, why
   * a run waits), `source` saying which. Subscribers: the console hub (observers at once, the store
   * in batches), metrics (lines received, the first line after dispatch).
   */
  'run.line': { runId: string; lines: StoredLine[]; source: 'worker' | 'server' };
  /**
   * A run reached a final state. `from` is the state it left: a run cancelled in the queue never
   * ran. `run` is the run as recorded after the end, when it ended through an attempt's end (from
   * `running`). Subscribers: console hub (observers end), dispatcher (kicks), outbox (wakes for
   * what core's forwardsOnEnd sends), pools, metrics (runs by `status`; `platform` when the run
   * was not read: a run cancelled with its platform, or by `kiln cancel`).
   */
  'run.ended': { runId: string; from: RunStatus; status: RunStatus; platform?: string; run?: Run; remote?: true };
  /**
   * A running run went back to the front of its queue as its next attempt (a retry), or as the
   * same attempt when it never started (`unstarted`). Subscribers: dispatcher (kicks), pools.
   */
  'run.retried': { run: Run; unstarted: boolean; remote?: true };
  /**
   * A run's worker was declared gone for it (the re-attach grace ran out, or the worker came back
   * as another process), and the store recorded it: `run.ended` or `run.retried` follows at once.
   */
  'run.lost': { runId: string; worker: string | undefined; reason: string };
  /** A cancel of a running run was recorded: its worker is asked to stop it. Subscriber: the worker registry. */
  'run.cancel-requested': { run: Run; reason: string; remote?: true };
  /** A worker connected and may be given runs. Subscriber: dispatcher (kicks). */
  'worker.joined': { session: WorkerSession };
  /** A worker's slot came free with no run ending (a result for a run that had already ended, or one it did not hold). Subscriber: dispatcher (kicks). */
  'worker.freed': { session: WorkerSession };
  /** A worker's connection is gone (or cut off). Subscribers: pools. */
  'worker.left': { session: WorkerSession };
  /** A platform was retired; its queued runs were cancelled. Subscriber: the worker registry. */
  'platform.dropped': { platform: string; cancelled: string[]; remote?: true };
  /** A drop was lifted. Subscribers: the worker registry, dispatcher (kicks). */
  'platform.undropped': { platform: string; remote?: true };
  /** A job was added, changed or removed: its next time may have moved. Subscriber: scheduler (wakes). */
  'job.changed': { name: string; remote?: true };
  /** A dispatch pass (or a direct enqueue) ended and none waits: runs and workers are matched as far as they go. Subscriber: pools. */
  'dispatch.idle': Record<string, never>;
  /** A pool started an instance (its worker has yet to connect). */
  'pool.instance.starting': { pool: string; instance: string; runId?: string };
  /** An instance an earlier life of this server left was taken over (its worker may come back). */
  'pool.instance.adopted': { pool: string; instance: string };
  /** A pool instance failed to start or to connect in time. */
  'pool.instance.failed': { pool: string; instance: string; error: string };
  /** A pool instance was stopped for good (its token revoked). */
  'pool.instance.stopped': { pool: string; instance: string; why: string };
  /** A worker's artifact file was stored for a run (after its size and sha256 were checked). Subscriber: metrics. */
  'artifact.stored': { runId: string; path: string; size: number };
  /**
   * The outbox tried to deliver a run to the upload target: `delivered`, `retrying` (it failed and
   * is tried again later) or `failed` (refused for good, or too many attempts). Subscriber: metrics.
   */
  'delivery.attempted': { runId: string; outcome: 'delivered' | 'retrying' | 'failed' };
  /** A delivery was queued again by hand (`kiln redeliver`). Subscriber: the outbox (wakes). */
  'delivery.queued': { runId: string; remote?: true };
  /**
   * A worker's connection (on whichever server holds it) must be cut: its token was revoked, or it
   * came back as another process. With `identity` (an identity key): the connections of that
   * identity (revoked); without: those named `name`, sparing the identity `keep` (the name was
   * given its own token) and the connection `except` (by its connId). `reason` is what the worker
   * is told. The publisher cuts its own at once; a gateway acts on remote ones. Subscriber: the gateway.
   */
  'worker.cut': { name: string; identity?: string; keep?: string; except?: string; reason: string; remote?: true };
  /** A worker joined or left another server. Subscribers: pools (evaluate), the reaper (kicks on left). */
  'worker.elsewhere': { name: string; platform: string; change: 'joined' | 'left'; remote: true };
  /** A server joined the farm, or left it (a clean stop, or found dead). Subscriber: the lease keeper (tries at once). */
  'server.joined': { id: string; url: string; remote?: true };
  'server.left': { id: string; url: string; remote?: true };
  /** A lease was let go on purpose (a clean stop). Subscriber: the lease keeper (tries at once). */
  'lease.released': { name: string; remote?: true };
  /**
   * Console lines of runs were committed by another server (the store's `console` feed message,
   * sent in the transaction that wrote them): observers here read them (seq > what they have).
   * Subscriber: the console hub. Only ever remote.
   */
  'console.committed': { ranges: ConsoleRange[]; remote: true };
  /**
   * The feed may have missed messages (its connection came back, or the periodic safety net): every
   * subscriber re-reads what it cares about (dispatcher, scheduler, outbox, pools, reaper, registry,
   * console hub). Every handler is idempotent.
   */
  'feed.resync': Record<string, never>;
}

/** An event's name. */
export type KilnEventName = keyof KilnEvents;

/** A subscriber of one event. */
export type Listener<K extends KilnEventName> = (payload: KilnEvents[K]) => void;

/** The bus the server's parts share. */
export interface EventBus {
  /** Delivers `payload` to every subscriber of `name`, synchronously; a subscriber's throw is logged. */
  publish<K extends KilnEventName>(name: K, payload: KilnEvents[K]): void;
  /** Subscribes; returns how to unsubscribe. */
  on<K extends KilnEventName>(name: K, listener: Listener<K>): () => void;
}

/** Creates a bus; `log` gets the throws of subscribers. */
export function createEventBus(log: Logger): EventBus {
  const listeners = new Map<KilnEventName, Set<(payload: unknown) => void>>();
  return {
    publish(name, payload) {
      // A copy: a subscriber that unsubscribes (or subscribes) meanwhile does not change this delivery.
      for (const listener of [...(listeners.get(name) ?? [])]) {
        try {
          listener(payload);
        } catch (raw) {
          log.error({ err: coerceError(raw), event: name }, 'an event subscriber failed');
        }
      }
    },
    on(name, listener) {
      let set = listeners.get(name);
      if (!set) listeners.set(name, (set = new Set()));
      const entry = listener as (payload: unknown) => void;
      set.add(entry);
      return () => {
        set.delete(entry);
      };
    },
  };
}
