/** A small typed client of the Kiln HTTP API, shared by the CLI; its reply types are the dashboard's contract too. */
import type { WaitReason } from '../core/index.js';
import { plainHttpHint, untrustedCertificateReason } from '../core/tls-failure.js';
import { KilnError, ServerUnreachableError, ServerUntrustedError, UnauthorizedError } from '../errors.js';
import type { PoolView } from '../server/latent/pool-manager.js';
import type { PresentedEvent, PresentedJob, PresentedRun, PresentedServer, PresentedWorker } from '../server/api/present.js';
import type { PresentedToken } from '../server/api/token-routes.js';

export type { PresentedEvent, PresentedJob, PresentedRun, PresentedServer, PresentedToken, PresentedWorker };

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
  /**
   * The farm's servers (several on one PostgreSQL; one on SQLite), alive first: each with the
   * leases (singletons) it holds, and `self` for the server that answered. Times ISO 8601.
   */
  servers: PresentedServer[];
  /** `HOST:PORT` of the answering server's robur port (`--robur-listen`), or null when off. */
  robur?: string | null;
}


/** `GET /api/jobs`: each job as presented, with the platforms it runs on and its last run (null: never run). */
export interface JobsReply {
  jobs: (PresentedJob & { platforms: string[]; lastRun: PresentedRun | null })[];
}

/** `GET /api/queues`: every platform the farm knows, with why each waiting run waits. */
export interface QueuesReply {
  queues: {
    platform: string; dropped: boolean; workers: number; freeSlots: number; pools: string[];
    runs: { run: PresentedRun; waiting: WaitReason }[];
  }[];
}

/** `GET /api/workers`. */
export interface WorkersReply {
  workers: PresentedWorker[];
  pools: PoolView[];
}

/** `GET /api/runs/:id/events`: a run's history. */
export interface RunEventsReply {
  run: PresentedRun;
  events: PresentedEvent[];
  deliveries: PresentedDelivery[];
}

/** `GET /api/runs/:id/artifacts`. */
export interface ArtifactsReply {
  run: string;
  artifacts: { path: string; size: number; sha256: string; mode: number }[];
}

/** One event of `GET /api/events` (the farm, live); `hello` once subscribed, `resync` after missed events. */
export type FarmEvent = { type: string; runId?: string; job?: string; platform?: string; worker?: string } & Record<string, unknown>;

/** A run's delivery to the upload target. */
export interface PresentedDelivery {
  id: number; runId: string; target: string; state: 'pending' | 'delivered' | 'failed'; attempts: number;
  nextAt: string | null; lastError: string | null; createdAt: string; endedAt: string | null;
}

/**
 * A fetch that trusts only `ca` (PEM). Node's global fetch takes no CA of its own, so this is
 * undici's fetch with an Agent (undici 7: 8 needs a newer Node than 20); loaded only for --ca.
 */
async function fetchTrusting(ca: string): Promise<typeof fetch> {
  const { Agent, fetch: undiciFetch } = await import('undici');
  const dispatcher = new Agent({ connect: { ca } });
  return ((input: URL, init: RequestInit) => undiciFetch(input, { ...init, dispatcher } as never)) as unknown as typeof fetch;
}

/** Talks to one server with one token. */
export class ApiClient {
  private fetcher: Promise<typeof fetch> | undefined;

  constructor(
    readonly baseUrl: string,
    private readonly token: string | undefined,
    /** PEM CA certificates to trust the server by (`--ca`); none: Node's default trust store. */
    private readonly ca?: string,
  ) {}

  private async fetch(method: string, path: string, body?: unknown, bytes?: Uint8Array): Promise<Response> {
    let response: Response;
    try {
      const fetcher = await (this.fetcher ??= this.ca === undefined ? Promise.resolve(fetch) : fetchTrusting(this.ca));
      response = await fetcher(new URL(path, this.baseUrl), {
        method,
        headers: {
          ...(this.token ? { authorization: `Bearer ${this.token}` } : {}),
          ...(bytes !== undefined ? { 'content-type': 'application/octet-stream' } : body === undefined ? {} : { 'content-type': 'application/json' }),
        },
        // A Buffer read from a file is backed by an ArrayBuffer, never a SharedArrayBuffer (what the DOM typings rule out).
        body: (bytes as Uint8Array<ArrayBuffer> | undefined) ?? (body === undefined ? undefined : JSON.stringify(body)),
      });
    } catch (raw) {
      const cause = (raw as { cause?: { code?: string; message?: string } }).cause;
      const untrusted = untrustedCertificateReason(cause);
      if (untrusted !== undefined) throw new ServerUntrustedError(this.baseUrl, untrusted);
      throw new ServerUnreachableError(this.baseUrl, plainHttpHint(this.baseUrl, cause) ?? cause?.code ?? cause?.message ?? String(raw));
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

  /** A request whose body is raw bytes (application/octet-stream), answered with JSON. */
  async upload<T>(method: string, path: string, bytes: Uint8Array): Promise<T> {
    return (await (await this.fetch(method, path, undefined, bytes)).json()) as T;
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
