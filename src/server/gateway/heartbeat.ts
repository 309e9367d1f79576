/**
 * The gateway's heartbeat: every connection is pinged once per interval and dropped if it has not
 * answered (a pong, or any frame) since the last ping. One timer for all connections, not one each:
 * it ticks about every 100 ms (at least ten times an interval) and visits one slice of them, so
 * 10,000 workers at the default 10 s cost one timer and 100 pings a tick, spread over the interval,
 * instead of 10,000 timers (or bursts of thousands of pings that would hold up a dispatch).
 *
 * A connection can also be probed out of turn (another connection asked for its worker's name): it
 * is pinged at once and dropped as if it had missed a beat unless it answers within PROBE_WAIT_MS.
 */

/** One connection's heartbeat, as the gateway keeps it. */
export interface Beat {
  /** Answered since the last ping (a pong or any frame): set by the sweep's `answered`, or by hand. */
  alive: boolean;
  /** Sends a ping. */
  ping(): void;
  /** Drops the connection: it missed a whole interval (`heartbeat`), or did not answer a probe in time (`probe`). */
  missed(why: 'heartbeat' | 'probe'): void;
}

/**
 * How long a probed connection has to answer its ping before it is dropped (ms). A live worker's
 * WebSocket library answers a ping by itself, from its event loop, with no job code in the way: the
 * pong takes a round trip (milliseconds, a few hundred on a bad link). 2 s leaves room for a slow
 * link or a loop busy for a moment, and still cuts a half-open holder's 2 x `--heartbeat` (20 s by
 * default) to about 2 s. Not tied to `--heartbeat`: that one is sized for the cost of pinging every
 * worker all the time, this one for a single ping that somebody is waiting on.
 */
export const PROBE_WAIT_MS = 2000;

/** About how often the sweep ticks (ms). */
const TICK_MS = 100;

/** Pings every registered connection once per `intervalMs`, with one timer (running only while there are any). */
export class HeartbeatSweep {
  /** The interval cut into slices, one visited per tick. */
  private readonly slices: Set<Beat>[];
  /** Which slice each beat is in. */
  private readonly sliceOf = new Map<Beat, Set<Beat>>();
  private nextSlice = 0;
  /** Where the next beat goes: round-robin, so slices stay even. */
  private nextAdd = 0;
  private timer: NodeJS.Timeout | undefined;
  /** The probes waiting for an answer, each with the timer that drops its connection. */
  private readonly probes = new Map<Beat, NodeJS.Timeout>();

  constructor(private readonly intervalMs: number) {
    this.slices = Array.from({ length: Math.max(10, Math.round(intervalMs / TICK_MS)) }, () => new Set());
  }

  /** Starts pinging a connection; its first ping comes within one interval. */
  add(beat: Beat): void {
    const slice = this.slices[this.nextAdd]!;
    this.nextAdd = (this.nextAdd + 1) % this.slices.length;
    slice.add(beat);
    this.sliceOf.set(beat, slice);
    this.timer ??= setInterval(() => this.tick(), this.intervalMs / this.slices.length);
  }

  /** Stops pinging a connection (it closed), and forgets its probe; the timer stops with the last one. */
  delete(beat: Beat): void {
    this.sliceOf.get(beat)?.delete(beat);
    this.sliceOf.delete(beat);
    clearTimeout(this.probes.get(beat));
    this.probes.delete(beat);
    if (this.sliceOf.size === 0 && this.timer) {
      clearInterval(this.timer);
      this.timer = undefined;
    }
  }

  /** The connection answered (a pong or any frame): alive for the sweep, and its probe (if any) passed. */
  answered(beat: Beat): void {
    beat.alive = true;
    clearTimeout(this.probes.get(beat));
    this.probes.delete(beat);
  }

  /**
   * Pings a connection now and drops it (`missed('probe')`) unless it answers within `waitMs`.
   * A probe already waiting is not started again (nor made longer). Returns whether a probe was
   * started: not for a connection the sweep does not hold (closed, or dropped already).
   */
  probe(beat: Beat, waitMs = PROBE_WAIT_MS): boolean {
    if (!this.sliceOf.has(beat) || this.probes.has(beat)) return false;
    this.probes.set(beat, setTimeout(() => {
      this.delete(beat);
      beat.missed('probe');
    }, waitMs));
    try {
      beat.ping();
    } catch {
      // A connection that cannot be pinged (it is closing) is left to its timer, or to its close.
    }
    return true;
  }

  /** How many connections it pings (for tests). */
  get size(): number {
    return this.sliceOf.size;
  }

  private tick(): void {
    const slice = this.slices[this.nextSlice]!;
    this.nextSlice = (this.nextSlice + 1) % this.slices.length;
    for (const beat of [...slice]) {
      if (!beat.alive) {
        this.delete(beat);
        beat.missed('heartbeat');
        continue;
      }
      beat.alive = false;
      try {
        beat.ping();
      } catch {
        // One connection's failing ping (it is closing) must not cost the rest of the slice theirs.
      }
    }
  }
}
