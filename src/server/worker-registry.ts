/**
 * The worker registry: the one owner of worker sessions. The gateway makes a session for each
 * welcomed connection and lists it here; the dispatcher, the run lifecycle and the pools ask it.
 * Only the registry changes a session's state (the runs it holds, what it has been given, open,
 * draining) and the dropped platforms, so no two parts disagree about a worker. It publishes
 * `worker.joined` and `worker.left`, and carries out `run.cancel-requested` and platform drops
 * (the workers concerned are told), those of this server and those another server sharing the
 * database published (`remote`): a cancel on server A reaches the worker connected here.
 */
import type { Logger } from 'pino';
import { coerceError } from '../errors.js';
import type { Run } from '../store/index.js';
import type { EventBus } from './events.js';

/** A worker's connection as the gateway provides it: who it is, and how to talk to it. */
export interface WorkerLink {
  readonly name: string;
  /** Its credential's identity (see core/worker-identity), recorded on each run it takes. */
  readonly identity: string;
  /** Its process's id from the hello (see Run.workerSession); undefined for workers that send none. */
  readonly session: string | undefined;
  /**
   * This connection's id (one per socket), recorded with the worker in the store: only this
   * connection's close marks the worker disconnected. Undefined when the store is not told one.
   */
  readonly connId?: string;
  readonly platform: string;
  readonly labels: Record<string, string>;
  readonly capacity: number;
  /** A `--once` worker takes a single run in its life. */
  readonly once: boolean;
  /** Sends the run to the worker. */
  assign(run: Run): void;
  /** Asks the worker to stop a run and report it. */
  cancel(runId: string, reason: string): void;
  /** Tells the worker the server ended a run itself: stop it, drop its output. */
  release(runId: string, reason: string): void;
  /** Acknowledges a run's result. */
  done(runId: string, applied: boolean): void;
  /** Tells the worker something it should log (e.g. its platform was dropped). */
  notice(message: string): void;
}

/** A connected worker: its link, and the state the registry keeps for it (read-only to everyone else). */
export interface WorkerSession extends WorkerLink {
  /** Runs it holds now. */
  readonly running: ReadonlySet<string>;
  /** Runs it has been given in its life. */
  readonly assigned: number;
  /** False once the connection is gone. */
  readonly open: boolean;
  /** True once the worker said it is shutting down: it takes no more runs. */
  readonly draining: boolean;
}

/**
 * Listed sessions alike for the claim: one platform and the same labels (a run one of them may not
 * take, none of them may). The dispatcher's pass asks each kind once when it has nothing to give,
 * instead of asking every worker: 10,000 idle workers of a few kinds cost a few claims, not 10,000.
 */
export interface WorkerKind {
  readonly platform: string;
  readonly labels: Record<string, string>;
  readonly sessions: ReadonlySet<WorkerSession>;
}

/** The key of a kind (of a session's, say): its platform and its labels in key order. */
export function kindKey(session: { readonly platform: string; readonly labels: Record<string, string> }): string {
  return JSON.stringify([session.platform, Object.entries(session.labels).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))]);
}

/** Free slots of a session. */
export function freeSlots(session: WorkerSession): number {
  if (!session.open || session.draining) return 0;
  if (session.once) return session.assigned === 0 ? 1 : 0;
  return session.capacity - session.running.size;
}

/** The state behind a session; only this module writes it. */
interface SessionState {
  running: Set<string>;
  assigned: number;
  open: boolean;
  draining: boolean;
}

class Session implements WorkerSession {
  constructor(private readonly link: WorkerLink, readonly state: SessionState) {}
  get name() { return this.link.name; }
  get identity() { return this.link.identity; }
  get session() { return this.link.session; }
  get connId() { return this.link.connId; }
  get platform() { return this.link.platform; }
  get labels() { return this.link.labels; }
  get capacity() { return this.link.capacity; }
  get once() { return this.link.once; }
  get running(): ReadonlySet<string> { return this.state.running; }
  get assigned() { return this.state.assigned; }
  get open() { return this.state.open; }
  get draining() { return this.state.draining; }
  assign(run: Run): void { this.link.assign(run); }
  cancel(runId: string, reason: string): void { this.link.cancel(runId, reason); }
  release(runId: string, reason: string): void { this.link.release(runId, reason); }
  done(runId: string, applied: boolean): void { this.link.done(runId, applied); }
  notice(message: string): void { this.link.notice(message); }
}

