/** A small typed client of the Kiln HTTP API, shared by the CLI (and later the dashboard). */
import { KilnError, ServerUnreachableError, UnauthorizedError } from '../errors.js';
import type { PresentedEvent, PresentedJob, PresentedRun, PresentedWorker } from '../server/api/present.js';
import type { PresentedToken } from '../server/api/token-routes.js';

export type { PresentedEvent, PresentedJob, PresentedRun, PresentedToken, PresentedWorker };

/** Who a credential is, as `GET /api/session` says (and `POST /api/session` when signing in). */
export interface SessionReply {
  name: string;
  role: 'viewer' | 'operator' | 'admin';
  via?: 'token' | 'session';
  expiresAt: string | null;
  /** The value state-changing requests signed in by the cookie carry in X-Kiln-CSRF (null via a token). */
  csrf: string | null;
}

/** An error the server answered with, carrying its code. */
export class ApiError extends KilnError {}

/** One event of a console stream. */
export type ConsoleEvent =
  | { type: 'line'; seq: number; ts: number; text: string }
  | { type: 'end'; run: PresentedRun }
  /** Sent on a silent followed stream so that nothing between times it out. */
  | { type: 'keepalive' };

/** Server info, as `GET /api/info` returns it. */
export interface InfoReply {
  schedule: {
    job: string; platforms: string[]; schedule: string; paused: boolean; overlap: string; nextAt: string | null;
    skipped: number; lastSkip: { at: string; reason: string } | null;
  }[];
  dropped: { platform: string; droppedAt: string }[];
  queues: Record<string, PresentedRun[]>;
  running: PresentedRun[];
  workers: PresentedWorker[];
  artifacts: { keepRuns: number | null; keepForMs: number | null };
  upload: {
    target: string | null; pending: number; delivered: number; failed: number; oldestPendingAt: string | null;
    troubled: PresentedDelivery[];
  } | null;
}

/** A run's delivery to the upload target. */
export interface PresentedDelivery {
  id: number; runId: string; target: string; state: 'pending' | 'delivered' | 'failed'; attempts: number;
  nextAt: string | null; lastError: string | null; createdAt: string; endedAt: string | null;
}

/** Talks to one server with one token. */
export class ApiClient {
  constructor(
    readonly baseUrl: string,
    private readonly token: string | undefined,
  ) {}

  private async fetch(method: string, path: string, body?: unknown): Promise<Response> {
    let response: Response;
    try {
      response = await fetch(new URL(path, this.baseUrl), {
        method,
        headers: {
          ...(this.token ? { authorization: `Bearer ${this.token}` } : {}),
          ...(body === undefined ? {} : { 'content-type': 'application/json' }),
        },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (raw) {
      const cause = (raw as { cause?: { code?: string; message?: string } }).cause;
      throw new ServerUnreachableError(this.baseUrl, cause?.code ?? cause?.message ?? String(raw));
    }
    if (response.ok) return response;
    let error: { code?: string; message?: string } | undefined;
    try {
      error = ((await response.json()) as { error?: typeof error }).error;
    } catch {
      // Not a Kiln answer (a proxy's page, say): fall back to the status line.
    }
    if (response.status === 401) throw new UnauthorizedError(`the server rejected the token: ${error?.message ?? 'unauthorized'}`);
    throw new ApiError(error?.code ?? 'KILN_ERR_HTTP', response.status, error?.message ?? `HTTP ${response.status} ${response.statusText}`);
  }

  /** A request whose body the caller reads (a download). */
  raw(method: string, path: string): Promise<Response> {
    return this.fetch(method, path);
  }

  /** A JSON request. */
  async request<T>(method: string, path: string, body?: unknown): Promise<T> {
    return (await (await this.fetch(method, path, body)).json()) as T;
  }

  /** An NDJSON stream of console events. */
  async *console(runId: string, follow: boolean, after = -1): AsyncGenerator<ConsoleEvent> {
    const response = await this.fetch('GET', `/api/runs/${encodeURIComponent(runId)}/console?follow=${follow}&after=${after}`);
    const decoder = new TextDecoder();
    let buffered = '';
    try {
      for await (const chunk of response.body as unknown as AsyncIterable<Uint8Array>) {
        buffered += decoder.decode(chunk, { stream: true });
        let newline: number;
        while ((newline = buffered.indexOf('\n')) !== -1) {
          const text = buffered.slice(0, newline);
          buffered = buffered.slice(newline + 1);
          if (text !== '') yield JSON.parse(text) as ConsoleEvent;
        }
      }
    } catch (raw) {
      throw new ServerUnreachableError(this.baseUrl, `the console stream broke: ${(raw as Error).message}`);
    }
  }
}
