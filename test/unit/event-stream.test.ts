/**
 * The farm's event stream (`GET /api/events`) against a response that pushes back: events are
 * dropped while the client lags, never buffered, and it is told to re-read (`resync`) once it
 * drains; a client that goes away is unsubscribed from the bus.
 */
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { test } from 'node:test';
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { Logger } from 'pino';
import { streamFarmEvents } from '../../src/server/api/event-stream.js';
import { createEventBus } from '../../src/server/events.js';

/** A response whose socket is full while `full` is set (write returns false, as Node's does). */
class SlowResponse extends EventEmitter {
  chunks: string[] = [];
  full = false;
  headers: Record<string, string> = {};
  writeHead(_status: number, headers: Record<string, string>): void {
    this.headers = headers;
  }
  flushHeaders(): void {}
  write(chunk: string): boolean {
    this.chunks.push(chunk);
    return !this.full;
  }
  end(chunk: string): void {
    this.chunks.push(chunk);
  }
  /** The events written, decoded from their SSE frames. */
  events(): { type: string }[] {
    return this.chunks.map((chunk) => {
      assert.match(chunk, /^data: .*\n\n$/s);
      return JSON.parse(chunk.slice('data: '.length));
    });
  }
}

test('a lagging client loses events, not memory, and is told to resync once it drains; gone, it is unsubscribed', (t) => {
  const bus = createEventBus({ error: () => undefined } as unknown as Logger);
  const raw = new SlowResponse();
  // The client goes away whatever happens (its keep-alive timer stops with it).
  t.after(() => raw.emit('close'));
  const request = { headers: { accept: 'text/event-stream' } } as unknown as FastifyRequest;
  const reply = { hijack: () => undefined, raw } as unknown as FastifyReply;
  streamFarmEvents(request, reply, bus);
  assert.match(raw.headers['content-type']!, /^text\/event-stream/);
  assert.deepEqual(raw.events(), [{ type: 'hello' }]);

  raw.full = true;
  bus.publish('job.changed', { name: 'a' }); // written; the socket is now full
  bus.publish('job.changed', { name: 'b' }); // dropped
  bus.publish('platform.undropped', { platform: 'p' }); // dropped
  assert.deepEqual(raw.events().slice(1), [{ type: 'job.changed', job: 'a' }]);

  raw.full = false;
  raw.emit('drain');
  bus.publish('job.changed', { name: 'c' });
  assert.deepEqual(raw.events().slice(2), [{ type: 'resync' }, { type: 'job.changed', job: 'c' }]);

  raw.emit('close');
  bus.publish('job.changed', { name: 'd' });
  assert.equal(raw.events().length, 4, 'nothing is written after the client went away');
});

test('events carry ids and names only: no run, session or console', (t) => {
  const bus = createEventBus({ error: () => undefined } as unknown as Logger);
  const raw = new SlowResponse();
  t.after(() => raw.emit('close'));
  streamFarmEvents({ headers: { accept: 'text/event-stream' } } as unknown as FastifyRequest, { hijack: () => undefined, raw } as unknown as FastifyReply, bus);
  bus.publish('run.line', { runId: 'r1', lines: [{ seq: 0, ts: 1, text: 'secret output' }], source: 'worker' });
  bus.publish('dispatch.idle', {});
  bus.publish('run.lost', { runId: 'r1', worker: undefined, reason: 'gone' });
  assert.deepEqual(raw.events(), [{ type: 'hello' }, { type: 'run.lost', runId: 'r1', worker: null, reason: 'gone' }]);
});
