/**
 * `kiln import-robur`: a robur builder `state` file (reference robur-protocol.md §4) moved into
 * Kiln's store. Its schedule items become Kiln jobs (through job-mapping.ts) that keep their next
 * time, its platform queues become queued runs in the file's order, its dropped platforms are
 * dropped. A file is imported once: the sha256 of its bytes is recorded with what it took, so a
 * second import takes nothing, even after the runs it queued have finished.
 *
 * Decisions the format leaves open (README, "Moving a builder's state"):
 * - A job already in Kiln under the same name (builder's job identity) is left as it is, and reported.
 * - Queue entries are queued at the back, platform by platform in the file's order, so each
 *   platform's order is builder's (after whatever Kiln had queued already). A job is queued at
 *   most once per platform (Kiln's rule, builder's too): a repeat is reported as already queued.
 * - A queue entry whose job is not in the schedule: builder dispatches what its file's queues
 *   hold, scheduled or not, so it would run once. Kiln keeps that run: the job is added with
 *   period `never` (it runs again only by execute) and its run is queued.
 * - Dropped platforms are dropped first: builder had no queue and no script job for them, and a
 *   job or run the file still has for one is refused, as Kiln refuses any on a dropped platform.
 * - Legacy entries ([0] and [2] queue entries) are counted and ignored, as builder does.
 */
import { createHash } from 'node:crypto';
import type { Logger } from 'pino';
import { describeSchedule, firstAfter, isoInZone, isTimeInRange } from '../../core/index.js';
import { coerceError, KilnError } from '../../errors.js';
import { decodeState, type RoburJob, type RoburState } from '../../protocol/robur/index.js';
import type { Job, JobStore } from '../../store/index.js';
import { createJobBody, parse, platformParam } from '../api/schemas.js';
import type { JobService } from '../job-service.js';
import { jobInputOf } from './job-mapping.js';

/** The `kind` an imported state file is recorded under. */
export const ROBUR_STATE_KIND = 'robur-state';
/** Largest state file `POST /api/import/robur` takes (builder's holds every scheduled script; 1 MiB of JSON would not do). */
export const MAX_ROBUR_STATE_BYTES = 32 * 1024 * 1024;

/** A job the import added. */
export interface ImportedJob {
  name: string;
  kind: RoburJob['kind'];
  /** The platform its runs go to; null for an orb-build job (every platform with a template). */
  platform: string | null;
  /** The schedule, as `kiln jobs` says it (`daily`, `never`). */
  schedule: string;
  /** The next time kept from the file (ISO 8601); null: none (period never). */
  next: string | null;
  /** `schedule`: a schedule item; `queue`: only in a queue (added with period never, see above). */
  from: 'schedule' | 'queue';
}

/** A queue entry as the import saw it. */
export interface ImportedRun {
  platform: string;
  job: string;
  /** The run queued (or the one already queued). */
  run: string;
}

/** What one import took and kept (`POST /api/import/robur`'s reply). */
export interface RoburImportReport {
  /** The sha256 of the file's bytes, hex. */
  sha256: string;
  /** When this file was imported (ISO 8601): now, or at its first import. */
  importedAt: string;
  /** True when the file was imported before: nothing was taken now (the lists are empty; `took` says what the first import took). */
  alreadyImported: boolean;
  /** On a repeat: the first import's report. */
  took?: RoburImportReport;
  jobs: {
    added: ImportedJob[];
    /** Names already in Kiln: left as they are. */
    present: string[];
  };
  runs: {
    /** Queued now, in each platform's order. */
    queued: ImportedRun[];
    /** The job was queued on that platform already (one queued run per job and platform). */
    alreadyQueued: ImportedRun[];
  };
  platforms: {
    dropped: string[];
    alreadyDropped: string[];
  };
  /** What was not taken, each with the reason (a name Kiln does not accept, a dropped platform, ...). */
  refused: { item: string; reason: string }[];
  /** Legacy entries ([0] and [2] queue entries) read and ignored, as builder ignores them. */
  legacy: number;
}

/** What the import works with. */
export interface RoburStateImportOptions {
  store: Pick<JobStore, 'findImport' | 'recordImport' | 'getJob' | 'listDroppedPlatforms'>;
  jobService: Pick<JobService, 'schedule' | 'execute' | 'dropPlatform'>;
  now: () => number;
}

/** Times as the API shows them (UTC, `Z`, milliseconds only when there are some). */
const iso = (ms: number) => isoInZone(ms);

/** The reason a step was refused, when it is the item's fault (a KilnError below 500); anything else is the server's and propagates. */
function refusal(raw: unknown): string {
  const err = coerceError(raw);
  if (err instanceof KilnError && err.status < 500) return err.message;
  throw err;
}

/** Imports builder state files. */
export class RoburStateImport {
  constructor(private readonly log: Logger, private readonly options: RoburStateImportOptions) {}

