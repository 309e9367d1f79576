/** A real server started in the test's own process, and a hand-driven worker over a real WebSocket. */
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { TestContext } from 'node:test';
import pino from 'pino';
import WebSocket from 'ws';
import { startServer, type KilnServer } from '../../src/server/index.js';
import type { BlobStoreLocation } from '../../src/server/artifact-store.js';
import type { JobStore } from '../../src/store/index.js';

/** Starts a server on a free port with a temp data dir; closed when the test ends. */
export interface InProcessOptions {
  heartbeatMs?: number;
  dataDir?: string;
  /** Default here 300 ms, so tests of lost workers do not wait the real 30 s. */
  reattachGraceMs?: number;
  backstopMs?: number;
  /** An injected clock. */
  now?: () => number;
  artifactLimits?: { fileBytes?: number; runBytes?: number };
  /** Wraps the server's store (to make it fail on purpose). */
  wrapStore?: (store: JobStore) => JobStore;
  /** Store URL (default: SQLite in the data dir). */
  store?: string;
  /** Where artifact blobs live (default: the data dir's artifacts/). */
  artifactStore?: BlobStoreLocation;
  /** robur's port (`--robur-listen`); off when absent. */
  robur?: { host: string; port: number };
}

export async function inProcessServer(t: TestContext, options: InProcessOptions = {}): Promise<KilnServer & { dataDir: string }> {
  const dataDir = options.dataDir ?? mkdtempSync(path.join(os.tmpdir(), 'kiln-int-'));
  if (!options.dataDir) t.after(() => rmSync(dataDir, { recursive: true, force: true }));
  const server = await startServer(pino({ level: process.env.KILN_TEST_LOG ?? 'silent' }), {
    host: '127.0.0.1', port: 0, dataDir, heartbeatMs: options.heartbeatMs, reattachGraceMs: options.reattachGraceMs ?? 300, backstopMs: options.backstopMs, now: options.now,
    artifactLimits: options.artifactLimits, wrapStore: options.wrapStore, store: options.store, artifactStore: options.artifactStore, robur: options.robur,
  });
  let closed = false;
  t.after(async () => {
    if (!closed) await server.close();
  });
  return {
    ...server,
    dataDir,
    close: async () => {
      closed = true;
      await server.close();
    },
  };
}

/** A worker driven frame by frame by the test. */
export class FakeWorker {
  private queue: unknown[] = [];
  private waiters: ((frame: unknown) => void)[] = [];
  readonly closed: Promise<{ code: number; reason: string }>;

  private constructor(readonly socket: WebSocket) {
    socket.on('message', (data: Buffer) => {
      const frame = JSON.parse(data.toString('utf8'));
      const waiter = this.waiters.shift();
      if (waiter) waiter(frame);
      else this.queue.push(frame);
    });
    this.closed = new Promise((resolve) => socket.on('close', (code, reason) => resolve({ code, reason: reason.toString() })));
  }

  /** Opens a connection with `token`; resolves once open (or rejects with the HTTP status). */
  static connect(t: TestContext, server: KilnServer, token = server.tokens.worker): Promise<FakeWorker> {
    const socket = new WebSocket(server.url.replace('http', 'ws') + '/api/worker', { headers: { authorization: `Bearer ${token}` } });
    t.after(() => socket.terminate());
    return new Promise((resolve, reject) => {
      socket.once('open', () => resolve(new FakeWorker(socket)));
      socket.once('unexpected-response', (_req, res) => reject(new Error(`HTTP ${res.statusCode}`)));
      socket.once('error', reject);
    });
  }

  send(frame: unknown): void {
    this.socket.send(typeof frame === 'string' ? frame : JSON.stringify(frame));
  }

  /** The next frame the server sends. */
  next<T = Record<string, unknown>>(): Promise<T> {
    const queued = this.queue.shift();
    if (queued !== undefined) return Promise.resolve(queued as T);
    return new Promise((resolve) => this.waiters.push(resolve as (frame: unknown) => void));
  }

  /** Says hello and waits for the welcome. */
  async hello(overrides: Record<string, unknown> = {}): Promise<void> {
    this.send(helloFrame(overrides));
    const welcome = await this.next();
    if (welcome.type !== 'welcome') throw new Error(`expected a welcome, got ${JSON.stringify(welcome)}`);
  }
}

/** A valid hello, with fields replaced by `overrides`. */
export function helloFrame(overrides: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    v: 1, type: 'hello', name: 'fake-1', platform: 'testos', labels: {}, capacity: 1, once: false,
    hostname: 'test', os: 'Linux', arch: 'x64', version: '0.0.0-test', runs: [], ...overrides,
  };
}

/** Calls the API with the admin token (or the one given). */
export async function call(server: KilnServer, method: string, route: string, body?: unknown, token: string | null = server.tokens.admin) {
  const response = await fetch(server.url + route, {
    method,
    headers: {
      ...(token === null ? {} : { authorization: `Bearer ${token}` }),
      ...(body === undefined ? {} : { 'content-type': 'application/json' }),
    },
    body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
  });
  const text = await response.text();
  let json: any;
  try {
    json = JSON.parse(text);
  } catch {
    json = text;
  }
  return { status: response.status, body: json };
}

/** A job the fake worker's platform serves. */
export const testJob = { name: 'build', platform: 'testos', script: 'echo hi\n', period: 'never' };

/** A server, a connected fake worker, and a run of `job` already assigned to that worker. */
export async function runOnFakeWorker(t: TestContext, job: Record<string, unknown> = testJob, serverOptions: InProcessOptions = {}) {
  const server = await inProcessServer(t, serverOptions);
  const worker = await FakeWorker.connect(t, server);
  await worker.hello();
  await call(server, 'POST', '/api/jobs', job);
  const runId: string = (await call(server, 'POST', `/api/jobs/${job.name}/execute`, {})).body.run.id;
  const assign = await worker.next<{ type: string; run: Record<string, unknown> }>();
  return { server, worker, runId, assign };
}

/** A run's console events: replayed, then followed until the end when `follow`. */
export async function consoleEvents(server: KilnServer, runId: string, follow = true): Promise<any[]> {
  const response = await fetch(`${server.url}/api/runs/${runId}/console?follow=${follow}`, { headers: { authorization: `Bearer ${server.tokens.admin}` } });
  return (await response.text()).split('\n').filter(Boolean).map((line) => JSON.parse(line));
}

/** `promise`, or a failure saying `what` did not happen within `ms` (a bound on a wait, not a sleep). */
export function within<T>(promise: Promise<T>, what: string, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what}: not within ${ms} ms`)), ms)));
  return Promise.race([promise, late]).finally(() => clearTimeout(timer));
}
