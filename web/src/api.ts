/** The API as the page uses it: JSON reads and actions, and event streams read with fetch. */
import { createParser } from 'eventsource-parser';
import { backoffMs } from '../../src/core/backoff.js';
import { request } from './session.js';

/** An error the server answered with (its catalogued code and message). */
export class ApiError extends Error {
  constructor(readonly code: string, readonly status: number, message: string) {
    super(message);
  }
}

async function call<T>(method: string, path: string, body?: unknown): Promise<T> {
  const response = await request(path, {
    method,
    headers: body === undefined ? {} : { 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const json = (await response.json().catch(() => ({}))) as { error?: { code: string; message: string } };
  if (!response.ok) throw new ApiError(json.error?.code ?? 'KILN_ERR_HTTP', response.status, json.error?.message ?? `HTTP ${response.status}`);
  return json as T;
}

/** GET a JSON reply. */
export const get = <T>(path: string) => call<T>('GET', path);
/** POST an action (an empty JSON object unless a body is given). */
export const post = <T>(path: string, body: unknown = {}) => call<T>('POST', path, body);

/**
 * Reads the server-sent events of `path` and hands each event's JSON to `onEvent` until the stream
 * ends or `signal` aborts. Resolves when the stream ends; rejects when it breaks.
 */
export async function readEvents(path: string, onEvent: (event: { type: string } & Record<string, any>) => void, signal: AbortSignal): Promise<void> {
  const response = await request(path, { headers: { accept: 'text/event-stream' }, signal });
  if (!response.ok || !response.body) throw new ApiError('KILN_ERR_HTTP', response.status, `HTTP ${response.status}`);
  const parser = createParser({ onEvent: (message) => onEvent(JSON.parse(message.data)) });
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) return;
    parser.feed(value);
  }
}

/** Reconnect timings of the farm's event stream: 0.5 s, doubling to 15 s. */
const RECONNECT = { retryMinMs: 500, retryMaxMs: 15_000 };

/**
 * Follows `GET /api/events` for as long as `signal` lives, reconnecting after breaks; `onEvent`
 * gets each event, and a `hello` at every (re)connection: the moment to re-read what is shown.
 */
export function followFarm(onEvent: (event: { type: string } & Record<string, any>) => void, signal: AbortSignal): void {
  void (async () => {
    for (let failures = 0; !signal.aborted;) {
      try {
        await readEvents('/api/events', (event) => {
          failures = 0;
          onEvent(event);
        }, signal);
      } catch {
        // Broken or refused: tried again after a rest (a 401 has signed the page out meanwhile).
      }
      if (signal.aborted) return;
      failures += 1;
      await new Promise((resolve) => setTimeout(resolve, backoffMs(failures, RECONNECT)));
    }
  })();
}
