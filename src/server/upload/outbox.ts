/**
 * The outbox: sends each finished run to the upload target, oldest first, one at a time. The
 * deliveries live in the store (written with the run's end), so nothing is lost when the target is
 * down or the server restarts; failures are retried with exponential backoff until the target
 * accepts the run, refuses it for good, or has failed it `maxAttempts` times (then the delivery is
 * `failed` with its last error, and `kiln redeliver RUN` queues it again). The limit is there
 * because some targets answer 500 to a payload they will never take (builder-web does, to Kiln's
 * multipart POST): without it such a delivery would be retried forever. Woken by `run.ended` (for
 * the runs core's forwardsOnEnd sends), `delivery.queued` (a redeliver), `feed.resync` and its own
 * timer, never a poll.
 *
 * With several servers it is a singleton (lease `outbox`): it sends only while this server holds
 * the lease, and claims each delivery with the lease's epoch before sending it. Its record is fenced
 * on that epoch: a server deposed meanwhile writes nothing and stops. A delivery left `sending` by
 * an older epoch (its sender died, or lost the lease mid-send) is claimed again and sent with the
 * same delivery id (`x-kiln-delivery`), so the receiver can tell a resend from a new delivery.
 */
import type { Logger } from 'pino';
import { backoffMs, forwardsOnEnd, type BackoffTimings } from '../../core/index.js';
import { coerceError } from '../../errors.js';
import type { Delivery, JobStore } from '../../store/index.js';
import type { BlobStore } from '../artifact-store.js';
import { LEASE, soloLeases, type Lease } from '../cluster/types.js';
import type { EventBus } from '../events.js';
import { storedConsole } from '../stored-console.js';
import { createWakeLoop, type WakeLoop } from '../wake-loop.js';
import type { DeliveryOutcome, UploadTarget } from './target.js';

/** Backoff bounds (ms) and the retry limit. */
export interface OutboxTimings {
  /** Wait after the first failure; doubles with each further one. */
  retryMinMs: number;
  /** Longest wait between attempts. */
  retryMaxMs: number;
  /** Attempts after which a delivery that keeps failing (5xx, no answer) is given up as `failed`. */
  maxAttempts: number;
}

/** 100 attempts with the default backoff: about 17 minutes of doubling, then 10 minutes apart, ~15 h in all. */
export const DEFAULT_OUTBOX_TIMINGS: OutboxTimings = { retryMinMs: 1000, retryMaxMs: 10 * 60_000, maxAttempts: 100 };

/** Longest single sleep (the store is read again after it). */
const MAX_SLEEP_MS = 60 * 60_000;
/** A store that cannot be read is tried again after 5 s, then less often while it lasts. */
const STORE_RETRY: BackoffTimings = { retryMinMs: 5000, retryMaxMs: 60_000 };

/** What an attempt leaves a delivery in: its state, when it is next due, and the error to record. */
export interface AttemptRecord {
  state: 'pending' | 'delivered' | 'failed';
  nextAt: number;
  error: string | null;
}

/**
 * The policy after attempt number `attempts` ended with `outcome` at `at`: delivered; failed at once
 * for a refusal; retried with backoff for a transient failure, until `maxAttempts`, then failed.
 */
export function afterAttempt(outcome: DeliveryOutcome, attempts: number, timings: OutboxTimings, at: number): AttemptRecord {
  if (outcome.kind === 'delivered') return { state: 'delivered', nextAt: at, error: null };
  if (outcome.kind === 'give-up') return { state: 'failed', nextAt: at, error: outcome.reason };
  if (attempts >= timings.maxAttempts) return { state: 'failed', nextAt: at, error: `gave up after ${attempts} attempts: ${outcome.reason}` };
  return { state: 'pending', nextAt: at + backoffMs(attempts, timings, { retryAfterMs: outcome.retryAfterMs }), error: outcome.reason };
}

/** What an outbox works with. */
export interface OutboxOptions {
  store: JobStore;
  /** Where runs go. */
  target: UploadTarget;
  /** Where the artifacts' files are. */
  blobs: BlobStore;
  /** `run.ended`, `delivery.queued` and `feed.resync` (local or remote) wake it; it publishes `delivery.attempted`. */
  events: EventBus;
  now: () => number;
  timings: OutboxTimings;
  /** The `outbox` lease: it sends only while held (default: held for good, epoch 0, as on a server alone on its store). */
  lease?: Lease;
}

/** Sends each finished run to the upload target (see the module's comment). */
export class Outbox {
  private readonly loop: WakeLoop;
  private stopped = false;
  /** Aborts the sends of the current holding of the lease (at its loss or at stop). */
  private abort = new AbortController();
  private readonly lease: Lease;
  private readonly store: JobStore;
  private readonly target: UploadTarget;
  private readonly blobs: BlobStore;
  private readonly now: () => number;
  private readonly timings: OutboxTimings;
  private readonly events: EventBus;

