/**
 * robur builder's wire values (client protocol 13, worker protocol 5; builder-web's exec blob; the
 * `state` file) as TypeScript sees them. The formats themselves are in
 * shared/reference/robur-protocol.md; the codec (der.ts, builder-messages.ts, exec.ts,
 * state-file.ts) turns these values into strict DER and back. Times are ms since the epoch (DER
 * GeneralizedTime carries ms); uuids are canonical lower-case UUID strings (16 raw bytes on the wire).
 */

/** The protocol version a `builder-client` must say in its hello. */
export const ROBUR_CLIENT_VERSION = 13;
/** The protocol version a `builder-worker` must say in its hello. */
export const ROBUR_WORKER_VERSION = 5;
/** builder's default TCP port. */
export const ROBUR_DEFAULT_PORT = 1234;

/** builder's schedule periods (`never`: run only by execute). */
export type RoburPeriod = 'hourly' | 'daily' | 'weekly' | 'never';

/** A script job; `files` is always written empty and ignored on read, so it is not kept. */
export interface RoburScriptJob {
  name: string;
  script: string;
  /** Absent on the wire means builder's "no-platform". */
  platform?: string;
}

/** An orb-build job: expanded at dispatch from `orb-build.template.PLATFORM`. */
export interface RoburOrbJob {
  name: string;
  opamPackage: string;
}

/** builder's `Job` CHOICE: [0] script, [1] orb-build. */
export type RoburJob = { kind: 'script'; job: RoburScriptJob } | { kind: 'orb-build'; job: RoburOrbJob };

/** How a job ended, as builder says it. */
export type RoburResult =
  | { kind: 'exited'; code: number }
  | { kind: 'signalled'; signal: number }
  | { kind: 'stopped'; signal: number }
  | { kind: 'msg'; message: string };

/** A file (artifact) carried inline: path relative and `/`-separated, data the exact bytes. */
export interface RoburFile {
  path: string;
  data: Buffer;
}

/** One entry of a schedule. */
export interface RoburScheduleItem {
  next: number;
  period: RoburPeriod;
  job: RoburJob;
}

/** One platform's queue, in order. */
export interface RoburQueue {
  platform: string;
  jobs: RoburJob[];
}

/** A job a worker is running, as Info_reply lists it. */
export interface RoburRunning {
  started: number;
  uuid: string;
  job: RoburScriptJob;
}

/** Every message of builder's `cmd` CHOICE that Kiln reads or writes, by its tag. */
export type RoburCmd =
  /** [2] server → worker. */
  | { type: 'job-schedule'; uuid: string; job: RoburScriptJob }
  /** [3] worker → server. */
  | { type: 'job-finished'; uuid: string; result: RoburResult; files: RoburFile[] }
  /** [4] worker → server without a timestamp; server → observer with ns since the job was dispatched. */
  | { type: 'output'; uuid: string; line: string; timestampNs?: number }
  /** [5] client → server. */
  | { type: 'schedule'; period: RoburPeriod; job: RoburScriptJob }
  /** [6] client → server. */
  | { type: 'info' }
  /** [7] the old Info_reply (no dropped platforms): decoded only. */
  | { type: 'info-reply-old'; schedule: RoburScheduleItem[]; queues: RoburQueue[]; running: RoburRunning[] }
  /** [9] client → server. */
  | { type: 'unschedule'; name: string }
  /** [10] client → server. */
  | { type: 'observe'; uuid: string }
  /** [11] the old Execute (a name, no platform). */
  | { type: 'execute-old'; name: string }
  /** [12] client → server. */
  | { type: 'schedule-orb-build'; period: RoburPeriod; job: RoburOrbJob }
  /** [13] client → server. */
  | { type: 'reschedule'; name: string; next: number; period?: RoburPeriod }
  /** [14] the first frame of every connection. */
  | { type: 'client-hello'; peer: 'client' | 'worker'; version: number }
  /** [15] server → peer. */
  | { type: 'server-hello' }
  /** [16] worker → server. */
  | { type: 'job-requested'; platform: string }
  /** [17] client → server. */
  | { type: 'drop-platform'; platform: string }
  /** [18] server → client. */
  | { type: 'success' }
  /** [19] server → client. */
  | { type: 'failure'; message: string }
  /** [20] client → server. */
  | { type: 'execute'; name: string; platform?: string }
  /** [21] client → server. */
  | { type: 'undrop-platform'; platform: string }
  /** [22] server → client. */
  | { type: 'info-reply'; schedule: RoburScheduleItem[]; queues: RoburQueue[]; running: RoburRunning[]; dropped: string[] };

/** A console line of an exec: ns from the job's start to when the line arrived. */
export interface RoburConsoleLine {
  deltaNs: number;
  line: string;
}

/** builder's exec blob (`Exec [0]`): the body of builder-web's `POST /upload`, and builder's `full` file. */
export interface RoburExec {
  job: RoburScriptJob;
  uuid: string;
  /** Oldest first here; the wire has them newest first. */
  console: RoburConsoleLine[];
  started: number;
  finished: number;
  result: RoburResult;
  files: RoburFile[];
}

/** What a builder `state` file holds. */
export interface RoburState {
  dropped: string[];
  schedule: RoburScheduleItem[];
  queues: RoburQueue[];
  /** Legacy entries ([0] [2] queue entries) read and ignored, as builder does. */
  ignoredLegacy: number;
}
