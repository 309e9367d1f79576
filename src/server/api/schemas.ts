/** Shapes of API requests, validated where they enter (zod/mini: messages.ts says why). */
import * as z from 'zod/mini';
import '../../protocol/zod-locale.js';
import {
  formatDuration, isValidJobName, isValidPlatform, isValidTemplateName, JOB_NAME_RULE, PLATFORM_RULE, MAX_DURATION_MS, MAX_JOB_TIMEOUT_MS, MAX_EVERY_MS, MIN_EVERY_MS, NETWORKS, OVERLAPS, PERIODS, RUN_STATUSES,
  ROLES, TOKEN_NAME, type Role, type Schedule,
} from '../../core/index.js';
import { InvalidRequestError } from '../../errors.js';
import { MAX_CONSOLE_SEQ } from '../../protocol/constants.js';

/** Largest script a job may carry. */
export const MAX_SCRIPT_BYTES = 256 * 1024;

const jobName = z.string().check(z.refine(isValidJobName, { message: `job names use ${JOB_NAME_RULE} characters` }));
const platform = z.string().check(z.refine(isValidPlatform, PLATFORM_RULE));
const stringMap = z.record(z.string().check(z.minLength(1), z.maxLength(256)), z.string().check(z.maxLength(65_536)));
const envMap = z.record(z.string().check(z.regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'environment variable names use letters, digits and _')), z.string().check(z.maxLength(65_536)));
const script = z.string().check(
  z.minLength(1, 'the script is empty'),
  z.refine((s) => Buffer.byteLength(s) <= MAX_SCRIPT_BYTES, { message: `the script is larger than ${MAX_SCRIPT_BYTES} bytes` }),
);
const timeoutMs = z.int().check(z.gte(1000, 'the timeout must be at least 1s'), z.lte(MAX_JOB_TIMEOUT_MS, 'the timeout must be at most 7 days'));
const retries = z.int().check(z.gte(0), z.lte(100));
const templateName = z.string().check(z.refine(isValidTemplateName, { message: 'template names use letters, digits, - and _ (no /, no dots)' }));
const varMap = z.record(z.string().check(z.regex(/^[A-Za-z0-9_]+$/, 'variable names use letters, digits and _')), z.string().check(z.maxLength(65_536)));
/** A schedule: a period, an interval, or a cron expression in a zone (checked further by validateSchedule). */
const schedule: z.ZodMiniType<Schedule> = z.discriminatedUnion('kind', [
  z.strictObject({ kind: z.literal('period'), period: z.enum(PERIODS) }),
  z.strictObject({
    kind: z.literal('every'),
    everyMs: z.int().check(
      z.gte(MIN_EVERY_MS, `the interval must be at least ${formatDuration(MIN_EVERY_MS)}`),
      z.lte(MAX_EVERY_MS, `the interval must be at most ${formatDuration(MAX_EVERY_MS)} (about 10 years)`),
    ),
  }),
  z.strictObject({ kind: z.literal('cron'), expr: z.string().check(z.minLength(1), z.maxLength(256)), tz: z._default(z.string().check(z.minLength(1), z.maxLength(64)), 'UTC') }),
]) as z.ZodMiniType<Schedule>;
/** What a job asks of its sandbox (`sandbox` in job bodies). */
const sandboxLimits = {
  memoryBytes: z.int().check(z.gte(1024 * 1024, 'the memory limit must be at least 1mb'), z.lte(2 ** 50)),
  pids: z.int().check(z.gte(1), z.lte(1_000_000)),
  cpuSeconds: z.int().check(z.gte(1), z.lte(7 * 86_400)),
  network: z.enum(NETWORKS),
};
const jobSandbox = z.strictObject({
  memoryBytes: z.optional(sandboxLimits.memoryBytes), pids: z.optional(sandboxLimits.pids),
  cpuSeconds: z.optional(sandboxLimits.cpuSeconds), network: z.optional(sandboxLimits.network),
});
/** A change to a job's sandbox: given keys are set, null ones removed. */
const sandboxChange = z.strictObject({
  memoryBytes: z.optional(z.nullable(sandboxLimits.memoryBytes)), pids: z.optional(z.nullable(sandboxLimits.pids)),
  cpuSeconds: z.optional(z.nullable(sandboxLimits.cpuSeconds)), network: z.optional(z.nullable(sandboxLimits.network)),
});
export type SandboxChange = z.infer<typeof sandboxChange>;

const jobFields = {
  platform: z.optional(platform),
  script: z.optional(script),
  template: z.optional(templateName),
  vars: z.optional(varMap),
  env: z.optional(envMap),
  labels: z.optional(stringMap),
  schedule: z.optional(schedule),
  /** Shorthand for `schedule: {kind: 'period', period}`. */
  period: z.optional(z.enum(PERIODS)),
  paused: z.optional(z.boolean()),
  overlap: z.optional(z.enum(OVERLAPS)),
  catchUp: z.optional(z.boolean()),
  timeoutMs: z.optional(timeoutMs),
  idleTimeoutMs: z.optional(z.nullable(
    z.int().check(z.gte(1000, 'the idle timeout must be at least 1s'), z.lte(MAX_JOB_TIMEOUT_MS, 'the idle timeout must be at most 7 days')),
  )),
  retries: z.optional(retries),
  failureRetries: z.optional(retries),
  /** Globs of the files to keep as artifacts. */
  artifacts: z.optional(z.array(z.string().check(z.minLength(1), z.maxLength(512))).check(z.maxLength(64))),
  artifactsOnFailure: z.optional(z.boolean()),
  sandbox: z.optional(jobSandbox),
};

