/**
 * robur's jobs as Kiln's, and back: one home for the mapping the robur listener (Schedule,
 * Schedule_orb_build, Info) and `kiln import-robur` (a state file's schedule and queues) share.
 * An orb-build job is a Kiln template job of the template `orb-build` with the variable
 * OPAM_PACKAGE, run on every platform that has a variant of the template; a script job without a
 * platform is builder's `no-platform`. Kiln-only schedules (every, cron) have no robur period: they
 * show as `never` with their real next time, the nearest the format allows.
 */
import { MAX_TIME_MS, type Schedule } from '../../core/index.js';
import type { RoburJob, RoburPeriod, RoburScheduleItem, RoburScriptJob } from '../../protocol/robur/index.js';
import type { Job } from '../../store/index.js';
import type { JobInput } from '../job-service.js';

/** The template an orb-build job runs (`<config dir>/orb-build.template.PLATFORM`, or templates/orb-build.PLATFORM). */
export const ORB_BUILD_TEMPLATE = 'orb-build';
/** The variable an orb-build template's `%%OPAM_PACKAGE%%` is filled from. */
export const OPAM_PACKAGE_VAR = 'OPAM_PACKAGE';
/** builder's platform for a script job scheduled without one. */
export const ROBUR_NO_PLATFORM = 'no-platform';

/** A Kiln job for a robur job scheduled with `period`. */
export function jobInputOf(job: RoburJob, period: RoburPeriod): JobInput {
  const schedule: Schedule = { kind: 'period', period };
  if (job.kind === 'orb-build') {
    return { name: job.job.name, template: ORB_BUILD_TEMPLATE, vars: { [OPAM_PACKAGE_VAR]: job.job.opamPackage }, schedule };
  }
  return { name: job.job.name, script: job.job.script, platform: job.job.platform ?? ROBUR_NO_PLATFORM, schedule };
}

/** A Kiln job as robur's `Job`: an orb-build job as [1], anything else as a script job. */
export function roburJobOf(job: Pick<Job, 'name' | 'platform' | 'script' | 'template' | 'vars'>): RoburJob {
  const opamPackage = job.vars[OPAM_PACKAGE_VAR];
  if (job.template === ORB_BUILD_TEMPLATE && opamPackage !== undefined && job.platform === null) {
    return { kind: 'orb-build', job: { name: job.name, opamPackage } };
  }
  return { kind: 'script', job: scriptJobOf(job) };
}

/** A Kiln job as a script job (a template job's script says which template it expands at dispatch). */
export function scriptJobOf(job: Pick<Job, 'name' | 'platform' | 'script' | 'template' | 'vars'>, platform?: string): RoburScriptJob {
  const script = job.script ?? `# Kiln template job: expands template '${job.template}' at dispatch\n`;
  const on = platform ?? job.platform ?? undefined;
  return on === undefined ? { name: job.name, script } : { name: job.name, script, platform: on };
}

/** A Kiln schedule as robur's period: periods as they are, every and cron as `never` (their next time is kept beside). */
export function roburPeriodOf(schedule: Schedule): RoburPeriod {
  return schedule.kind === 'period' ? schedule.period : 'never';
}

/** builder's `next` for a job that has none (`never`: Ptime.max, `9999-12-31T23:59:59.999Z` on the wire). */
export const ROBUR_NO_NEXT = MAX_TIME_MS;

/**
 * A Kiln job as a schedule item of Info_reply: its real next time (a cron or every job's too, beside
 * the period `never`), or builder's far future when it has none or is paused (its schedule queues
 * nothing until it is resumed).
 */
export function roburScheduleItemOf(job: Job): RoburScheduleItem {
  const next = job.paused || job.nextAt === null ? ROBUR_NO_NEXT : job.nextAt;
  return { next, period: roburPeriodOf(job.schedule), job: roburJobOf(job) };
}
