/**
 * Writes a stream of JSON events to an HTTP response, as NDJSON (the CLI's `kiln observe`) or as
 * server-sent events (the dashboard), and tells its caller when the client pushes back, so the
 * caller can pace itself instead of buffering without bound. The followers (console-stream.ts,
 * event-stream.ts) do not know which encoding they feed.
 */
import type { ServerResponse } from 'node:http';

/** How events are framed on the wire. */
export type EventFormat = 'ndjson' | 'sse';

/** Response headers of each format. */
const CONTENT_TYPES: Record<EventFormat, string> = {
  ndjson: 'application/x-ndjson; charset=utf-8',
  sse: 'text/event-stream; charset=utf-8',
};

/**
 * The format a request asks for: SSE when it accepts `text/event-stream` (EventSource sends that,
 * and so does the dashboard's fetch), NDJSON otherwise.
 */
export function eventFormat(accept: string | undefined): EventFormat {
  return accept !== undefined && /(^|,)\s*text\/event-stream/i.test(accept) ? 'sse' : 'ndjson';
}

/** One event as its format frames it. SSE data is JSON on one line: JSON.stringify never emits a newline. */
function encode(format: EventFormat, event: object): string {
  const json = JSON.stringify(event);
  return format === 'sse' ? `data: ${json}\n\n` : `${json}\n`;
}

/** Starts an event stream on `res`: status, headers (sent at once: the first event may be long in coming). */
export function startEventStream(res: ServerResponse, format: EventFormat): EventWriter {
  res.writeHead(200, { 'content-type': CONTENT_TYPES[format], 'cache-control': 'no-store', 'x-accel-buffering': 'no' });
  res.flushHeaders();
  return new EventWriter(res, format);
}

/** Events onto a response, with backpressure exposed. */
export class EventWriter {
  /** True while the socket holds more than its high-water mark: stop writing until `drained`. */
  blocked = false;
  /** True once the response is finished or the client went away. */
  closed = false;
  private drainWaiters: (() => void)[] = [];

  constructor(private readonly res: ServerResponse, readonly format: EventFormat) {
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
    if (!this.res.write(encode(this.format, event))) this.blocked = true;
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
    this.res.end(encode(this.format, event));
  }

  private release(): void {
    const waiters = this.drainWaiters;
    this.drainWaiters = [];
    for (const resolve of waiters) resolve();
  }
}
