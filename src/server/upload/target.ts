/**
 * Where finished runs are forwarded (`kiln server --upload URL`): one delivery per run, with its
 * metadata, console and artifacts, streamed. A target says how a delivery went; the outbox decides
 * what happens next (done, retry later, or give up and record why).
 */
import type { Readable } from 'node:stream';
import type { Artifact, Run } from '../../store/index.js';
import { presentRun } from '../api/present.js';

/** One finished run, ready to be sent. */
export interface RunDelivery {
  /** Outbox entry id: the same on every attempt, so receivers can drop duplicates. */
  deliveryId: string;
  run: Run;
  /** The run's console, line by line (without newlines), read from the store as it is sent. */
  consoleLines(): AsyncIterable<string>;
  /**
   * A page of the stored console: at most `limit` lines after the one numbered `afterSeq`, oldest first, each with when it
   * arrived (`ts`, ms since the epoch): for targets that send times or read the console more than once (builder-web's exec).
   */
  readConsole(afterSeq: number, limit: number): Promise<readonly { seq: number; text: string; ts: number }[]>;
  /** The run's artifacts, each with how to read its content (from the server's blob store). */
  artifacts: (Artifact & { open(): Promise<Readable> })[];
  /** Aborted when the server shuts down: the attempt then counts as a retry. */
  signal?: AbortSignal;
}

/** How an attempt went. */
export type DeliveryOutcome =
  /** `note`: what the service said that the log should keep (e.g. it already had the run). */
  | { kind: 'delivered'; note?: string }
  /** Worth trying again later (service down, 5xx, 408, 429); `retryAfterMs` when the service said. */
  | { kind: 'retry'; reason: string; retryAfterMs?: number }
  /** The service refused this delivery for good (4xx): recorded, not retried. */
  | { kind: 'give-up'; reason: string };

/** An external service runs are forwarded to. */
export interface UploadTarget {
  /** The target for logs and `kiln info`, without secrets. */
  readonly description: string;
  /** Sends one run; never throws for the service's failures, only says what happened. */
  deliver(delivery: RunDelivery): Promise<DeliveryOutcome>;
}

/** The run's metadata as every target sends it (`run.json`): the run as the API shows it, plus what it ran. */
export function deliveryMetadata(delivery: RunDelivery) {
  const { run, artifacts } = delivery;
  return {
    deliveryId: delivery.deliveryId,
    run: { ...presentRun(run), script: run.script, env: run.env },
    artifacts: artifacts.map(({ path, size, sha256, mode }) => ({ path, size, sha256, mode })),
  };
}