/** What a registry reads again when the feed between servers may have missed events. */
export interface WorkerRegistryOptions {
  /** The dropped platforms as stored (read again on `feed.resync`). */
  droppedPlatforms?: () => Promise<string[]>;
  /** Where a failed re-read is logged. */
  log?: Logger;
}

/** Owns worker sessions and dropped platforms. */
export class WorkerRegistry {
  /** Listed (welcomed) sessions by name: at most one per name. */
  private readonly sessions = new Map<string, Session>();
  /** Listed sessions by kind (platform and labels): the index the dispatcher's pass and direct dispatch read. */
  private readonly kinds = new Map<string, { platform: string; labels: Record<string, string>; sessions: Set<Session> }>();
  /** Platforms whose workers get no runs. */
  private readonly dropped = new Set<string>();
  /** Sessions a dispatch pass is handing runs to now: a run claimed for one may not have been sent yet. */
  private readonly fillingNow = new Set<WorkerSession>();
  /** Runs claimed but neither sent nor handed back (the store failed): handed back first on the next pass. */
  private readonly unsentRuns = new Map<string, Run>();

  constructor(private readonly events: EventBus, private readonly options: WorkerRegistryOptions = {}) {
    // A cancel recorded here or on another server: the worker is told if its connection is here.
    events.on('run.cancel-requested', ({ run, reason }) => this.holder(run)?.cancel(run.id, reason));
    events.on('platform.dropped', ({ platform }) => {
      this.dropped.add(platform);
      this.tell(platform, `platform ${platform} was dropped: this worker stays idle until it is undropped`);
    });
    events.on('platform.undropped', ({ platform }) => {
      this.dropped.delete(platform);
      this.tell(platform, `platform ${platform} is back: this worker takes runs again`);
    });
    events.on('feed.resync', () => void this.resyncDropped());
  }

  /**
   * Reads the dropped platforms again (a drop or undrop on another server may have been missed):
   * each change is published as if heard from the feed (`remote`), so the workers concerned are
   * told and the dispatcher kicked on an undrop, as for one heard.
   */
  private async resyncDropped(): Promise<void> {
    if (!this.options.droppedPlatforms) return;
    let stored: Set<string>;
    try {
      stored = new Set(await this.options.droppedPlatforms());
    } catch (raw) {
      this.options.log?.error({ err: coerceError(raw) }, 'could not read the dropped platforms again; the next resync will');
      return;
    }
    for (const platform of [...this.dropped]) if (!stored.has(platform)) this.events.publish('platform.undropped', { platform, remote: true });
    for (const platform of stored) if (!this.dropped.has(platform)) this.events.publish('platform.dropped', { platform, cancelled: [], remote: true });
  }

  /** A session for a connection not listed yet (its hello is being handled: runs may be re-attached to it). */
  create(link: WorkerLink): WorkerSession {
    return new Session(link, { running: new Set(), assigned: 0, open: true, draining: false });
  }

  /** Lists a session (its worker may be given runs from now) and publishes `worker.joined`. */
  join(session: WorkerSession): void {
    const replaced = this.sessions.get(session.name);
    if (replaced) this.unindex(replaced);
    this.sessions.set(session.name, session as Session);
    this.index(session as Session);
    this.events.publish('worker.joined', { session });
  }

  /** Adds a listed session to the kind index. */
  private index(session: Session): void {
    const key = kindKey(session);
    let kind = this.kinds.get(key);
    if (!kind) this.kinds.set(key, (kind = { platform: session.platform, labels: session.labels, sessions: new Set() }));
    kind.sessions.add(session);
  }

  /** Takes an unlisted session out of the kind index (an empty kind goes too). */
  private unindex(session: Session): void {
    const key = kindKey(session);
    const kind = this.kinds.get(key);
    if (kind?.sessions.delete(session) && kind.sessions.size === 0) this.kinds.delete(key);
  }