  /**
   * Imports a state file's bytes. Throws RoburDecodeError (400) for bytes that are not one. A
   * failure part way (the store gone) records nothing: imported again, the file takes what is
   * left (jobs present by name, runs still queued are not taken twice).
   */
  async importFile(bytes: Buffer): Promise<RoburImportReport> {
    const sha256 = createHash('sha256').update(bytes).digest('hex');
    const previous = await this.options.store.findImport(sha256);
    if (previous) return this.repeat(previous.report as RoburImportReport, previous.importedAt);
    const state = decodeState(bytes);
    const report = await this.importState(state, sha256);
    const recorded = await this.options.store.recordImport({ sha256, kind: ROBUR_STATE_KIND, importedAt: Date.parse(report.importedAt), report });
    // Two imports of one file at once: both did their (idempotent) steps; the first record stands.
    if (!recorded) this.log.info({ sha256 }, 'robur state imported concurrently; the first record stands');
    this.log.info({
      sha256, jobs: report.jobs.added.length, present: report.jobs.present.length, queued: report.runs.queued.length,
      dropped: report.platforms.dropped.length, refused: report.refused.length, legacy: report.legacy,
    }, 'robur state imported');
    return report;
  }

  private repeat(took: RoburImportReport, importedAt: number): RoburImportReport {
    return {
      sha256: took.sha256, importedAt: iso(importedAt), alreadyImported: true, took,
      jobs: { added: [], present: [] }, runs: { queued: [], alreadyQueued: [] }, platforms: { dropped: [], alreadyDropped: [] }, refused: [], legacy: took.legacy,
    };
  }

  /** Takes a decoded state into the store (see the file's comment for the order and the decisions). */
  async importState(state: RoburState, sha256: string): Promise<RoburImportReport> {
    const now = this.options.now();
    const report: RoburImportReport = {
      sha256, importedAt: iso(now), alreadyImported: false,
      jobs: { added: [], present: [] }, runs: { queued: [], alreadyQueued: [] }, platforms: { dropped: [], alreadyDropped: [] }, refused: [], legacy: state.ignoredLegacy,
    };
    const refuse = (item: string, reason: string) => report.refused.push({ item, reason });

    const dropped = new Set((await this.options.store.listDroppedPlatforms()).map((d) => d.platform));
    for (const platform of new Set(state.dropped)) {
      try {
        parse(platformParam, { platform }, 'platform');
        if (dropped.has(platform)) {
          report.platforms.alreadyDropped.push(platform);
          continue;
        }
        await this.options.jobService.dropPlatform(platform);
        report.platforms.dropped.push(platform);
      } catch (raw) {
        refuse(`dropped platform ${platform}`, refusal(raw));
      }
    }

    /** Kiln's job of each name the file uses (added or present); absent: refused. */
    const jobs = new Map<string, Job>();
    const take = async (job: RoburJob, period: RoburState['schedule'][number]['period'], next: number | undefined, from: ImportedJob['from']) => {
      const name = job.job.name;
      try {
        const present = await this.options.store.getJob(name);
        if (present) {
          jobs.set(name, present);
          report.jobs.present.push(name);
          return;
        }
        const input = parse(createJobBody, jobInputOf(job, period), `job ${name}`);
        // builder's `never` is Ptime.max, never due: Kiln says so with no next time.
        const nextAt = period === 'never' || next === undefined ? null : isTimeInRange(next) ? next : firstAfter(input.schedule!, now) ?? null;
        const added = (await this.options.jobService.schedule(input, { nextAt })).job;
        jobs.set(name, added);
        report.jobs.added.push({
          name, kind: job.kind, platform: added.platform, schedule: describeSchedule(added.schedule) ?? period, next: added.nextAt === null ? null : iso(added.nextAt), from,
        });
      } catch (raw) {
        if (coerceError(raw).code === 'KILN_ERR_JOB_EXISTS') {
          // Added meanwhile by someone else: present, as above.
          const present = await this.options.store.getJob(name);
          if (present) {
            jobs.set(name, present);
            report.jobs.present.push(name);
            return;
          }
        }
        refuse(`job ${name}`, refusal(raw));
      }
    };

    const seen = new Set<string>();
    for (const item of state.schedule) {
      // Names are unique in builder's schedule; a file that repeats one keeps the first, as a Kiln name is one job.
      if (seen.has(item.job.job.name)) {
        refuse(`job ${item.job.job.name}`, 'the file schedules this name twice; the first is taken');
        continue;
      }
      seen.add(item.job.job.name);
      await take(item.job, item.period, item.next, 'schedule');
    }

    for (const queue of state.queues) {
      for (const entry of queue.jobs) {
        const name = entry.job.name;
        const item = `queue entry ${name} on ${queue.platform}`;
        if (!seen.has(name)) {
          seen.add(name);
          await take(entry, 'never', undefined, 'queue');
        }
        const job = jobs.get(name);
        if (!job) {
          refuse(item, 'its job was not taken (see above)');
          continue;
        }
        // A template job (an orb-build job) runs on any platform: builder queued it for this one.
        if (job.platform !== null && job.platform !== queue.platform) {
          refuse(item, `job ${name} runs on ${job.platform}, not ${queue.platform}`);
          continue;
        }
        try {
          parse(platformParam, { platform: queue.platform }, 'platform');
          const { runs: [run], created } = await this.options.jobService.execute(name, queue.platform, 'back');
          (created ? report.runs.queued : report.runs.alreadyQueued).push({ platform: queue.platform, job: name, run: run!.id });
        } catch (raw) {
          refuse(item, refusal(raw));
        }
      }
    }
    return report;
  }
}
