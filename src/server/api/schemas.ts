/** Shapes of API requests, validated where they enter. */
import * as z from 'zod';
import {
  formatDuration, isValidJobName, isValidTemplateName, JOB_NAME_RULE, MAX_DURATION_MS, MAX_JOB_TIMEOUT_MS, MAX_EVERY_MS, MIN_EVERY_MS, NETWORKS, OVERLAPS, PERIODS, RUN_STATUSES,
  type Schedule,
} from '../../core/index.js';
import { InvalidRequestError } from '../../errors.js';

/** Largest script a job may carry. */
export const MAX_SCRIPT_BYTES = 256 * 1024;

const jobName = z.string().refine(isValidJobName, { message: `job names use ${JOB_NAME_RULE} characters` });
const platform = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/, 'platform names use letters, digits, dot, dash and underscore');
const stringMap = z.record(z.string().min(1).max(256), z.string().max(65_536));
const envMap = z.record(z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'environment variable names use letters, digits and _'), z.string().max(65_536));
const script = z.string().min(1, 'the script is empty').refine((s) => Buffer.byteLength(s) <= MAX_SCRIPT_BYTES, {
  message: `the script is larger than ${MAX_SCRIPT_BYTES} bytes`,
});
const timeoutMs = z.number().int().min(1000, 'the timeout must be at least 1s').max(MAX_JOB_TIMEOUT_MS, 'the timeout must be at most 7 days');
const retries = z.number().int().min(0).max(100);
const templateName = z.string().refine(isValidTemplateName, { message: 'template names use letters, digits, - and _ (no /, no dots)' });
const varMap = z.record(z.string().regex(/^[A-Za-z0-9_]+$/, 'variable names use letters, digits and _'), z.string().max(65_536));
/** A schedule: a period, an interval, or a cron expression in a zone (checked further by validateSchedule). */
const schedule: z.ZodType<Schedule> = z.discriminatedUnion('kind', [
  z.strictObject({ kind: z.literal('period'), period: z.enum(PERIODS) }),
  z.strictObject({
    kind: z.literal('every'),
    everyMs: z.number().int()
      .min(MIN_EVERY_MS, `the interval must be at least ${formatDuration(MIN_EVERY_MS)}`)
      .max(MAX_EVERY_MS, `the interval must be at most ${formatDuration(MAX_EVERY_MS)} (about 10 years)`),
  }),
  z.strictObject({ kind: z.literal('cron'), expr: z.string().min(1).max(256), tz: z.string().min(1).max(64).default('UTC') }),
]) as z.ZodType<Schedule>;
/** What a job asks of its sandbox (`sandbox` in job bodies). */
const sandboxLimits = {
  memoryBytes: z.number().int().min(1024 * 1024, 'the memory limit must be at least 1mb').max(2 ** 50),
  pids: z.number().int().min(1).max(1_000_000),
  cpuSeconds: z.number().int().min(1).max(7 * 86_400),
  network: z.enum(NETWORKS),
};
const jobSandbox = z.strictObject({
  memoryBytes: sandboxLimits.memoryBytes.optional(), pids: sandboxLimits.pids.optional(),
  cpuSeconds: sandboxLimits.cpuSeconds.optional(), network: sandboxLimits.network.optional(),
});
/** A change to a job's sandbox: given keys are set, null ones removed. */
const sandboxChange = z.strictObject({
  memoryBytes: sandboxLimits.memoryBytes.nullable().optional(), pids: sandboxLimits.pids.nullable().optional(),
  cpuSeconds: sandboxLimits.cpuSeconds.nullable().optional(), network: sandboxLimits.network.nullable().optional(),
});
export type SandboxChange = z.infer<typeof sandboxChange>;

