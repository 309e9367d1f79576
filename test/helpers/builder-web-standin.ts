/**
 * A stand-in for robur's builder-web, written as simply as possible from
 * shared/reference/robur-protocol.md §2.2 (there is no OCaml here to run the real one). Only its
 * upload route: `POST /upload`, Basic auth against one user and password (401 `Unauthorized!\n` with
 * `www-authenticate`), the whole body decoded as an exec blob (500 `Internal server error\n` when it
 * does not decode), 409 `Build with same uuid exists: JOB(UUID)\n` for a uuid it already stored, else
 * stored and 201 with an empty body. It records every request and what it decoded. A test may force
 * the next answers (`failNext`) to play builder-web down or broken.
 */
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { TestContext } from 'node:test';
import { decodeExec, type RoburExec } from '../../src/protocol/robur/index.js';

/** One request the stand-in answered. */
export interface StandinRequest {
  method: string;
  url: string;
  headers: http.IncomingHttpHeaders;
  /** Bytes of the body received, and their sha256. */
  bodyBytes: number;
  bodySha256: string;
  status: number;
  /** What the body decoded to (a 201 or 409). */
  exec?: RoburExec;
}

export interface BuilderWebStandin {
  port: number;
  /** Every request, in order. */
  requests: StandinRequest[];
  /** Execs stored (201), by uuid. */
  stored: Map<string, RoburExec>;
  /** The password it accepts from now on. */
  setPassword(password: string): void;
  /** Answers the next `count` uploads with `status` (and `body`) whatever they hold, as a broken builder-web would. */
  failNext(count: number, status: number, body?: string): void;
  /** Stores the next upload as usual but answers it `status`: a 201 lost on its way back (a proxy's timeout). */
  loseNextAnswer(status: number): void;
  /** Resolves once `count` requests have been answered in all. */
  answered(count: number): Promise<void>;
}

/** Starts the stand-in on 127.0.0.1 (a free port); closed when the test ends. */
export async function startBuilderWebStandin(t: TestContext, user: string, password: string): Promise<BuilderWebStandin> {
  let accepted = `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;
  const requests: StandinRequest[] = [];
  const stored = new Map<string, RoburExec>();
  const forced: { status: number; body: string }[] = [];
  let lost: number | undefined;
  const waiters: (() => void)[] = [];

  const server = http.createServer((request, response) => {
    const chunks: Buffer[] = [];
    request.on('data', (chunk: Buffer) => chunks.push(chunk));
    request.on('end', () => {
      // builder-web reads the whole body before it decodes it.
      const body = Buffer.concat(chunks);
      const record: StandinRequest = { method: request.method ?? '', url: request.url ?? '', headers: request.headers, bodyBytes: body.length, bodySha256: createHash('sha256').update(body).digest('hex'), status: 0 };
      const answer = (status: number, text: string, headers: Record<string, string> = {}) => {
        record.status = status;
        requests.push(record);
        response.writeHead(status, { 'content-type': 'text/plain', ...headers }).end(text);
        for (const wake of waiters.splice(0)) wake();
      };
      if (request.method !== 'POST' || request.url !== '/upload') return answer(404, 'Not found\n');
      const force = forced.shift();
      if (force) return answer(force.status, force.body);
      if (request.headers.authorization !== accepted) return answer(401, 'Unauthorized!\n', { 'www-authenticate': 'Basic realm="builder-web"' });
      let exec: RoburExec;
      try {
        exec = decodeExec(body);
      } catch {
        return answer(500, 'Internal server error\n');
      }
      record.exec = exec;
      if (stored.has(exec.uuid)) return answer(409, `Build with same uuid exists: ${exec.job.name}(${exec.uuid})\n`);
      stored.set(exec.uuid, exec);
      if (lost !== undefined) {
        const status = lost;
        lost = undefined;
        return answer(status, 'Bad Gateway\n');
      }
      return answer(201, '');
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.after(() => new Promise<void>((resolve) => {
    server.closeAllConnections();
    server.close(() => resolve());
  }));
  return {
    port: (server.address() as AddressInfo).port,
    requests,
    stored,
    setPassword(next) {
      accepted = `Basic ${Buffer.from(`${user}:${next}`).toString('base64')}`;
    },
    failNext(count, status, body = '') {
      for (let i = 0; i < count; i += 1) forced.push({ status, body });
    },
    loseNextAnswer(status) {
      lost = status;
    },
    async answered(count) {
      while (requests.length < count) await new Promise<void>((resolve) => waiters.push(resolve));
    },
  };
}
