/**
 * The worker <-> server protocol: JSON text frames over one WebSocket, each a versioned member of
 * a discriminated union, validated on arrival by both sides. The worker reads server frames with
 * the zod-free decoder of server-message-decoder.ts, which a unit test holds to these schemas.
 */
import * as z from 'zod';

export { CloseCode, PROTOCOL_VERSION, STOP_CAUSES, SUPPORTED_PROTOCOLS, type StopCause } from './constants.js';

const labels = z.record(z.string().min(1).max(64), z.string().max(256));

const runResult = z.discriminatedUnion('kind', [
  z.object({ kind: z.literal('exited'), code: z.number().int().min(0).max(255) }),
  z.object({ kind: z.literal('signalled'), signal: z.string().min(1).max(32), note: z.string().max(200).optional() }),
  z.object({ kind: z.literal('aborted'), reason: z.string().min(1).max(4096) }),
]);

/** One console line as a worker sends it. `seq` counts from 0 per run; `ts` is ms since the epoch. */
export const consoleLine = z.object({
  seq: z.number().int().min(0),
  ts: z.number().int().min(0),
  text: z.string().max(65_536),
});

/** The first frame a worker sends: who it is. */
export const helloMessage = z.object({
  v: z.number().int(),
  type: z.literal('hello'),
  name: z.string().min(1).max(128).regex(/^[A-Za-z0-9][A-Za-z0-9._@-]*$/, 'worker names use letters, digits and . _ @ -'),
  platform: z.string().min(1).max(64),
  labels,
  capacity: z.number().int().min(1).max(256),
  once: z.boolean(),
  hostname: z.string().max(256),
  os: z.string().max(256),
  arch: z.string().max(64),
  version: z.string().max(64),
  /**
   * A random id the worker process makes once at its start and sends on every (re)connect. A run
   * this worker does not list was never received if the id is the one the run was sent to; under
   * another id the process that held it is gone (the run is lost). Optional: older workers send none.
   */
  session: z.string().uuid().optional(),
  /** Runs this worker still holds (after a reconnect): the server re-attaches or releases each. */
  runs: z.array(z.object({ runId: z.string().uuid(), attempt: z.number().int().min(1) })).max(1024).default([]),
});

/** A file not kept as an artifact. */
export const skippedArtifact = z.object({ path: z.string().max(4096), size: z.number().int().min(0), reason: z.string().max(1000) });

/** Frames a worker sends after its hello. */
export const workerMessage = z.discriminatedUnion('type', [
  z.object({
    v: z.literal(1),
    type: z.literal('run.output'),
    runId: z.string().uuid(),
    lines: z.array(consoleLine).min(1).max(10_000),
  }),
  z.object({
    v: z.literal(1),
    type: z.literal('run.finished'),
    runId: z.string().uuid(),
    result: runResult,
    /** Set when the worker stopped the job itself, and why. */
    stoppedBy: z.enum(['timeout', 'idle-timeout', 'cancel', 'shutdown', 'output']).optional(),
    /** Files the run left that were not kept as artifacts, and why (over a limit, refused). */
    artifactsSkipped: z.array(skippedArtifact).max(10_000).optional(),
  }),
  /** The worker is shutting down: give it no more runs. */
  z.object({ v: z.literal(1), type: z.literal('drain') }),
]);

/** What the server tells a run's worker to do. */
export const runAssignment = z.object({
  id: z.string().uuid(),
  job: z.string(),
  platform: z.string(),
  attempt: z.number().int().min(1),
  script: z.string(),
  env: z.record(z.string(), z.string()),
  timeoutMs: z.number().int().positive(),
  /** Stop the job when it prints nothing for this long; absent: no limit. */
  idleTimeoutMs: z.number().int().positive().optional(),
  /** The seq of this attempt's first console line (earlier attempts used the ones before). */
  firstSeq: z.number().int().min(0),
  /** Globs of the files to keep (empty: every non-dot file but the script). */
  artifacts: z.array(z.string()).default([]),
  /** Keep the files of a run killed by a signal, timed out or cancelled too. */
  artifactsOnFailure: z.boolean().default(false),
  /** What the job asks of the sandbox: resource limits and network. */
  sandbox: z.object({
    memoryBytes: z.number().int().positive().optional(), pids: z.number().int().positive().optional(),
    cpuSeconds: z.number().int().positive().optional(), network: z.enum(['none', 'host']).optional(),
  }).default({}),
  /** The server's limits: the largest file, and the most bytes of artifacts one run may keep. */
  artifactLimits: z.object({ fileBytes: z.number().int().min(0), runBytes: z.number().int().min(0) }).optional(),
});

/** Frames the server sends. */
export const serverMessage = z.discriminatedUnion('type', [
  z.object({
    v: z.literal(1),
    type: z.literal('welcome'),
    name: z.string(),
    heartbeatMs: z.number().int().positive(),
    /** Held runs the server re-attached: resend their lines after `afterSeq`, then their result. */
    resume: z.array(z.object({ runId: z.string(), afterSeq: z.number().int() })),
    /** Held runs the server no longer expects from this worker: stop them and drop their output. */
    release: z.array(z.object({ runId: z.string(), reason: z.string() })),
  }),
  z.object({ v: z.number().int(), type: z.literal('refused'), code: z.string(), message: z.string() }),
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
export const versionProbe = z.object({ v: z.unknown(), type: z.unknown() }).passthrough();

/** Describes why a frame failed validation, in one line. */
export function describeIssues(error: z.ZodError): string {
  return error.issues
    .slice(0, 3)
    .map((issue) => `${issue.path.join('.') || 'message'}: ${issue.message}`)
    .join('; ');
}