/** Folds the `period` shorthand into `schedule`. */
function withSchedule<T extends { period?: (typeof PERIODS)[number]; schedule?: Schedule }>(body: T): Omit<T, 'period'> {
  const { period, ...rest } = body;
  return period === undefined || rest.schedule ? rest : { ...rest, schedule: { kind: 'period', period } };
}

/** Body of `POST /api/jobs`. */
export const createJobBody = z.pipe(
  z.strictObject({ name: jobName, ...jobFields })
    .check(z.refine((job) => (job.script === undefined) !== (job.template === undefined), { message: 'give a script or a template (one of them)' })),
  z.transform(withSchedule),
);

/** Body of `PATCH /api/jobs/:name`. */
export const modifyJobBody = z.pipe(
  z.strictObject({ ...jobFields, sandbox: z.optional(sandboxChange) })
    .check(z.refine((job) => job.script === undefined || job.template === undefined, { message: 'give a script or a template, not both' })),
  z.transform(withSchedule),
);

/** Body of `POST /api/runs/:id/cancel`. `by`: what the client says about who it is (a login name); recorded only as a note after the token's name. */
export const cancelBody = z.strictObject({ by: z.optional(z.string().check(z.minLength(1), z.maxLength(64), z.regex(/^[^\p{Cc}()]+$/u, 'a name without control characters or parentheses'))) });

/** Body of `POST /api/jobs/:name/execute`. */
export const executeBody = z.strictObject({ platform: z.optional(platform) });

/** Body of `POST /api/jobs/:name/reschedule`. */
export const rescheduleBody = z.strictObject({ next: z.string().check(z.minLength(1), z.maxLength(64)) });

/** Query of `GET /api/runs`. */
export const listRunsQuery = z.strictObject({
  job: z.optional(z.string()),
  status: z.optional(z.enum(RUN_STATUSES)),
  platform: z.optional(z.string()),
  worker: z.optional(z.string()),
  limit: z._default(z.coerce.number().check(z.int(), z.gte(1), z.lte(10_000)), 50),
});

/** Query of `GET /api/jobs/:name/next`. */
export const nextQuery = z.strictObject({ count: z._default(z.coerce.number().check(z.int(), z.gte(1), z.lte(1000)), 5) });

/** A platform in a route. */
export const platformParam = z.strictObject({ platform });

/** Query of `GET /api/runs/latest`. */
export const latestRunQuery = z.strictObject({ job: z.optional(z.string()), platform: z.optional(z.string()) });

/** Query of `GET /api/runs/:id/console`. */
export const consoleQuery = z.strictObject({
  follow: z.pipe(z.optional(z.enum(['true', 'false', '1', '0'])), z.transform((v) => v === 'true' || v === '1')),
  /** Start after this seq (an observer resuming after a broken stream). */
  after: z._default(z.coerce.number().check(z.int(), z.gte(-1), z.lte(MAX_CONSOLE_SEQ)), -1),
});

/** `POST /api/artifacts/gc`: sweep now (or say what would go), with the server's policy or these. */
export const gcBody = z.strictObject({
  dryRun: z._default(z.boolean(), false),
  keepRuns: z.optional(z.int().check(z.gte(0), z.lte(1_000_000_000))),
  keepForMs: z.optional(z.int().check(z.gte(0), z.lte(MAX_DURATION_MS, `at most ${formatDuration(MAX_DURATION_MS)} (about 10 years)`))),
});

/** Parses `value` with `schema` or throws a one-line InvalidRequestError. */
export function parse<T extends z.ZodMiniType>(schema: T, value: unknown, what: string): z.infer<T> {
  const result = schema.safeParse(value ?? {});
  if (result.success) return result.data;
  const issue = result.error.issues[0]!;
  const where = issue.path.length ? `${issue.path.join('.')}: ` : '';
  throw new InvalidRequestError(`invalid ${what}: ${where}${issue.message}`);
}

/** A token's name (`kiln token create NAME`). */
const tokenName = z.string().check(z.regex(TOKEN_NAME, 'token names are 1 to 64 letters, digits, dot, dash, underscore and @, starting with a letter or digit'));

/** Body of `POST /api/tokens`. */
export const createTokenBody = z.strictObject({
  name: tokenName,
  role: z.enum(ROLES as [Role, ...Role[]]),
  expiresInMs: z.optional(z.int().check(z.gte(1, 'the expiry must be in the future'), z.lte(MAX_DURATION_MS, `the expiry must be at most ${formatDuration(MAX_DURATION_MS)} away`))),
});

/** Params of `DELETE /api/tokens/:name`. */
export const tokenNameParam = z.strictObject({ name: tokenName });

/** Body of `POST /api/session`: the token to sign in with. */
export const signInBody = z.strictObject({ token: z.string().check(z.minLength(1), z.maxLength(512)) });
