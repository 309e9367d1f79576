/**
 * Following a run's console, whatever carries it: replayed from the store, then (when following)
 * live from the console hub until the run ends. Used by `GET /api/runs/:id/console` (NDJSON or
 * server-sent events) and by robur's Observe (builder's Output messages).
 *
 * A slow observer never slows the run or grows the server's memory: while its peer pushes back,
 * live lines for it are not held beyond a bound; once it drains, it catches up from the store
 * (where every line is kept) and then follows live again. So it loses nothing either.
 */
import { isFinal } from '../core/index.js';
import { coerceError } from '../errors.js';
import type { JobStore, Run, StoredLine } from '../store/index.js';
import type { ConsoleHub } from './console-hub.js';

/** Lines read from the store per query while replaying (the memory an observer may cost). */
const PAGE = 1000;
/** Most live lines held for an observer that is catching up before it re-reads the store instead. */
const MAX_HELD = 1000;

/** Where a followed console goes (an HTTP event stream, a robur observer's connection). */
export interface ConsoleSink {
  /** Sends one line (each once, in seq order). */
  line(line: StoredLine): void;
  /** True while the peer pushes back: live lines are then held (bounded) and re-read from the store once it drains. */
  readonly blocked: boolean;
  /** True once the peer is gone (or the sink ended): nothing more is sent. */
  readonly closed: boolean;
  /** Resolves once the peer has taken what was sent, or is gone. */
  drained(): Promise<void>;
  /** The run has ended and every line was sent: the last word, said once. */
  end(run: Run): void | Promise<void>;
  /** Following failed (a store error) or the hub dropped it: the sink ends broken, at once. */
  fail(err: Error): void;
  /** Calls `listener` once when the peer goes away. */
  onClose(listener: () => void): void;
}

/** What a follower gives back. */
export interface ConsoleFollower {
  /** Resolves once the replay is done and live lines are sent as they come (or the stream is over). */
  live: Promise<void>;
  /** Resolves once the stream is over: ended, failed, or its peer gone. Never rejects. */
  done: Promise<void>;
}

/**
 * Sends a run's console to `sink` from the line after `after`: the stored lines, then (with
 * `follow`, for a run not yet final) live ones, then `end` with the run as it ended.
 */
export function followConsole(store: JobStore, hub: ConsoleHub, run: Run, sink: ConsoleSink, follow: boolean, after = -1): ConsoleFollower {
  let settle!: () => void;
  const done = new Promise<void>((resolve) => (settle = resolve));
  let lastSeq = after;
  const emit = (line: StoredLine) => {
    if (line.seq <= lastSeq) return;
    lastSeq = line.seq;
    sink.line(line);
  };
  /** Sends stored lines after the last one sent, paced by the peer. */
  const replay = async () => {
    for (;;) {
      const page = await store.readConsole(run.id, lastSeq, PAGE);
      for (const line of page) emit(line);
      await sink.drained();
      if (page.length < PAGE || sink.closed) return;
    }
  };
  // The end may be seen twice (the hub's end while a catch-up finds the run final): said once.
  let finishing: Promise<void> | undefined;
  const finish = () =>
    (finishing ??= (async () => {
      await replay();
      if (!sink.closed) await sink.end(await store.findRun(run.id));
      settle();
    })());
  /** A store error while following ends this stream (the peer sees it broken), never the server. */
  const guarded = (work: () => Promise<void>) => (): Promise<void> =>
    work().catch((raw) => {
      sink.fail(coerceError(raw));
      settle();
    });

  if (!follow || isFinal(run.status)) {
    const whole = guarded(finish)();
    return { live: whole, done: whole.then(() => done) };
  }

  let live = false;
  let catchingUp: Promise<void> | undefined;
  let ended = false;
  let held: StoredLine[] = [];
  let overflowed = false;

  /** Replays from the store until no line is missing, then goes live with what was held meanwhile. */
  const catchUp = async () => {
    live = false;
    do {
      overflowed = false;
      held = [];
      await sink.drained();
      // After this flush every line received so far is in the store; later ones are held.
      await hub.flush();
      await replay();
    } while (overflowed && !sink.closed);
    // Lines written from now on by another server are read for it after what the replay sent.
    subscription.caughtUp(lastSeq);
    for (const line of held) emit(line);
    held = [];
    live = true;
    catchingUp = undefined;
    if (ended || isFinal((await store.findRun(run.id)).status)) {
      subscription.unsubscribe();
      await finish();
    }
  };

  const subscription = hub.subscribe(run.id, {
    line: (line) => {
      if (live && !sink.blocked) return emit(line);
      if (held.length < MAX_HELD) held.push(line);
      else overflowed = true;
      if (live) catchingUp ??= guarded(catchUp)();
    },
    end: () => {
      ended = true;
      if (live) void guarded(finish)();
    },
    // The hub dropped it: no more lines would come, so the stream ends broken.
    abort: (err) => {
      sink.fail(err);
      settle();
    },
  });
  sink.onClose(() => {
    subscription.unsubscribe();
    settle();
  });
  catchingUp = guarded(catchUp)();
  return { live: catchingUp, done };
}
