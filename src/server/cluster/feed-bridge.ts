/**
 * The feed bridge (notes/issue16-plan.md §3.1): with several servers on one PostgreSQL schema, the
 * bus's events that other servers care about go out on the schema's feed (a NOTIFY, store/feed.ts)
 * after their commit, and the other servers' come in and are published on this bus with
 * `remote: true`. Sending is fire and forget: a NOTIFY lost (a crash between the commit and the
 * send, PostgreSQL unreachable) is covered by the resync every 10 s, which every subscriber answers
 * by re-reading what it cares about. Console ranges are sent by the store itself, in the
 * transaction that writes the lines; they come in as `console.committed`.
 *
 * Only what a remote subscriber needs goes out: ids and names, never a run's body (a remote
 * `run` carries id, job, platform, queuedAt, attempt, worker, deadlineAt), and a list too long for
 * one NOTIFY is split over several.
 */
import type { Logger } from 'pino';
import { coerceError } from '../../errors.js';
import { CONSOLE_FEED_KIND, FEED_PAYLOAD_MAX, type ConsoleRange, type FeedMessage } from '../../store/feed.js';
import type { Run } from '../../store/index.js';
import type { Presence } from '../../store/postgres/presence.js';
import type { EventBus, KilnEventName, KilnEvents } from '../events.js';

/** The safety net: a resync this often, for a message lost between a commit and its NOTIFY (ms). */
export const RESYNC_EVERY_MS = 10_000;

/** What the bridge needs of the presence. */
export type FeedPresence = Pick<Presence, 'serverId' | 'notify' | 'onMessage' | 'onResync'>;

/** The part of a run a remote subscriber may read (the event stream, the registry's cancel, the reaper's deadline). */
function runHead(run: Partial<Run> & Pick<Run, 'id'>): Partial<Run> {
  return { id: run.id, job: run.job, platform: run.platform, queuedAt: run.queuedAt, attempt: run.attempt, worker: run.worker, deadlineAt: run.deadlineAt };
}

type Outgoing = { [K in KilnEventName]?: (payload: KilnEvents[K]) => { kind: string; data: Record<string, unknown>; split?: string } };

/** The events sent to the other servers, each as the data it carries (`split`: the list to cut when too long). */
const OUTGOING: Outgoing = {
  'run.queued': ({ runs }) => ({ kind: 'run.queued', data: { runs: runs.map((r) => ({ id: r.id, job: r.job, platform: r.platform })) }, split: 'runs' }),
  'run.retried': ({ run, unstarted }) => ({ kind: 'run.retried', data: { run: runHead(run), unstarted } }),
  'run.ended': ({ runId, from, status, platform, run }) => ({ kind: 'run.ended', data: { runId, from, status, platform: platform ?? run?.platform } }),
  'run.dispatched': ({ run, worker }) => ({ kind: 'run.dispatched', data: { run: runHead(run), worker } }),
  'run.attached': ({ runId, worker }) => ({ kind: 'run.attached', data: { runId, worker } }),
  'run.cancel-requested': ({ run, reason }) => ({ kind: 'run.cancel-requested', data: { run: runHead(run), reason } }),
  'platform.dropped': ({ platform, cancelled }) => ({ kind: 'platform.dropped', data: { platform, cancelled }, split: 'cancelled' }),
  'platform.undropped': ({ platform }) => ({ kind: 'platform.undropped', data: { platform } }),
  'job.changed': ({ name }) => ({ kind: 'job.changed', data: { name } }),
  'delivery.queued': ({ runId }) => ({ kind: 'delivery.queued', data: { runId } }),
  'worker.cut': ({ name, identity, keep, except, reason }) => ({ kind: 'worker.cut', data: { name, identity, keep, except, reason } }),
  'lease.released': ({ name }) => ({ kind: 'lease.released', data: { name } }),
  'server.joined': ({ id, url }) => ({ kind: 'server.joined', data: { id, url } }),
  'server.left': ({ id, url }) => ({ kind: 'server.left', data: { id, url } }),
  'worker.joined': ({ session }) => ({ kind: 'worker.joined', data: { name: session.name, platform: session.platform } }),
  'worker.left': ({ session }) => ({ kind: 'worker.left', data: { name: session.name, platform: session.platform } }),
};

/** The kinds published as they came (with `remote: true`); the workers' become `worker.elsewhere`, the store's `console.committed`. */
const INCOMING = new Set<string>([
  'run.queued', 'run.retried', 'run.ended', 'run.dispatched', 'run.attached', 'run.cancel-requested', 'platform.dropped', 'platform.undropped',
  'job.changed', 'delivery.queued', 'worker.cut', 'lease.released', 'server.joined', 'server.left',
]);

