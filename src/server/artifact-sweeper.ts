/**
 * Artifact retention: a periodic sweep forgets the artifacts of runs the policy lets go (past the
 * newest N per job, or older than D), then deletes the blobs no artifact references any more.
 * A blob is deleted only when it is unreferenced and untouched for the grace period, so a blob
 * being uploaded (written, not yet referenced) or just re-used by an upload is never taken. The
 * grace counts from the store's `blobs` table, which every server's uploads touch (a file's mtime
 * would only tell about uploads that came to the server whose disk holds it).
 *
 * On several servers the periodic sweep runs on the holder of the `retention` lease only; a sweep
 * asked for by hand (`kiln artifacts gc`) runs on the server asked. Two sweeps at once on two
 * servers are safe: a blob is deleted only by the sweep whose forgetBlob removed its row.
 */
import type { Logger } from 'pino';
import { coerceError, ShuttingDownError, SweepBusyError } from '../errors.js';
import type { ExpiredArtifacts, JobStore, RetentionPolicy } from '../store/index.js';
import type { BlobStore } from './artifact-store.js';
import type { Lease } from './cluster/types.js';
import { createWakeLoop, type WakeLoop } from './wake-loop.js';

/** How long artifacts are kept, and how often the sweep runs. */
export interface RetentionSettings {
  /** Keep the artifacts of the newest N runs (with artifacts) of each job. */
  keepRuns?: number;
  /** Keep artifacts this long after their run ended (ms). */
  keepForMs?: number;
  /** Time between sweeps (ms). */
  sweepEveryMs: number;
  /** An unreferenced blob or temp file younger than this is left alone (ms). */
  graceMs: number;
}

export const DEFAULT_SWEEP_EVERY_MS = 60 * 60_000;
export const DEFAULT_BLOB_GRACE_MS = 60 * 60_000;

/** What a sweep deleted, or would delete. */
export interface SweepReport {
  dryRun: boolean;
  runs: ExpiredArtifacts[];
  blobs: { sha256: string; bytes: number }[];
  tempFiles: number;
}

/** Blobs checked against the store at a time. */
const BLOB_BATCH = 500;

/** What a sweeper needs besides its store and blobs. */
export interface SweeperOptions {
  now: () => number;
  settings: RetentionSettings;
  /** The `retention` lease (LEASE.retention): the periodic sweep runs only while it is held. Absent: always. */
  lease?: Lease;
}

export class ArtifactSweeper {
  private readonly loop: WakeLoop;
  /** The sweep in flight, if any, with the policy it applies (requests asking the same share it). */
  private current: { key: string; done: Promise<SweepReport> } | undefined;
  /** Aborted by stop(): an in-flight sweep ends at its next step instead of holding the shutdown. */
  private readonly abort = new AbortController();
  private stopped = false;
  /** Sweeps actually started (not shared), for logs and tests. */
  sweepsStarted = 0;
  /** Whether every stored blob was given its row if it had none (once per server life, by a complete listing). */
  private backfilled = false;
  private readonly now: () => number;
  readonly settings: RetentionSettings;
  private readonly unlisten: () => void;

  constructor(
    private readonly store: JobStore,
    private readonly blobs: BlobStore,
    private readonly log: Logger,
    options: SweeperOptions,
  ) {
    this.now = options.now;
    this.settings = options.settings;
    const { lease } = options;
    // A sweep longer apart than a timer can wait (~24.8 days) runs at that bound: sweeping more often than asked is harmless.
    this.loop = createWakeLoop(log, {
      body: () => this.periodicSweep(),
      now: options.now,
      retry: { retryMinMs: this.settings.sweepEveryMs, retryMaxMs: this.settings.sweepEveryMs },
      failureMessage: 'artifact sweep failed; trying again at the next one',
      gate: lease && (() => lease.held),
    });
    // A sweep in flight when the lease is lost runs to its end: its deletions are guarded by
    // forgetBlob, so another server's sweep at the same time deletes nothing twice.
    this.unlisten = lease?.onChange((held) => (held ? void this.loop.open() : this.loop.close())) ?? (() => undefined);
  }

  /** Sweeps now, then every `sweepEveryMs`. */
  start(): void {
    void this.loop.kick();
  }

  /** Stops the timer and aborts a sweep in flight; its waiting callers get ShuttingDownError. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.unlisten();
    this.abort.abort();
    await this.loop.stop();
    await this.current?.done.catch(() => undefined);
  }

  /** The periodic sweep; its failure waits for the next one (a failed sweep is not hurried). */
  private async periodicSweep(): Promise<number> {
    try {
      const report = await this.sweep(false);
      if (report.runs.length || report.blobs.length || report.tempFiles) {
        this.log.info({ runs: report.runs.length, blobs: report.blobs.length, bytes: report.blobs.reduce((n, b) => n + b.bytes, 0), tempFiles: report.tempFiles }, 'artifacts swept');
      }
    } catch (raw) {
      const err = coerceError(raw);
      // Another sweep running (a user's gc with its own policy) or a shutdown is no failure.
      if (err.code === 'KILN_ERR_SWEEP_BUSY' || err.code === 'KILN_ERR_SHUTTING_DOWN') this.log.debug({ err }, 'periodic artifact sweep skipped');
      else this.log.error({ err }, 'artifact sweep failed; trying again at the next one');
    }
    return this.now() + this.settings.sweepEveryMs;
  }

