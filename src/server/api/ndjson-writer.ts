/**
 * Writes newline-delimited JSON events to a slow or fast HTTP client without letting it slow
 * the server: when the socket pushes back, events wait in a bounded queue; past the bound
 * they are dropped and counted, and the count is sent as soon as the client catches up. The
 * final event is never dropped.
 */
import type { ServerResponse } from 'node:http';

/** Writes NDJSON events with backpressure and a bounded buffer. */
export class NdjsonWriter {
  private queue: string[] = [];
  private dropped = 0;
  private blocked = false;
  private drainWaiters: (() => void)[] = [];
  private finalEvent: string | undefined;
  closed = false;

  constructor(
    private readonly res: ServerResponse,
    /** Most events kept while the client is slow. */
    private readonly maxQueued: number,
  ) {
    res.on('drain', () => this.pump());
    res.on('close', () => {
      this.closed = true;
      this.release();
    });
  }

  /** Sends an event that may be dropped if the client is too slow. */
  write(event: object): void {
    if (this.closed || this.finalEvent !== undefined) return;
    const text = JSON.stringify(event) + '\n';
    if (this.blocked) {
      if (this.queue.length < this.maxQueued) this.queue.push(text);
      else this.dropped += 1;
      return;
    }
    this.blocked = !this.res.write(text);
  }

  /** Resolves once the client has taken what was written (for paced replays). */
  drained(): Promise<void> {
    if (!this.blocked || this.closed) return Promise.resolve();
    return new Promise((resolve) => this.drainWaiters.push(resolve));
  }

  /** Sends the last event (never dropped) and ends the response. */
  end(event: object): void {
    if (this.closed || this.finalEvent !== undefined) return;
    this.finalEvent = JSON.stringify(event) + '\n';
    if (!this.blocked) this.pump();
  }

  private pump(): void {
    this.blocked = false;
    while (this.queue.length > 0) {
      if (!this.res.write(this.queue.shift()!)) {
        this.blocked = true;
        return;
      }
    }
    if (this.dropped > 0) {
      const count = this.dropped;
      this.dropped = 0;
      if (!this.res.write(JSON.stringify({ type: 'dropped', count }) + '\n')) {
        this.blocked = true;
        return;
      }
    }
    this.release();
    if (this.finalEvent !== undefined && !this.closed) {
      this.res.end(this.finalEvent);
      this.closed = true;
    }
  }

  private release(): void {
    const waiters = this.drainWaiters;
    this.drainWaiters = [];
    for (const resolve of waiters) resolve();
  }
}