const jobFields = {
  platform: platform.optional(),
  script: script.optional(),
  template: templateName.optional(),
  vars: varMap.optional(),
  env: envMap.optional(),
  labels: stringMap.optional(),
  schedule: schedule.optional(),
  /** Shorthand for `schedule: {kind: 'period', period}`. */
  period: z.enum(PERIODS).optional(),
  paused: z.boolean().optional(),
  overlap: z.enum(OVERLAPS).optional(),
  catchUp: z.boolean().optional(),
  timeoutMs: timeoutMs.optional(),
  idleTimeoutMs: z.number().int().min(1000, 'the idle timeout must be at least 1s').max(MAX_JOB_TIMEOUT_MS, 'the idle timeout must be at most 7 days').nullable().optional(),
  retries: retries.optional(),
  failureRetries: retries.optional(),
  /** Globs of the files to keep as artifacts. */
  artifacts: z.array(z.string().min(1).max(512)).max(64).optional(),
  artifactsOnFailure: z.boolean().optional(),
  sandbox: jobSandbox.optional(),
};

/** Folds the `period` shorthand into `schedule`. */
function withSchedule<T extends { period?: (typeof PERIODS)[number]; schedule?: Schedule }>(body: T): Omit<T, 'period'> {
  const { period, ...rest } = body;
  return period === undefined || rest.schedule ? rest : { ...rest, schedule: { kind: 'period', period } };
}

/** Body of `POST /api/jobs`. */
export const createJobBody = z
  .strictObject({ name: jobName, ...jobFields })
  .refine((job) => (job.script === undefined) !== (job.template === undefined), { message: 'give a script or a template (one of them)' })
  .transform(withSchedule);

/** Body of `PATCH /api/jobs/:name`. */
export const modifyJobBody = z
  .strictObject({ ...jobFields, sandbox: sandboxChange.optional() })
  .refine((job) => job.script === undefined || job.template === undefined, { message: 'give a script or a template, not both' })
  .transform(withSchedule);

/** Body of `POST /api/runs/:id/cancel`. */
export const cancelBody = z.strictObject({ by: z.string().min(1).max(128).optional() });

/** Body of `POST /api/jobs/:name/execute`. */
export const executeBody = z.strictObject({ platform: platform.optional() });

/** Body of `POST /api/jobs/:name/reschedule`. */
export const rescheduleBody = z.strictObject({ next: z.string().min(1).max(64) });

/** Query of `GET /api/runs`. */
export const listRunsQuery = z.strictObject({
  job: z.string().optional(),
  status: z.enum(RUN_STATUSES).optional(),
  platform: z.string().optional(),
  limit: z.coerce.number().int().min(1).max(10_000).default(50),
});

/** Query of `GET /api/jobs/:name/next`. */
export const nextQuery = z.strictObject({ count: z.coerce.number().int().min(1).max(1000).default(5) });

/** A platform in a route. */
export const platformParam = z.strictObject({ platform });

/** Query of `GET /api/runs/latest`. */
export const latestRunQuery = z.strictObject({ job: z.string().optional(), platform: z.string().optional() });

/** Query of `GET /api/runs/:id/console`. */
export const consoleQuery = z.strictObject({
  follow: z.enum(['true', 'false', '1', '0']).optional().transform((v) => v === 'true' || v === '1'),
  /** Start after this seq (an observer resuming after a broken stream). */
  after: z.coerce.number().int().min(-1).default(-1),
});

/** Parses `value` with `schema` or throws a one-line InvalidRequestError. */
/** `POST /api/artifacts/gc`: sweep now (or say what would go), with the server's policy or these. */
export const gcBody = z.strictObject({
  dryRun: z.boolean().default(false),
  keepRuns: z.number().int().min(0).max(1_000_000_000).optional(),
  keepForMs: z.number().int().min(0).max(MAX_DURATION_MS, `at most ${formatDuration(MAX_DURATION_MS)} (about 10 years)`).optional(),
});

export function parse<T extends z.ZodType>(schema: T, value: unknown, what: string): z.infer<T> {
  const result = schema.safeParse(value ?? {});
  if (result.success) return result.data;
  const issue = result.error.issues[0]!;
  const where = issue.path.length ? `${issue.path.join('.')}: ` : '';
  throw new InvalidRequestError(`invalid ${what}: ${where}${issue.message}`);
}
