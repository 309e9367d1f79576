/** The event bus: synchronous delivery in subscription order, unsubscribe, a throwing subscriber isolated. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { Logger } from 'pino';
import { createEventBus } from '../../src/server/events.js';

/** A logger that keeps what was logged at error. */
function recordingLog(): { log: Logger; errors: { fields: Record<string, unknown>; msg: string }[] } {
  const errors: { fields: Record<string, unknown>; msg: string }[] = [];
  const log = { error: (fields: Record<string, unknown>, msg: string) => errors.push({ fields, msg }) } as unknown as Logger;
  return { log, errors };
}

test('publish delivers to every subscriber of the name, in order, before it returns', () => {
  const bus = createEventBus(recordingLog().log);
  const heard: string[] = [];
  bus.on('job.changed', ({ name }) => heard.push(`a:${name}`));
  bus.on('job.changed', ({ name }) => heard.push(`b:${name}`));
  bus.on('platform.undropped', ({ platform }) => heard.push(`other:${platform}`));
  bus.publish('job.changed', { name: 'nightly' });
  assert.deepEqual(heard, ['a:nightly', 'b:nightly']);
});

test('an event nobody subscribed to is published without effect', () => {
  const bus = createEventBus(recordingLog().log);
  assert.doesNotThrow(() => bus.publish('dispatch.idle', {}));
});

test('unsubscribing stops delivery to that subscriber only', () => {
  const bus = createEventBus(recordingLog().log);
  const heard: string[] = [];
  const off = bus.on('run.ended', ({ runId }) => heard.push(`a:${runId}`));
  bus.on('run.ended', ({ runId }) => heard.push(`b:${runId}`));
  bus.publish('run.ended', { runId: 'r1', from: 'queued', status: 'cancelled' });
  off();
  bus.publish('run.ended', { runId: 'r2', from: 'queued', status: 'cancelled' });
  assert.deepEqual(heard, ['a:r1', 'b:r1', 'b:r2']);
});

test('a subscriber that throws is logged; the publisher and later subscribers go on', () => {
  const { log, errors } = recordingLog();
  const bus = createEventBus(log);
  const heard: string[] = [];
  bus.on('run.queued', () => {
    throw new Error('subscriber broke');
  });
  bus.on('run.queued', ({ runs }) => heard.push(runs[0]!.id));
  assert.doesNotThrow(() => bus.publish('run.queued', { runs: [{ id: 'r1', job: 'j', platform: 'p' }] }));
  assert.deepEqual(heard, ['r1']);
  assert.equal(errors.length, 1);
  assert.equal(errors[0]!.fields.event, 'run.queued');
  assert.match(String((errors[0]!.fields.err as Error).message), /subscriber broke/);
});

test('a subscriber added while an event is delivered hears the next one, not this one', () => {
  const bus = createEventBus(recordingLog().log);
  const heard: string[] = [];
  bus.on('job.changed', ({ name }) => {
    heard.push(`first:${name}`);
    bus.on('job.changed', ({ name: later }) => heard.push(`late:${later}`));
  });
  bus.publish('job.changed', { name: 'a' });
  assert.deepEqual(heard, ['first:a']);
});
