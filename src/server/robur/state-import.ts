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
 *
 * All of it is one store transaction (JobStore.importState) with the file's record: an import cut
 * off part way takes nothing and records nothing, and of two imports of one file at once one takes
 * it, the other finds it imported. What can be decided from the file alone (names, platforms, the
 * jobs as Kiln builds them) is planned first; what depends on the store (a job present, a platform
 * dropped, a job queued already) is decided in the transaction, by the same walk of the file.
 */
import { createHash } from 'node:crypto';
import type { Logger } from 'pino';
import { describeSchedule, firstAfter, isoInZone, isTimeInRange } from '../../core/index.js';
import { coerceError, KilnError, PlatformDroppedError } from '../../errors.js';
import { decodeState, type RoburJob, type RoburPeriod, type RoburState } from '../../protocol/robur/index.js';
import type { ImportJobOutcome, ImportPlan, ImportWrites, Job, JobStore, NewRun } from '../../store/index.js';
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
  store: Pick<JobStore, 'findImport'>;
  jobService: Pick<JobService, 'newJob' | 'newRun' | 'importState'>;
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

/** One step of the walk of a file, in its order, as planned from the file alone. */
type Step =
  /** A dropped platform; `refused`: a name Kiln does not accept. */
  | { kind: 'drop'; platform: string; refused?: string }
  /** A job the file names (first seen); `job` absent: refused for `refused` unless one of the name is present. */
  | { kind: 'job'; name: string; robur: RoburJob; period: RoburPeriod; from: ImportedJob['from']; job?: Job; refused?: string }
  /** Something refused whatever the store holds. */
  | { kind: 'refuse'; item: string; reason: string }
  /** A queue entry; `refused`: its platform is a name Kiln does not accept. */
  | { kind: 'entry'; platform: string; name: string; refused?: string };

/** Imports builder state files. */
export class RoburStateImport {
  constructor(private readonly log: Logger, private readonly options: RoburStateImportOptions) {}