/**
 * The messages to send for one event: one, or its `split` list cut in halves until each message
 * fits a NOTIFY. A message that cannot be made to fit is dropped (logged by the caller).
 */
export function feedPayloads(serverId: string, kind: string, data: Record<string, unknown>, split?: string): string[] {
  const message: FeedMessage = { s: serverId, k: kind, d: data };
  const text = JSON.stringify(message);
  if (Buffer.byteLength(text) <= FEED_PAYLOAD_MAX) return [text];
  const list = split === undefined ? undefined : data[split];
  if (!Array.isArray(list) || list.length < 2) return [];
  const half = Math.ceil(list.length / 2);
  return [
    ...feedPayloads(serverId, kind, { ...data, [split!]: list.slice(0, half) }, split),
    ...feedPayloads(serverId, kind, { ...data, [split!]: list.slice(half) }, split),
  ];
}

/** The bridge between this server's bus and the feed; `stop()` at shutdown. */
export class FeedBridge {
  private readonly unsubscribe: (() => void)[] = [];
  private resyncTimer: NodeJS.Timeout | undefined;
  private stopped = false;

  constructor(
    private readonly presence: FeedPresence,
    private readonly events: EventBus,
    private readonly log: Pick<Logger, 'warn' | 'debug'>,
    private readonly resyncEveryMs = RESYNC_EVERY_MS,
  ) {}

  /** Subscribes both ways, starts the periodic resync, and tells the farm this server joined. */
  start(url: string): void {
    for (const name of Object.keys(OUTGOING) as KilnEventName[]) {
      const present = OUTGOING[name] as (payload: KilnEvents[typeof name]) => { kind: string; data: Record<string, unknown>; split?: string };
      this.unsubscribe.push(this.events.on(name, (payload) => {
        if ((payload as { remote?: true }).remote) return;
        const { kind, data, split } = present(payload);
        void this.send(kind, data, split);
      }));
    }
    this.unsubscribe.push(this.presence.onMessage((payload) => this.receive(payload)));
    this.unsubscribe.push(this.presence.onResync(() => this.events.publish('feed.resync', {})));
    this.resyncTimer = setInterval(() => this.events.publish('feed.resync', {}), this.resyncEveryMs);
    this.resyncTimer.unref();
    this.events.publish('server.joined', { id: this.presence.serverId, url });
  }

  /** Sends one event's messages; resolves (never rejects) once sent or logged as failed. */
  async send(kind: string, data: Record<string, unknown>, split?: string): Promise<void> {
    const payloads = feedPayloads(this.presence.serverId, kind, data, split);
    if (payloads.length === 0) this.log.warn({ event: kind }, 'an event too large for the feed was not sent to the other servers; the next resync covers it');
    for (const payload of payloads) {
      try {
        await this.presence.notify(payload);
      } catch (raw) {
        this.log.warn({ err: coerceError(raw).message, event: kind }, 'could not send an event to the other servers; the next resync covers it');
        return;
      }
    }
  }

  /** Tells the farm this server leaves (a clean stop; awaited), then stops both ways. */
  async stop(url: string): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    clearInterval(this.resyncTimer);
    await this.send('server.left', { id: this.presence.serverId, url });
    for (const off of this.unsubscribe) off();
  }

  /** One message from the feed: another server's event published here as remote; our own dropped. */
  private receive(payload: string): void {
    let message: FeedMessage;
    try {
      message = JSON.parse(payload) as FeedMessage;
    } catch {
      this.log.warn({ payload: payload.slice(0, 200) }, 'a feed message that is not JSON was ignored');
      return;
    }
    if (message.s === this.presence.serverId || typeof message.d !== 'object' || message.d === null) return;
    const data = message.d as Record<string, unknown>;
    if (message.k === CONSOLE_FEED_KIND) {
      this.events.publish('console.committed', { ranges: message.d as unknown as ConsoleRange[], remote: true });
    } else if (message.k === 'worker.joined' || message.k === 'worker.left') {
      this.events.publish('worker.elsewhere', {
        name: String(data.name), platform: String(data.platform), change: message.k === 'worker.joined' ? 'joined' : 'left', remote: true,
      });
    } else if (INCOMING.has(message.k)) {
      this.events.publish(message.k as KilnEventName, { ...data, remote: true } as never);
    } else {
      this.log.debug({ event: message.k }, 'a feed message of a kind this server does not know was ignored');
    }
  }
}
