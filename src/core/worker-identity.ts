/**
 * A worker is who its credential says, not the name it picks: the rules that bind names and runs
 * to credentials, as pure functions (the gateway and the artifact route apply them).
 */

/**
 * What a worker's credential says it is. A per-worker token (`kiln worker-token create NAME`) is
 * that name; a pool instance's token is that instance; the shared `worker.token` is one identity
 * for everyone who holds it.
 */
export type WorkerIdentity = { kind: 'shared' } | { kind: 'token'; name: string } | { kind: 'instance'; name: string } | RoburIdentity;

/**
 * A robur `builder-worker` on the `--robur-listen` port: no credential at all (robur's protocol has
 * none), so it is its connection (`robur-PLATFORM-ADDRESS:PORT`). Only the robur listener makes
 * one; the HTTP and WebSocket side never accepts it (no token maps to it, and the gateway refuses it).
 */
export interface RoburIdentity {
  kind: 'robur';
  name: string;
}

/** An identity as one string, as stored with the runs it holds: `shared`, `token:NAME`, `instance:NAME`, `robur:NAME`. */
export function identityKey(identity: WorkerIdentity): string {
  return identity.kind === 'shared' ? 'shared' : `${identity.kind}:${identity.name}`;
}

/** Describes an identity for messages: "the shared worker token", "worker 'w1''s token". */
export function describeIdentity(identity: WorkerIdentity): string {
  if (identity.kind === 'shared') return 'the shared worker token';
  if (identity.kind === 'robur') return `the robur worker connection '${identity.name}'`;
  return identity.kind === 'token' ? `the token of worker '${identity.name}'` : `the token of pool instance '${identity.name}'`;
}

/** Who else may have a claim on a worker name: a per-worker token or a live pool instance bound to it. */
export type NameOwner = 'token' | 'instance' | undefined;

/**
 * Why `identity` may not connect as `name`, or undefined when it may. A bound credential (a
 * per-worker or instance token) is good for its own name only; the shared token is good for any
 * name that no bound credential owns.
 */
export function nameRefusal(identity: WorkerIdentity, name: string, owner: NameOwner): string | undefined {
  // A robur worker is named by its connection, never by a hello: no WebSocket hello may use it.
  if (identity.kind === 'robur') return `${describeIdentity(identity)} is not a WebSocket worker's credential`;
  if (identity.kind !== 'shared' && identity.name !== name) return `${describeIdentity(identity)} may only connect as '${identity.name}', not as '${name}'`;
  if (identity.kind === 'instance') return undefined;
  // A per-worker token made with a live pool instance's name does not get the instance's place.
  if (identity.kind === 'token') return owner === 'instance' ? `'${name}' is a pool instance's name: only its own token may use it` : undefined;
  if (owner === 'token') return `worker '${name}' has its own token (kiln worker-token): only that token may use the name`;
  if (owner === 'instance') return `'${name}' is a pool instance's name: only its own token may use it`;
  return undefined;
}

/**
 * True when a run recorded as held by `runIdentity` (see Run.workerIdentity) may be touched by
 * `identity` (its artifacts uploaded, the run re-attached). Runs dispatched before identities were
 * recorded (null) go by the worker name alone, as they did then.
 */
export function holdsRun(runIdentity: string | null, identity: WorkerIdentity | string): boolean {
  return runIdentity === null || runIdentity === (typeof identity === 'string' ? identity : identityKey(identity));
}
