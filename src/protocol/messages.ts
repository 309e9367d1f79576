/**
 * The worker <-> server protocol: JSON text frames over one WebSocket, each a versioned member of
 * a discriminated union, validated on arrival by both sides. The worker reads server frames with
 * the zod-free decoder of server-message-decoder.ts, which a unit test holds to these schemas.
 * Written with zod/mini, whose schemas carry no methods of their own: the classic API's ~40 closures
 * per schema made these and the API's schemas ~1 MB of an idle server (BENCHMARKS.md).
 */
import * as z from 'zod/mini';
import './zod-locale.js';

import { MAX_CONSOLE_SEQ } from './constants.js';

export { CloseCode, MAX_CONSOLE_SEQ, PROTOCOL_VERSION, STOP_CAUSES, SUPPORTED_PROTOCOLS, type StopCause } from './constants.js';

const labels = z.record(z.string().check(z.minLength(1), z.maxLength(64)), z.string().check(z.maxLength(256)));

const runResult = z.discriminatedUnion('kind', [
  z.object({ kind: z.literal('exited'), code: z.int().check(z.gte(0), z.lte(255)) }),
  z.object({ kind: z.literal('signalled'), signal: z.string().check(z.minLength(1), z.maxLength(32)), note: z.optional(z.string().check(z.maxLength(200))) }),
  z.object({ kind: z.literal('aborted'), reason: z.string().check(z.minLength(1), z.maxLength(4096)) }),
]);

/** One console line as a worker sends it. `seq` counts from 0 per run; `ts` is ms since the epoch. */
export const consoleLine = z.object({
  seq: z.int().check(z.gte(0), z.lte(MAX_CONSOLE_SEQ)),
  ts: z.int().check(z.gte(0)),
  text: z.string().check(z.maxLength(65_536)),
});

/** A worker's name: the hello's rule, and a per-worker token's. */
export const workerName = z.string().check(
  z.minLength(1), z.maxLength(128), z.regex(/^[A-Za-z0-9][A-Za-z0-9._@-]*$/, 'worker names use letters, digits and . _ @ -'),
);

/** The first frame a worker sends: who it is. */
export const helloMessage = z.object({
  v: z.int(),
  type: z.literal('hello'),
  name: workerName,
  platform: z.string().check(z.minLength(1), z.maxLength(64)),
  labels,
  capacity: z.int().check(z.gte(1), z.lte(256)),
  once: z.boolean(),
  hostname: z.string().check(z.maxLength(256)),
  os: z.string().check(z.maxLength(256)),
  arch: z.string().check(z.maxLength(64)),
  version: z.string().check(z.maxLength(64)),
  /**
   * A random id the worker process makes once at its start and sends on every (re)connect. A run
   * this worker does not list was never received if the id is the one the run was sent to; under
   * another id the process that held it is gone (the run is lost). Optional: older workers send none.
   */
  session: z.optional(z.uuid()),
  /** Runs this worker still holds (after a reconnect): the server re-attaches or releases each. */
  runs: z._default(z.array(z.object({ runId: z.uuid(), attempt: z.int().check(z.gte(1)) })).check(z.maxLength(1024)), []),
});

/** A file not kept as an artifact. */
export const skippedArtifact = z.object({ path: z.string().check(z.maxLength(4096)), size: z.int().check(z.gte(0)), reason: z.string().check(z.maxLength(1000)) });

/** Frames a worker sends after its hello. */
export const workerMessage = z.discriminatedUnion('type', [
  z.object({
    v: z.literal(1),
    type: z.literal('run.output'),
    runId: z.uuid(),
    lines: z.array(consoleLine).check(z.minLength(1), z.maxLength(10_000)),
  }),
  z.object({
    v: z.literal(1),
    type: z.literal('run.finished'),
    runId: z.uuid(),
    result: runResult,
    /** Set when the worker stopped the job itself, and why. */
    stoppedBy: z.optional(z.enum(['timeout', 'idle-timeout', 'cancel', 'shutdown', 'output'])),
    /** Files the run left that were not kept as artifacts, and why (over a limit, refused). */
    artifactsSkipped: z.optional(z.array(skippedArtifact).check(z.maxLength(10_000))),
  }),
  /** The worker is shutting down: give it no more runs. */
  z.object({ v: z.literal(1), type: z.literal('drain') }),
]);

