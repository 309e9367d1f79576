/**
 * Work dirs made before the runs that use them: taking one hands over a dir made while the worker
 * was idle and starts making the next, so a run's way to its first command has no mkdir on it
 * (an mkdtemp through libuv's thread pool takes 0.3 to 1 ms under load, bench/execute-latency.ts).
 * A dir waits at most SPARE_MAX_AGE_MS: an older one may have been swept by a /tmp cleaner, so it
 * is removed and a fresh one made instead.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import path from 'node:path';

/** How long a spare dir is trusted to still be there (ms). */
export const SPARE_MAX_AGE_MS = 10 * 60_000;

/** One spare work dir under `root`, made ahead. */
export class SpareWorkDirs {
  private spare: { dir: Promise<string>; madeAt: number } | undefined;
  private disposed = false;
  /** Removal of a spare too old to trust, running in the background. */
  private removing: Promise<void> = Promise.resolve();

  constructor(
    private readonly root: string,
    private readonly now: () => number = Date.now,
  ) {}

  /** A fresh empty dir (mode 0700) for a run; the next one is made ahead. Rejects as mkdtemp does. */
  async take(): Promise<string> {
    const spare = this.spare;
    this.spare = undefined;
    let dir: string | undefined;
    if (spare && this.now() - spare.madeAt <= SPARE_MAX_AGE_MS) dir = await spare.dir.catch(() => undefined);
    else if (spare) this.removing = spare.dir.then((old) => rm(old, { recursive: true, force: true })).catch(() => {});
    // No spare (the first run, or making it failed): made now, and a failure is this run's.
    dir ??= await this.make();
    this.makeSpare();
    return dir;
  }

  /** Resolves once the spare is made (or failed) and an old one removed; for tests and shutdown. */
  async settled(): Promise<void> {
    await this.spare?.dir.catch(() => undefined);
    await this.removing;
  }

  /** Removes the spare; no more are made. */
  async dispose(): Promise<void> {
    this.disposed = true;
    const spare = this.spare;
    this.spare = undefined;
    const dir = await spare?.dir.catch(() => undefined);
    if (dir) await rm(dir, { recursive: true, force: true }).catch(() => {});
    await this.removing;
  }

  private makeSpare(): void {
    // Two runs taking at once would each make one: the second is not needed.
    if (this.disposed || this.spare) return;
    const dir = this.make();
    dir.catch(() => {});
    this.spare = { dir, madeAt: this.now() };
  }

  private make(): Promise<string> {
    return mkdtemp(path.join(this.root, 'kiln-run-'));
  }
}
