/**
 * Writes newline-delimited JSON events to an HTTP response and tells its caller when the client
 * pushes back, so the caller can pace itself instead of buffering without bound.
 */
import type { ServerResponse } from 'node:http';

/** NDJSON events onto a response, with backpressure exposed. */
export class NdjsonWriter {
  /** True while the socket holds more than its high-water mark: stop writing until `drained`. */
  blocked = false;
  /** True once the response is finished or the client went away. */
  closed = false;
  private drainWaiters: (() => void)[] = [];

  constructor(private readonly res: ServerResponse) {
    res.on('drain', () => {
      this.blocked = false;
      this.release();
    });
    res.on('close', () => {
      this.closed = true;
      this.release();
    });
  }

  /** Writes one event; check `blocked` afterwards. */
  write(event: object): void {
    if (this.closed) return;
    if (!this.res.write(JSON.stringify(event) + '\n')) this.blocked = true;
  }

  /** Resolves once the client has taken what was written (or is gone). */
  drained(): Promise<void> {
    if (!this.blocked || this.closed) return Promise.resolve();
    return new Promise((resolve) => this.drainWaiters.push(resolve));
  }

  /** Writes the last event and ends the response. */
  end(event: object): void {
    if (this.closed) return;
    this.closed = true;
    this.res.end(JSON.stringify(event) + '\n');
  }

  private release(): void {
    const waiters = this.drainWaiters;
    this.drainWaiters = [];
    for (const resolve of waiters) resolve();
  }
}
