/** The worker registry: the one owner of sessions; joined/left published, cancels and drops carried to the workers. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { pino } from 'pino';
import { createEventBus, type KilnEventName } from '../../src/server/events.js';
import { freeSlots, WorkerRegistry, type WorkerLink } from '../../src/server/worker-registry.js';

function fakeLink(name: string, sent: string[], over: Partial<WorkerLink> = {}): WorkerLink {
  return {
    name, identity: 'shared', session: undefined, platform: 'linux', labels: {}, capacity: 2, once: false,
    assign: (run) => sent.push(`assign ${run.id}`),
    cancel: (runId, reason) => sent.push(`cancel ${runId}: ${reason}`),
    release: (runId) => sent.push(`release ${runId}`),
    done: (runId) => sent.push(`done ${runId}`),
    notice: (message) => sent.push(`notice ${message}`),
    ...over,
  };
}

function setup() {
  const events = createEventBus(pino({ level: 'silent' }));
  const heard: string[] = [];
  for (const name of ['worker.joined', 'worker.left'] as const satisfies readonly KilnEventName[]) {
    events.on(name, ({ session }) => heard.push(`${name} ${session.name}`));
  }
  return { events, heard, registry: new WorkerRegistry(events) };
}

test('a session is listed when it joins (worker.joined) and unlisted when it leaves (worker.left), giving back its runs', () => {
  const { registry, heard } = setup();
  const session = registry.create(fakeLink('w1', []));
  assert.equal(registry.session('w1'), undefined, 'not listed before its hello is handled');
  registry.hold(session, 'r1');
  registry.join(session);
  assert.deepEqual(heard, ['worker.joined w1']);
  assert.equal(registry.session('w1'), session);
  assert.equal(freeSlots(session), 1);
  assert.deepEqual(registry.leave(session), ['r1']);
  assert.deepEqual(heard, ['worker.joined w1', 'worker.left w1']);
  assert.equal(registry.session('w1'), undefined);
  assert.equal(session.open, false);
  assert.equal(session.running.size, 0);
});

test('a session cut off is unlisted at once (worker.left) but keeps its runs until it leaves', () => {
  const { registry, heard } = setup();
  const session = registry.create(fakeLink('w1', []));
  registry.join(session);
  registry.hold(session, 'r1');
  registry.unlist(session);
  assert.equal(registry.session('w1'), undefined);
  assert.equal(freeSlots(session), 0);
  assert.deepEqual([...session.running], ['r1']);
  assert.deepEqual(heard, ['worker.joined w1', 'worker.left w1']);
  // A newer session of the name stays listed when the old one finally leaves.
  const newer = registry.create(fakeLink('w1', []));
  registry.join(newer);
  assert.deepEqual(registry.leave(session), ['r1']);
  assert.equal(registry.session('w1'), newer);
});

test('a cancel requested reaches the session holding the run, and only it', () => {
  const { registry, events } = setup();
  const sent: string[] = [];
  const other: string[] = [];
  const holder = registry.create(fakeLink('w1', sent));
  const bystander = registry.create(fakeLink('w2', other));
  registry.join(holder);
  registry.join(bystander);
  registry.hold(holder, 'r1');
  events.publish('run.cancel-requested', { run: { id: 'r1', worker: 'w1' } as never, reason: 'cancelled by alice' });
  events.publish('run.cancel-requested', { run: { id: 'r2', worker: 'w1' } as never, reason: 'not held' });
  assert.deepEqual(sent, ['cancel r1: cancelled by alice']);
  assert.deepEqual(other, []);
});

test('a dropped platform gives its workers no runs and tells them; undropped, they are told again', () => {
  const { registry, events } = setup();
  const sent: string[] = [];
  const other: string[] = [];
  registry.join(registry.create(fakeLink('w1', sent)));
  registry.join(registry.create(fakeLink('w2', other, { platform: 'bsd' })));
  events.publish('platform.dropped', { platform: 'linux', cancelled: [] });
  assert.ok(registry.isDropped('linux'));
  assert.equal(registry.isDropped('bsd'), false);
  events.publish('platform.undropped', { platform: 'linux' });
  assert.equal(registry.isDropped('linux'), false);
  assert.equal(sent.length, 2);
  assert.match(sent[0]!, /^notice platform linux was dropped/);
  assert.match(sent[1]!, /^notice platform linux is back/);
  assert.deepEqual(other, []);
});

test('a draining or once-used session has no free slot', () => {
  const { registry } = setup();
  const draining = registry.create(fakeLink('w1', []));
  registry.drain(draining);
  assert.equal(freeSlots(draining), 0);
  const once = registry.create(fakeLink('w2', [], { once: true }));
  assert.equal(freeSlots(once), 1);
  registry.hold(once, 'r1');
  registry.letGo(once, 'r1');
  assert.equal(freeSlots(once), 0, 'a --once worker takes one run in its life');
});

test('dropped platforms read again on feed.resync replace the kept ones: each change is published as heard from the feed, and workers are told', async () => {
  const events = createEventBus(pino({ level: 'silent' }));
  let stored = ['linux', 'bsd'];
  const heard: string[] = [];
  events.on('platform.dropped', ({ platform, remote }) => heard.push(`dropped ${platform}${remote ? ' (remote)' : ''}`));
  events.on('platform.undropped', ({ platform, remote }) => heard.push(`undropped ${platform}${remote ? ' (remote)' : ''}`));
  let read!: Promise<string[]>;
  const registry = new WorkerRegistry(events, { droppedPlatforms: () => (read = Promise.resolve(stored)) });
  registry.restoreDropped(['linux', 'bsd']);
  registry.restoreDropped(['linux']);
  assert.equal(registry.isDropped('bsd'), false, 'restoreDropped replaces the set');
  const sent: string[] = [];
  registry.join(registry.create(fakeLink('w1', sent)));

  // Another server undropped linux and dropped mac; both events were missed.
  stored = ['mac'];
  events.publish('feed.resync', {});
  await read;
  await Promise.resolve();
  assert.deepEqual(heard, ['undropped linux (remote)', 'dropped mac (remote)']);
  assert.equal(registry.isDropped('linux'), false);
  assert.equal(registry.isDropped('mac'), true);
  assert.match(sent[0]!, /^notice platform linux is back/, 'the worker of linux is told');
});

test('a platform dropped on another server (remote) reaches the workers here', () => {
  const { events, registry } = setup();
  const sent: string[] = [];
  registry.join(registry.create(fakeLink('w1', sent)));
  events.publish('platform.dropped', { platform: 'linux', cancelled: [], remote: true });
  assert.equal(registry.isDropped('linux'), true);
  assert.match(sent[0]!, /^notice platform linux was dropped/);
});
