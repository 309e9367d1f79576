/**
 * Artifact retention: a periodic sweep forgets the artifacts of runs the policy lets go (past the
 * newest N per job, or older than D), then deletes the blobs no artifact references any more.
 * A blob is deleted only when it is unreferenced and untouched for the grace period, so a blob
 * being uploaded (written, not yet referenced) or just re-used by an upload is never taken.
 */
import { readdir, stat, unlink } from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from 'pino';
import { isSha256 } from '../core/index.js';
import { coerceError, ShuttingDownError, SweepBusyError } from '../errors.js';
import type { ExpiredArtifacts, JobStore, RetentionPolicy } from '../store/index.js';
import type { ArtifactStore } from './artifact-store.js';
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

export class ArtifactSweeper {
  private readonly loop: WakeLoop;
  /** The sweep in flight, if any, with the policy it applies (requests asking the same share it). */
  private current: { key: string; done: Promise<SweepReport> } | undefined;
  /** Aborted by stop(): an in-flight sweep ends at its next step instead of holding the shutdown. */
  private readonly abort = new AbortController();
  private stopped = false;
  /** Sweeps actually started (not shared), for logs and tests. */
  sweepsStarted = 0;

  constructor(
    private readonly store: JobStore,
    private readonly blobs: ArtifactStore,
    private readonly log: Logger,
    private readonly now: () => number,
    readonly settings: RetentionSettings,
  ) {
    // A sweep longer apart than a timer can wait (~24.8 days) runs at that bound: sweeping more often than asked is harmless.
    this.loop = createWakeLoop(log, {
      body: () => this.periodicSweep(),
      now,
      retry: { retryMinMs: settings.sweepEveryMs, retryMaxMs: settings.sweepEveryMs },
      failureMessage: 'artifact sweep failed; trying again at the next one',
    });
  }

  /** Sweeps now, then every `sweepEveryMs`. */
  start(): void {
    void this.loop.kick();
  }

  /** Stops the timer and aborts a sweep in flight; its waiting callers get ShuttingDownError. */
  async stop(): Promise<void> {
    this.stopped = true;
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
      return this.current.key === key ? this.current.done : Promise.reject(new SweepBusyError());
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
    const settledBefore = this.now() - this.settings.graceMs;
    const blobs: SweepReport['blobs'] = [];
    let batch: { sha256: string; file: string; bytes: number }[] = [];
    const flush = async () => {
      const gone = new Set(await this.store.unreferencedBlobs(batch.map((b) => b.sha256), dryRun ? runIds : []));
      for (const blob of batch.filter((b) => gone.has(b.sha256))) {
        if (dryRun || (await this.removeIfSettled(blob.file, settledBefore))) blobs.push({ sha256: blob.sha256, bytes: blob.bytes });
      }
      batch = [];
    };
    for await (const blob of this.settledBlobs(settledBefore)) {
      this.checkAborted();
      batch.push(blob);
      if (batch.length >= BLOB_BATCH) await flush();
    }
    if (batch.length > 0) await flush();
    let tempFiles = 0;
    const tmp = path.join(this.blobs.dir, 'tmp');
    for (const name of await readdir(tmp).catch(() => [])) {
      this.checkAborted();
      // A temp file this old belongs to an upload that died with its server.
      if (dryRun ? await this.isSettled(path.join(tmp, name), settledBefore) : await this.removeIfSettled(path.join(tmp, name), settledBefore)) tempFiles += 1;
    }
    return { dryRun, runs, blobs, tempFiles };
  }

  /** Blob files not modified since `before`. */
  private async *settledBlobs(before: number): AsyncGenerator<{ sha256: string; file: string; bytes: number }> {
    for (const shard of await readdir(this.blobs.dir)) {
      if (!/^[0-9a-f]{2}$/.test(shard)) continue;
      for (const name of await readdir(path.join(this.blobs.dir, shard)).catch(() => [])) {
        this.checkAborted();
        if (!isSha256(name)) continue;
        const file = path.join(this.blobs.dir, shard, name);
        const stats = await stat(file).catch(() => undefined);
        if (stats && stats.mtimeMs < before) yield { sha256: name, file, bytes: stats.size };
      }
    }
  }

  private async isSettled(file: string, before: number): Promise<boolean> {
    const stats = await stat(file).catch(() => undefined);
    return stats !== undefined && stats.mtimeMs < before;
  }

  /** Deletes `file` if it is still untouched since `before` (an upload may have just re-used it). */
  private async removeIfSettled(file: string, before: number): Promise<boolean> {
    if (!(await this.isSettled(file, before))) return false;
    return unlink(file).then(() => true, () => false);
  }
}