  /**
   * One sweep; `keep` replaces the configured policy for this sweep. Sweeps never overlap and never
   * queue: a call while a sweep with the same policy runs gets that sweep's report (each call would
   * otherwise wait for every one before it: hundreds of requests held a shutdown for minutes); a
   * call with another policy is refused (SweepBusyError) rather than queued.
   */
  sweep(dryRun: boolean, keep: Pick<RetentionSettings, 'keepRuns' | 'keepForMs'> = this.settings): Promise<SweepReport> {
    if (this.stopped) return Promise.reject(new ShuttingDownError('the server is shutting down: no artifact sweep now'));
    const key = JSON.stringify([dryRun, keep.keepRuns ?? null, keep.keepForMs ?? null]);
    if (this.current) {
      if (this.current.key !== key) return Promise.reject(new SweepBusyError());
      this.log.debug({ dryRun }, 'artifact sweep joined');
      return this.current.done;
    }
    this.sweepsStarted += 1;
    this.log.info({ dryRun, keepRuns: keep.keepRuns, keepForMs: keep.keepForMs, sweep: this.sweepsStarted }, 'artifact sweep started');
    const policy: RetentionPolicy = { keepRuns: keep.keepRuns, keptSince: keep.keepForMs === undefined ? undefined : this.now() - keep.keepForMs };
    const sweep = this.sweepsStarted;
    const done = this.sweepOnce(dryRun, policy).finally(() => {
      if (this.current?.done === done) this.current = undefined;
    });
    done.then(
      (report) => this.log.info({ sweep, runs: report.runs.length, blobs: report.blobs.length, tempFiles: report.tempFiles }, 'artifact sweep ended'),
      (raw) => this.log.info({ sweep, err: coerceError(raw) }, 'artifact sweep ended early'),
    );
    this.current = { key, done };
    return done;
  }

  /** Throws ShuttingDownError once stop() was called: checked between the sweep's steps. */
  private checkAborted(): void {
    if (this.abort.signal.aborted) throw new ShuttingDownError('the server is shutting down: the artifact sweep was stopped');
  }

  private async sweepOnce(dryRun: boolean, policy: RetentionPolicy): Promise<SweepReport> {
    // Let the caller see `current` set before any work (and any abort) happens.
    await Promise.resolve();
    this.checkAborted();
    const runs = await this.store.expiredArtifacts(policy);
    const runIds = runs.map((r) => r.runId);
    this.checkAborted();
    if (!dryRun) await this.store.deleteArtifacts(runIds);
    await this.backfill();
    const settledBefore = this.now() - this.settings.graceMs;
    const blobs: SweepReport['blobs'] = [];
    // staleBlobs pages oldest first. A real sweep leaves no row of a page stale (forgotten, or
    // touched now because still referenced: its grace then counts from its last reference), so the
    // next page is new rows; a dry run changes nothing, so it asks for the rows seen plus a batch.
    const seen = new Set<string>();
    for (let limit = BLOB_BATCH; ; limit = (dryRun ? seen.size : 0) + BLOB_BATCH) {
      this.checkAborted();
      const stale = await this.store.staleBlobs(settledBefore, limit);
      const fresh = stale.filter((sha) => !seen.has(sha));
      for (const sha of fresh) seen.add(sha);
      const gone = new Set(await this.store.unreferencedBlobs(fresh, dryRun ? runIds : []));
      for (const sha256 of fresh) {
        this.checkAborted();
        if (!gone.has(sha256)) {
          if (!dryRun) await this.store.touchBlob(sha256, (await this.blobs.size(sha256)) ?? 0, this.now());
          continue;
        }
        const bytes = (await this.blobs.size(sha256)) ?? 0;
        if (dryRun) {
          blobs.push({ sha256, bytes });
          continue;
        }
        // The row goes first: an upload re-using the blob since `settledBefore` has touched it,
        // and then keeps it (forgetBlob says false). One that touches it after the forget finds
        // its row new and stores the blob again (rename, PUT) whatever it finds; if that lands
        // before this delete, the blob is dated after `settledBefore` and deleteIfSettled keeps it.
        // What remains: in an S3 store, a PUT landing between deleteIfSettled's HEAD and DELETE.
        if (!(await this.store.forgetBlob(sha256, settledBefore))) continue;
        if (!(await this.blobs.deleteIfSettled(sha256, settledBefore))) continue;
        blobs.push({ sha256, bytes });
      }
      if (stale.length < limit || fresh.length === 0) break;
    }
    this.checkAborted();
    const tempFiles = await this.blobs.sweepTemp(settledBefore, dryRun);
    return { dryRun, runs, blobs, tempFiles };
  }

  /**
   * Blobs stored before the `blobs` table existed (an upgraded server) get their row, touched when
   * their file was written: without a row a blob is never swept. Every stored blob is listed at
   * the first sweep of each server life, whatever the table holds (uploads since the upgrade may
   * have filled it already); it is done again at the next sweep until one listing completes. A row
   * there keeps its later touch (touchBlob never moves back). A date this early deletes nothing
   * referenced (unreferencedBlobs decides) nor anything an upload is storing (its touch is later).
   * A blob a sweep forgot and is deleting gets a row here too: it is dropped at a later sweep,
   * but an S3 upload touching the blob after this row was made does not send it again (its row is
   * not new) and may lose it to that delete.
   */
  private async backfill(): Promise<void> {
    if (this.backfilled) return;
    let count = 0;
    for await (const blob of this.blobs.list()) {
      this.checkAborted();
      if (await this.store.touchBlob(blob.sha256, blob.size, Math.floor(blob.modifiedAt))) count += 1;
    }
    if (count > 0) this.log.info({ blobs: count }, 'artifact blobs without a row recorded for retention');
    this.backfilled = true;
  }
}