  constructor(private readonly log: Logger, options: OutboxOptions) {
    ({ store: this.store, target: this.target, blobs: this.blobs, now: this.now, timings: this.timings, events: this.events } = options);
    const { events, now } = options;
    const lease = (this.lease = options.lease ?? soloLeases().want(LEASE.outbox));
    this.loop = createWakeLoop(log, {
      body: () => this.drain(),
      now,
      maxSleepMs: MAX_SLEEP_MS,
      retry: STORE_RETRY,
      failureMessage: 'the outbox could not read the store; trying again',
      gate: () => lease.held,
    });
    lease.onChange((held) => {
      if (held) {
        this.abort = new AbortController();
        void this.loop.open();
      } else {
        // The send in flight is cut: the next holder sends it again (same delivery id); its record here would be refused anyway.
        this.abort.abort();
        this.loop.close();
      }
    });
    // The store wrote the delivery with the end, in the same transaction.
    events.on('run.ended', ({ from }) => {
      if (forwardsOnEnd(from)) this.wake();
    });
    events.on('delivery.queued', () => this.wake());
    events.on('feed.resync', () => this.wake());
  }

  /** Sends whatever is due (after a run ended, a redeliver, a start), and by itself when the next delivery is due. */
  wake(): void {
    void this.loop.kick();
  }

  /** Stops sending; an attempt in progress is aborted and retried after the next start. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.abort.abort();
    await this.loop.stop();
  }

  /** True while this holding of the lease (its epoch) may go on sending. */
  private acting(epoch: number): boolean {
    return !this.stopped && this.lease.held && this.lease.epoch === epoch;
  }

  /** Claims and sends every due delivery under the lease's epoch; resolves with when the next one is due. */
  private async drain(): Promise<number | undefined> {
    const { epoch } = this.lease;
    const { signal } = this.abort;
    const claim = () => this.store.claimDeliveries(this.now(), 16, epoch);
    for (let due = await claim(); due.length > 0 && this.acting(epoch); due = await claim()) {
      for (const delivery of due) {
        // Claimed but not sent: left `sending`, for the next holder (or the next life) to send.
        if (!this.acting(epoch)) return undefined;
        if (!(await this.attempt(delivery, epoch, signal))) return undefined;
      }
    }
    return this.store.nextDeliveryAt();
  }

  /**
   * One attempt at one claimed delivery, recorded whatever happens (unless cut by a stop or a lost
   * lease). False when the record was refused: a newer epoch holds the outbox, this server stops.
   */
  private async attempt(delivery: Delivery, epoch: number, signal: AbortSignal): Promise<boolean> {
    let outcome: DeliveryOutcome;
    try {
      const run = await this.store.findRun(delivery.runId);
      const artifacts = (await this.store.listArtifacts(run.id)).map((a) => ({ ...a, open: () => this.blobs.open(a.sha256) }));
      const store = this.store;
      const consoleLines = async function* () {
        for await (const line of storedConsole(store, run.id)) yield line.text;
      };
      const readConsole = (afterSeq: number, limit: number) => store.readConsole(run.id, afterSeq, limit);
      outcome = await this.target.deliver({ deliveryId: String(delivery.id), run, consoleLines, readConsole, artifacts, signal });
    } catch (raw) {
      // Recorded on the delivery itself, so one bad delivery cannot hold up the others.
      outcome = { kind: 'retry', reason: coerceError(raw).message };
    }
    // Cut by a stop or a lost lease: not an attempt of the delivery's; it stays `sending` and is sent again.
    if (signal.aborted && outcome.kind !== 'delivered') return false;
    const at = this.now();
    const attempts = delivery.attempts + 1;
    const log = this.log.child({ runId: delivery.runId, delivery: delivery.id, attempts });
    const record = afterAttempt(outcome, attempts, this.timings, at);
    if (!(await this.store.recordClaimedDeliveryAttempt(delivery.id, epoch, { ...record, at }))) {
      log.warn({ epoch, outcome: outcome.kind }, 'the outbox lease moved to another server: this attempt is not recorded here, and the new holder sends the delivery again with the same id');
      return false;
    }
    this.events.publish('delivery.attempted', { runId: delivery.runId, outcome: outcome.kind === 'delivered' ? 'delivered' : record.state === 'failed' ? 'failed' : 'retrying' });
    const target = this.target.description;
    if (outcome.kind === 'delivered') log.info({ target, ...(outcome.note ? { note: outcome.note } : {}) }, 'run delivered');
    else if (outcome.kind === 'give-up') log.error({ target, reason: outcome.reason }, 'the upload target refused the run; not retrying');
    else if (record.state === 'failed') log.error({ target, reason: outcome.reason }, 'delivery failed too many times; not retrying (kiln redeliver RUN sends it again)');
    else log.warn({ target, reason: outcome.reason, retryInMs: record.nextAt - at }, 'delivery failed; will retry');
    return true;
  }
}