  /** Removes a session from the list (if it is the one listed under its name) and from the kind index. */
  private unlisted(session: WorkerSession): void {
    if (this.sessions.get(session.name) !== session) return;
    this.sessions.delete(session.name);
    this.unindex(session as Session);
  }

  /**
   * The connection is gone or cut off: the session takes no more runs and is unlisted (unless
   * another session of its name is listed now); publishes `worker.left`. Returns the runs it held,
   * which it no longer holds.
   */
  leave(session: WorkerSession): string[] {
    const { state } = session as Session;
    state.open = false;
    const held = [...state.running];
    state.running.clear();
    this.unlisted(session);
    this.events.publish('worker.left', { session });
    return held;
  }

  /**
   * The connection is cut off (revoked): it takes no more runs and is unlisted at once, before its
   * close; publishes `worker.left`. It keeps its runs until `leave` (the close) lets go of them.
   */
  unlist(session: WorkerSession): void {
    (session as Session).state.open = false;
    this.unlisted(session);
    this.events.publish('worker.left', { session });
  }

  /** Marks the connection closed (it takes no more runs) before `leave` lets go of its runs. */
  close(session: WorkerSession): void {
    (session as Session).state.open = false;
  }

  /** The worker said it is shutting down: no more runs for it. */
  drain(session: WorkerSession): void {
    (session as Session).state.draining = true;
  }

  /** The session now holds `runId` (sent to it, or re-attached): it counts as given to it. */
  hold(session: WorkerSession, runId: string): void {
    const { state } = session as Session;
    state.running.add(runId);
    state.assigned += 1;
  }

  /** The session no longer holds `runId`. */
  letGo(session: WorkerSession, runId: string): void {
    (session as Session).state.running.delete(runId);
  }

  /** The connected session of that name, if any. */
  session(name: string): WorkerSession | undefined {
    return this.sessions.get(name);
  }

  /** Connected sessions. */
  list(): WorkerSession[] {
    return [...this.sessions.values()];
  }

  /** Connected sessions by kind (platform and labels); a kind with no session is not listed. */
  listKinds(): Iterable<WorkerKind> {
    return this.kinds.values();
  }


  /** The connected session holding a running run, if any. */
  holder(run: Pick<Run, 'id' | 'worker'>): WorkerSession | undefined {
    const session = run.worker ? this.sessions.get(run.worker) : undefined;
    return session?.running.has(run.id) ? session : undefined;
  }

  /** The session holding `runId` under the name `worker`, if any. */
  holding(runId: string, worker: string | undefined): WorkerSession | undefined {
    return this.holder({ id: runId, worker: worker ?? null });
  }

  /** The dropped platforms as stored (at start): their workers get no runs. Replaces what was kept. */
  restoreDropped(platforms: string[]): void {
    this.dropped.clear();
    for (const platform of platforms) this.dropped.add(platform);
  }

  /** A dispatch pass begins (true) or ends (false) handing runs to `session`. */
  filling(session: WorkerSession, on: boolean): void {
    if (on) this.fillingNow.add(session);
    else this.fillingNow.delete(session);
  }

  /** Keeps a run claimed for a worker but not sent (the store failed), to be handed back by the next pass. */
  keepUnsent(run: Run): void {
    this.unsentRuns.set(run.id, run);
  }

  /** The runs kept unsent. */
  unsent(): Run[] {
    return [...this.unsentRuns.values()];
  }

  /** A kept run was handed back. */
  handedBack(runId: string): void {
    this.unsentRuns.delete(runId);
  }

  /**
   * True while a pass may hold a run claimed for a session of that name other than `except` and
   * not yet sent (or handed back): such a run is not the other process's to give up or lose.
   */
  claimingFor(name: string, except: WorkerSession): boolean {
    return [...this.fillingNow].some((session) => session.name === name && session !== except) || [...this.unsentRuns.values()].some((run) => run.worker === name);
  }

  /** True when the platform is dropped (its workers get no runs). */
  isDropped(platform: string): boolean {
    return this.dropped.has(platform);
  }

  private tell(platform: string, message: string): void {
    for (const session of this.sessions.values()) if (session.platform === platform) session.notice(message);
  }
}