  /**
   * Imports a state file's bytes, all or nothing. Throws RoburDecodeError (400) for bytes that are
   * not one. A failure part way (the store gone) records nothing and takes nothing: imported again,
   * the file is taken whole.
   */
  async importFile(bytes: Buffer): Promise<RoburImportReport> {
    const sha256 = createHash('sha256').update(bytes).digest('hex');
    const previous = await this.options.store.findImport(sha256);
    if (previous) return this.repeat(previous.report as RoburImportReport, previous.importedAt);
    const state = decodeState(bytes);
    const imported = await this.options.jobService.importState(this.plan(state, sha256));
    if (!imported.recorded) {
      // Imported meanwhile by a concurrent import of the file, which committed first: this one took nothing.
      this.log.info({ sha256 }, 'robur state imported concurrently; the first import stands');
      return this.repeat(imported.previous.report as RoburImportReport, imported.previous.importedAt);
    }
    const report = imported.report as RoburImportReport;
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

  /** The import of a decoded state as one store transaction (see the file's comment for the order and the decisions). */
  plan(state: RoburState, sha256: string): ImportPlan {
    const now = this.options.now();
    const steps = this.walk(state, now);
    const entries = steps.filter((step) => step.kind === 'entry');
    return {
      record: { sha256, kind: ROBUR_STATE_KIND, importedAt: now },
      drops: steps.flatMap((step) => (step.kind === 'drop' && step.refused === undefined ? [step.platform] : [])),
      jobs: steps.flatMap((step) => (step.kind === 'job' ? [{ name: step.name, job: step.job }] : [])),
      queue: (jobs) => entries.flatMap((entry) => {
        const decided = decideEntry(entry, jobs);
        return 'job' in decided ? [this.options.jobService.newRun(decided.job, entry.platform)] : [];
      }),
      report: (writes) => reportOf(steps, writes, { sha256, importedAt: iso(now), legacy: state.ignoredLegacy }),
    };
  }

  /** The file's items in the order they are taken, with what the file alone decides. */
  private walk(state: RoburState, now: number): Step[] {
    const steps: Step[] = [];
    for (const platform of new Set(state.dropped)) {
      try {
        parse(platformParam, { platform }, 'platform');
        steps.push({ kind: 'drop', platform });
      } catch (raw) {
        steps.push({ kind: 'drop', platform, refused: refusal(raw) });
      }
    }
    const job = (robur: RoburJob, period: RoburPeriod, next: number | undefined, from: ImportedJob['from']): Step => {
      const name = robur.job.name;
      try {
        const input = parse(createJobBody, jobInputOf(robur, period), `job ${name}`);
        // builder's `never` is Ptime.max, never due: Kiln says so with no next time.
        const nextAt = period === 'never' || next === undefined ? null : isTimeInRange(next) ? next : firstAfter(input.schedule!, now) ?? null;
        return { kind: 'job', name, robur, period, from, job: this.options.jobService.newJob(input, { nextAt }) };
      } catch (raw) {
        return { kind: 'job', name, robur, period, from, refused: refusal(raw) };
      }
    };
    const seen = new Set<string>();
    for (const item of state.schedule) {
      const name = item.job.job.name;
      // Names are unique in builder's schedule; a file that repeats one keeps the first, as a Kiln name is one job.
      if (seen.has(name)) {
        steps.push({ kind: 'refuse', item: `job ${name}`, reason: 'the file schedules this name twice; the first is taken' });
        continue;
      }
      seen.add(name);
      steps.push(job(item.job, item.period, item.next, 'schedule'));
    }
    for (const queue of state.queues) {
      let refused: string | undefined;
      try {
        parse(platformParam, { platform: queue.platform }, 'platform');
      } catch (raw) {
        refused = refusal(raw);
      }
      for (const entry of queue.jobs) {
        const name = entry.job.name;
        if (!seen.has(name)) {
          seen.add(name);
          steps.push(job(entry, 'never', undefined, 'queue'));
        }
        steps.push({ kind: 'entry', platform: queue.platform, name, ...(refused === undefined ? {} : { refused }) });
      }
    }
    return steps;
  }
}

/** Whether a queue entry is queued, given what became of the jobs: its job (added or present), or why not. */
function decideEntry(entry: Extract<Step, { kind: 'entry' }>, jobs: ReadonlyMap<string, ImportJobOutcome>): { job: Job } | { refused: string } {
  const taken = jobs.get(entry.name);
  if (taken?.outcome !== 'added' && taken?.outcome !== 'present') return { refused: 'its job was not taken (see above)' };
  // A template job (an orb-build job) runs on any platform: builder queued it for this one.
  if (taken.job.platform !== null && taken.job.platform !== entry.platform) return { refused: `job ${entry.name} runs on ${taken.job.platform}, not ${entry.platform}` };
  if (entry.refused !== undefined) return { refused: entry.refused };
  return { job: taken.job };
}

/** The report of what the transaction wrote, walking the file's steps in order (the runs asked for are in the entries' order). */
function reportOf(steps: Step[], writes: ImportWrites, head: Pick<RoburImportReport, 'sha256' | 'importedAt' | 'legacy'>): RoburImportReport {
  const report: RoburImportReport = {
    sha256: head.sha256, importedAt: head.importedAt, alreadyImported: false,
    jobs: { added: [], present: [] }, runs: { queued: [], alreadyQueued: [] }, platforms: { dropped: [], alreadyDropped: [] }, refused: [], legacy: head.legacy,
  };
  const refuse = (item: string, reason: string) => report.refused.push({ item, reason });
  const drops = new Map(writes.drops.map((drop) => [drop.platform, drop.dropped]));
  let run = 0;
  for (const step of steps) {
    if (step.kind === 'refuse') refuse(step.item, step.reason);
    else if (step.kind === 'drop') {
      if (step.refused !== undefined) refuse(`dropped platform ${step.platform}`, step.refused);
      else (drops.get(step.platform) ? report.platforms.dropped : report.platforms.alreadyDropped).push(step.platform);
    } else if (step.kind === 'job') {
      const taken = writes.jobs.get(step.name);
      if (taken?.outcome === 'present') report.jobs.present.push(step.name);
      else if (taken?.outcome === 'added') {
        const added = taken.job;
        report.jobs.added.push({
          name: step.name, kind: step.robur.kind, platform: added.platform, schedule: describeSchedule(added.schedule) ?? step.period,
          next: added.nextAt === null ? null : iso(added.nextAt), from: step.from,
        });
      } else if (taken?.outcome === 'dropped') refuse(`job ${step.name}`, new PlatformDroppedError(taken.platform).message);
      else refuse(`job ${step.name}`, step.refused ?? 'not taken');
    } else {
      const item = `queue entry ${step.name} on ${step.platform}`;
      const decided = decideEntry(step, writes.jobs);
      if ('refused' in decided) {
        refuse(item, decided.refused);
        continue;
      }
      const done = writes.runs[run++]!;
      if (done.outcome === 'dropped') refuse(item, new PlatformDroppedError(step.platform).message);
      else (done.outcome === 'queued' ? report.runs.queued : report.runs.alreadyQueued).push({ platform: step.platform, job: step.name, run: done.run.id });
    }
  }
  return report;
}