/** What the server tells a run's worker to do. */
export const runAssignment = z.object({
  id: z.uuid(),
  job: z.string(),
  platform: z.string(),
  attempt: z.int().check(z.gte(1)),
  script: z.string(),
  env: z.record(z.string(), z.string()),
  timeoutMs: z.int().check(z.positive()),
  /** Stop the job when it prints nothing for this long; absent: no limit. */
  idleTimeoutMs: z.optional(z.int().check(z.positive())),
  /** The seq of this attempt's first console line (earlier attempts used the ones before). */
  firstSeq: z.int().check(z.gte(0)),
  /** Globs of the files to keep (empty: every non-dot file but the script). */
  artifacts: z._default(z.array(z.string()), []),
  /** Keep the files of a run killed by a signal, timed out or cancelled too. */
  artifactsOnFailure: z._default(z.boolean(), false),
  /** What the job asks of the sandbox: resource limits and network. */
  sandbox: z._default(z.object({
    memoryBytes: z.optional(z.int().check(z.positive())), pids: z.optional(z.int().check(z.positive())),
    cpuSeconds: z.optional(z.int().check(z.positive())), network: z.optional(z.enum(['none', 'host'])),
  }), {}),
  /** The server's limits: the largest file, and the most bytes of artifacts one run may keep. */
  artifactLimits: z.optional(z.object({ fileBytes: z.int().check(z.gte(0)), runBytes: z.int().check(z.gte(0)) })),
});

/** Frames the server sends. */
export const serverMessage = z.discriminatedUnion('type', [
  z.object({
    v: z.literal(1),
    type: z.literal('welcome'),
    name: z.string(),
    heartbeatMs: z.int().check(z.positive()),
    /** Held runs the server re-attached: resend their lines after `afterSeq`, then their result. */
    resume: z.array(z.object({ runId: z.string(), afterSeq: z.int() })),
    /** Held runs the server no longer expects from this worker: stop them and drop their output. */
    release: z.array(z.object({ runId: z.string(), reason: z.string() })),
  }),
  z.object({ v: z.int(), type: z.literal('refused'), code: z.string(), message: z.string() }),
  z.object({ v: z.literal(1), type: z.literal('run.assign'), run: runAssignment }),
  z.object({ v: z.literal(1), type: z.literal('error'), code: z.string(), message: z.string() }),
  /** Stop the run (SIGTERM, then SIGKILL after the grace) and report its result. */
  z.object({ v: z.literal(1), type: z.literal('run.cancel'), runId: z.string(), reason: z.string() }),
  /** The server has ended the run itself: stop it and drop its output. */
  z.object({ v: z.literal(1), type: z.literal('run.release'), runId: z.string(), reason: z.string() }),
  /** The run's result is recorded (or was answered but not applied): the worker may forget it. */
  z.object({ v: z.literal(1), type: z.literal('run.done'), runId: z.string(), applied: z.boolean() }),
  /** Something the worker should log, e.g. that its platform was dropped. */
  z.object({ v: z.literal(1), type: z.literal('notice'), message: z.string() }),
]);

export type Hello = z.infer<typeof helloMessage>;
export type WorkerMessage = z.infer<typeof workerMessage>;
export type ServerMessage = z.infer<typeof serverMessage>;
export type RunAssignment = z.infer<typeof runAssignment>;
export type ConsoleLine = z.infer<typeof consoleLine>;
export type SkippedArtifact = z.infer<typeof skippedArtifact>;

/** Reads the `v` of any frame, to refuse unknown versions before validating the rest. */
export const versionProbe = z.looseObject({ v: z.unknown(), type: z.unknown() });

/** Describes why a frame failed validation, in one line. */
export function describeIssues(error: z.core.$ZodError): string {
  return error.issues
    .slice(0, 3)
    .map((issue) => `${issue.path.join('.') || 'message'}: ${issue.message}`)
    .join('; ');
}
