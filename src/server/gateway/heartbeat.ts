/**
 * The gateway's heartbeat: every connection is pinged once per interval and dropped if it has not
 * answered (a pong, or any frame) since the last ping. One timer for all connections, not one each:
 * it visits a tenth of them every tenth of the interval, so 10,000 workers cost one timer and
 * spread their pings over the interval instead of 10,000 timers (or one burst of 10,000 pings).
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

/** How many slices the interval is cut into (each tick visits one). */
const SLICES = 10;

/** Pings every registered connection once per `intervalMs`, with one timer (running only while there are any). */
export class HeartbeatSweep {
  private readonly slices: Set<Beat>[] = Array.from({ length: SLICES }, () => new Set());
  /** Which slice each beat is in. */
  private readonly sliceOf = new Map<Beat, Set<Beat>>();
  private nextSlice = 0;
  /** Where the next beat goes: round-robin, so slices stay even. */
  private nextAdd = 0;
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly intervalMs: number) {}

  /** Starts pinging a connection; its first ping comes within one interval. */
  add(beat: Beat): void {
    const slice = this.slices[this.nextAdd]!;
    this.nextAdd = (this.nextAdd + 1) % SLICES;
    slice.add(beat);
    this.sliceOf.set(beat, slice);
    this.timer ??= setInterval(() => this.tick(), this.intervalMs / SLICES);
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
    this.nextSlice = (this.nextSlice + 1) % SLICES;
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
