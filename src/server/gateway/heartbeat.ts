/**
 * The gateway's heartbeat: every connection is pinged once per interval and dropped if it has not
 * answered (a pong, or any frame) since the last ping. One timer for all connections, not one each:
 * it ticks about every 100 ms (at least ten times an interval) and visits one slice of them, so
 * 10,000 workers at the default 10 s cost one timer and 100 pings a tick, spread over the interval,
 * instead of 10,000 timers (or bursts of thousands of pings that would hold up a dispatch).
 */

/** One connection's heartbeat, as the gateway keeps it. */
export interface Beat {
  /** Answered since the last ping (a pong or any frame): set by the gateway. */
  alive: boolean;
  /** Sends a ping. */
  ping(): void;
  /** Drops the connection: it missed a whole interval. */
  missed(): void;
}

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

  /** Stops pinging a connection (it closed); the timer stops with the last one. */
  delete(beat: Beat): void {
    this.sliceOf.get(beat)?.delete(beat);
    this.sliceOf.delete(beat);
    if (this.sliceOf.size === 0 && this.timer) {
      clearInterval(this.timer);
      this.timer = undefined;
    }
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
        beat.missed();
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
