/**
 * Several servers on one PostgreSQL schema (issue 16): presence, leases and the feed bridge, each
 * "server" a store joined to a fresh schema in this process, with short ticks. Real PostgreSQL; a
 * server's death is its presence backend ended by pg_terminate_backend (what PostgreSQL sees of a SIGKILL).
 */
import assert from 'node:assert/strict';
import { describe, test, type TestContext } from 'node:test';
import pino from 'pino';
import { createFarmUrls } from '../../src/server/cluster/farm-urls.js';
import { FeedBridge } from '../../src/server/cluster/feed-bridge.js';
import { PgLeaseKeeper } from '../../src/server/cluster/lease-keeper.js';
import { createEventBus, type EventBus, type KilnEventName, type KilnEvents } from '../../src/server/events.js';
import type { JobStore } from '../../src/store/index.js';
import { openPostgresStore } from '../../src/store/postgres/postgres-store.js';
import type { Presence } from '../../src/store/postgres/presence.js';
import { adminQuery, freshSchema } from '../helpers/postgres.js';
import { needs } from '../helpers/requirements.js';

const skip = needs('postgres');
const log = pino({ level: 'silent' });
const HEARTBEAT_MS = 200;

interface Member {
  id: string;
  store: JobStore;
  presence: Presence;
  events: EventBus;
}

/** A "server": the store joined to `url` as `id`, with its bus; closed when the test ends. */
async function member(t: TestContext, url: string, id: string, leaseTtlMs = 2_000): Promise<Member> {
  let presence: Presence | undefined;
  const store = await openPostgresStore(url, {
    join: {
      serverId: id, info: { url: `http://${id}.test`, hostname: 'h', pid: process.pid, version: 'test', configDigest: 'd' }, heartbeatMs: HEARTBEAT_MS, leaseTtlMs,
      joined: (p) => (presence = p),
    },
  });
  t.after(() => store.close());
  return { id, store, presence: presence!, events: createEventBus(log) };
}

function keeper(t: TestContext, m: Member): PgLeaseKeeper {
  const k = new PgLeaseKeeper({ presence: m.presence, log, events: m.events });
  t.after(() => k.stop());
  return k;
}

/** Resolves once `check` holds, polling every 20 ms; rejects after `withinMs`. */
async function until(what: string, check: () => boolean | Promise<boolean>, withinMs = 10_000): Promise<number> {
  const start = Date.now();
  for (;;) {
    if (await check()) return Date.now() - start;
    if (Date.now() - start > withinMs) throw new Error(`not within ${withinMs} ms: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

async function leaseRow(schema: string, name: string): Promise<{ holder: string; epoch: number } | undefined> {
  const { rows } = await adminQuery(`SELECT holder, epoch::int AS epoch FROM ${schema}.leases WHERE name = '${name}'`);
  return rows[0] as { holder: string; epoch: number } | undefined;
}

describe('several servers on one PostgreSQL schema', { skip }, () => {
  test('two keepers want the same leases: exactly one holds each, as the leases table says; both are listed alive with their leases', async (t) => {
    const { url, schema } = await freshSchema(t);
    const a = await member(t, url, 'aaaa0001');
    const b = await member(t, url, 'bbbb0002');
    const ka = keeper(t, a);
    const kb = keeper(t, b);
    const names = ['scheduler', 'reaper', 'outbox', 'pool:x'];
    const leases = names.map((name) => [ka.want(name), kb.want(name)] as const);
    await until('every lease held by someone', () => leases.every(([x, y]) => x.held || y.held));
    // Several ticks: renewals and tries go on, and still one holder each.
    await new Promise((resolve) => setTimeout(resolve, HEARTBEAT_MS * 4));
    for (const [i, [x, y]] of leases.entries()) {
      assert.equal(Number(x.held) + Number(y.held), 1, `${names[i]}: exactly one holder`);
      const row = await leaseRow(schema, names[i]!);
      assert.equal(row?.holder, x.held ? a.id : b.id);
      assert.equal(row?.epoch, (x.held ? x : y).epoch);
    }
    const servers = await a.store.listServers();
    assert.deepEqual(servers.map((s) => [s.id, s.alive]).sort(), [[a.id, true], [b.id, true]]);
    assert.deepEqual(servers.flatMap((s) => s.leases).sort(), [...names].sort());
  });

  test("the holder's presence backend ended (as a SIGKILL leaves it): it is told the loss at once, and the lease is held again within seconds, with a higher epoch", async (t) => {
    const { url, schema } = await freshSchema(t);
    const a = await member(t, url, 'aaaa0003');
    const ka = keeper(t, a);
    const la = ka.want('scheduler');
    await until('a holds it', () => la.held);
    const b = await member(t, url, 'bbbb0004');
    const kb = keeper(t, b);
    const lb = kb.want('scheduler');
    const before = la.epoch;
    const told: { held: boolean; heldThen: boolean }[] = [];
    la.onChange((held) => told.push({ held, heldThen: la.held }));
    await adminQuery(`SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity WHERE application_name LIKE '% server ${a.id}'`);
    await until('a told of the loss', () => told.length > 0);
    // (By now it may hold the lease again: the presence comes back within a tick.)
    assert.deepEqual(told[0], { held: false, heldThen: false }, 'told the loss first, not holding it then');
    const took = await until('held again', () => la.held || lb.held);
    const holder = la.held ? la : lb;
    assert.ok(holder.epoch > before, `epoch ${holder.epoch} > ${before}`);
    assert.equal(Number(la.held) + Number(lb.held), 1);
    assert.equal((await leaseRow(schema, 'scheduler'))?.epoch, holder.epoch);
    t.diagnostic(`held again after ${took} ms by ${la.held ? 'the same server (it came back first)' : 'the other server'}`);
    await until('a present again', () => a.presence.held);
  });

  test('a holder that vanishes without a word (presence lock gone, no retake) loses the lease to the other within one tick or so, epoch +1', async (t) => {
    const { url, schema } = await freshSchema(t);
    // A long TTL, so that a lease taken well before it ran out was freed by the missing presence lock, however loaded the machine.
    const ttl = 20_000;
    const a = await member(t, url, 'aaaa0005', ttl);
    const ka = keeper(t, a);
    const la = ka.want('outbox');
    await until('a holds it', () => la.held);
    const b = await member(t, url, 'bbbb0006', ttl);
    const lb = keeper(t, b).want('outbox');
    const before = la.epoch;
    // As a SIGKILL: a stops doing anything (it will not retake), and PostgreSQL ends its backend.
    await a.presence.leave().catch(() => undefined);
    const stoppedAt = (await adminQuery(`UPDATE ${schema}.servers SET stopped_at = NULL WHERE id = '${a.id}' RETURNING id`)).rowCount;
    assert.equal(stoppedAt, 1, 'its row stays as a crash leaves it (not stopped)');
    const took = await until('b holds it', () => lb.held, ttl);
    assert.equal(lb.epoch, before + 1);
    assert.ok(took < ttl / 2, `taken in ${took} ms, long before the TTL (${ttl} ms) ran out: the dead holder's missing presence lock freed it`);
  });

  test('a clean stop lets the lease go at once (not after the TTL): the other holds it within a tick or two', async (t) => {
    const { url } = await freshSchema(t);
    // A long TTL, so that a lease handed over well before it ran out was let go, however loaded the machine.
    const ttl = 30_000;
    const a = await member(t, url, 'aaaa0007', ttl);
    const ka = keeper(t, a);
    const la = ka.want('reaper');
    await until('a holds it', () => la.held);
    const b = await member(t, url, 'bbbb0008', ttl);
    const lb = keeper(t, b).want('reaper');
    await new Promise((resolve) => setTimeout(resolve, HEARTBEAT_MS * 2));
    assert.equal(lb.held, false);
    const before = la.epoch;
    await ka.stop();
    assert.equal(la.held, false, 'told before stop resolves');
    const took = await until('b holds it', () => lb.held, ttl);
    assert.ok(took < ttl / 2, `handed over in ${took} ms, long before the TTL (${ttl} ms) ran out`);
    assert.equal(lb.epoch, before + 1);
  });

  test('the feed bridge: an event published on A arrives on B as remote, not back on A; workers become worker.elsewhere; console ranges console.committed; long lists split', async (t) => {
    const { url } = await freshSchema(t);
    const a = await member(t, url, 'aaaa0009');
    const b = await member(t, url, 'bbbb0010');
    const bridgeA = new FeedBridge(a.presence, a.events, log);
    const bridgeB = new FeedBridge(b.presence, b.events, log);
    bridgeA.start('http://a.test');
    bridgeB.start('http://b.test');
    t.after(() => bridgeA.stop('http://a.test'));
    t.after(() => bridgeB.stop('http://b.test'));
    const seen = (bus: EventBus, name: KilnEventName) => {
      const got: unknown[] = [];
      bus.on(name, (payload) => got.push(payload));
      return got;
    };
    const onA = seen(a.events, 'job.changed');
    const onB = seen(b.events, 'job.changed');
    a.events.publish('job.changed', { name: 'build' });
    await until('B hears it', () => onB.length === 1, 5_000);
    assert.deepEqual(onB, [{ name: 'build', remote: true }]);
    // A second event from B, heard on A: by then A's own would have come back, had it.
    b.events.publish('job.changed', { name: 'test' });
    await until('A hears B', () => onA.length === 2, 5_000);
    assert.deepEqual(onA, [{ name: 'build' }, { name: 'test', remote: true }], 'not back on A');
    assert.equal(onB.length, 2, 'B: its own local publish, and no echo of it');

    const elsewhere = seen(b.events, 'worker.elsewhere');
    a.events.publish('worker.joined', { session: { name: 'w1', platform: 'linux' } } as unknown as KilnEvents['worker.joined']);
    await until('worker.elsewhere on B', () => elsewhere.length === 1, 5_000);
    assert.deepEqual(elsewhere, [{ name: 'w1', platform: 'linux', change: 'joined', remote: true }]);

    const consoles = seen(b.events, 'console.committed');
    await a.presence.notify(JSON.stringify({ s: a.id, k: 'console', d: [{ r: 'run-1', a: 0, b: 9 }] }));
    await until('console.committed on B', () => consoles.length === 1, 5_000);
    assert.deepEqual(consoles, [{ ranges: [{ r: 'run-1', a: 0, b: 9 }], remote: true }]);

    const dropped = seen(b.events, 'platform.dropped') as KilnEvents['platform.dropped'][];
    const cancelled = Array.from({ length: 1500 }, (_, i) => `run-${String(i).padStart(6, '0')}-0123456789abcdef`);
    a.events.publish('platform.dropped', { platform: 'linux', cancelled });
    await until('every cancelled id on B', () => dropped.flatMap((d) => d.cancelled).length === cancelled.length, 5_000);
    assert.ok(dropped.length > 1, `split over ${dropped.length} messages`);
    assert.deepEqual(dropped.flatMap((d) => d.cancelled), cancelled);
    assert.ok(dropped.every((d) => d.platform === 'linux' && d.remote === true));

    // A resync is told when presence comes back.
    const resyncs = seen(b.events, 'feed.resync');
    await adminQuery(`SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity WHERE application_name LIKE '% server ${b.id}'`);
    await until('resync on B after its presence came back', () => resyncs.length >= 1, 10_000);
    assert.equal(b.presence.held, true);
    a.events.publish('job.changed', { name: 'after' });
    await until('B hears again after the retake', () => onB.some((e) => (e as { name: string }).name === 'after'), 5_000);
  });
});


describe('a server that closes while taking its presence back', { skip }, () => {
  test('is gone for good once closed: no backend of its own is left, and it is never listed alive again', async (t) => {
    const { url } = await freshSchema(t);
    const a = await member(t, url, 'aaaa0001');
    for (let round = 0; round < 5; round++) {
      const b = await member(t, url, `bbbb000${round}`);
      const lost = new Promise<void>((resolve) => b.presence.onHeld((held) => held || resolve()));
      await adminQuery(`SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity WHERE application_name LIKE '% server ${b.id}'`);
      // Told the loss, the presence has started to take itself back on a new connection: close now.
      await lost;
      await b.store.close();
      // Nothing to wait for: once closed nothing of b may come back; watched for 300 ms.
      const start = Date.now();
      while (Date.now() - start < 300) {
        const { rows } = await adminQuery(`SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name LIKE '% server ${b.id}'`);
        assert.equal(rows[0]!.n, 0, `round ${round}: a backend of b after its close`);
        assert.ok(!(await a.store.listServers()).some((s) => s.id === b.id && s.alive), `round ${round}: b alive after its close`);
      }
    }
  });
});

describe('a pool instance\'s server list', { skip }, () => {
  test('is this server first, then every other live server, kept as servers join and leave', async (t) => {
    const { url } = await freshSchema(t);
    const a = await member(t, url, 'aaaa0001');
    const urls = createFarmUrls(log, { store: a.store, events: a.events, self: () => 'http://self.test', selfId: a.id });
    t.after(() => urls.stop());
    assert.equal(urls.current(), 'http://self.test', 'alone: itself');
    const b = await member(t, url, 'bbbb0002');
    a.events.publish('server.joined', { id: b.id, url: 'http://bbbb0002.test', remote: true });
    await until('b listed', () => urls.current() === 'http://self.test,http://bbbb0002.test');
    await adminQuery(`SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity WHERE application_name LIKE '%${b.id}%'`);
    await b.store.close();
    // pg_terminate_backend only signals: the lock goes when the backend has exited, which a read may precede.
    await until('b dead in the servers table', async () => !(await a.store.listServers()).some((s) => s.id === b.id && s.alive));
    a.events.publish('feed.resync', {});
    await until('b gone once dead', () => urls.current() === 'http://self.test');
  });
});

describe('a presence whose connection stops answering', { skip }, () => {
  test('is cut off within its cut-off (no error, no answer: the tick hangs), dropping its leases', async (t) => {
    const { url } = await freshSchema(t);
    const a = await member(t, url, `hang${process.pid}`);
    const ka = keeper(t, a);
    const lease = ka.want('reaper');
    await until('the lease held', () => lease.held);
    const { rows } = await adminQuery(`SELECT pid FROM pg_stat_activity WHERE application_name LIKE '%server ${a.id}'`);
    const pid = rows[0]!.pid as number;
    // The backend stops (as a host that froze, or a network that drops everything silently).
    process.kill(pid, 'SIGSTOP');
    t.after(() => {
      try {
        process.kill(pid, 'SIGCONT');
      } catch {
        // Already ended.
      }
    });
    // TTL 2 s: cut-off 1.5 s, a tick every 200 ms.
    // Given up by the cut-off, not by TCP keepalive (10 s before its first probe): within 9 s however loaded the machine.
    const took = await until('presence given up', () => !a.presence.held, 9_000);
    assert.equal(lease.held, false);
    t.diagnostic(`cut off after ${took} ms`);
    process.kill(pid, 'SIGCONT');
  });
});

describe('the servers table', { skip }, () => {
  test('forgets, at a server\'s start, servers dead for over a day, and keeps the rest', async (t) => {
    const { url, schema } = await freshSchema(t);
    await member(t, url, 'first001');
    const day = 86_400_000;
    await adminQuery(`INSERT INTO ${schema}.servers (id, url, hostname, pid, version, config_digest, started_at, heartbeat_at)
      VALUES ('gone0001', 'http://gone', 'h', 1, 't', 'd', 0, (extract(epoch FROM clock_timestamp()) * 1000)::bigint - ${day} - 1000),
             ('recent01', 'http://recent', 'h', 1, 't', 'd', 0, (extract(epoch FROM clock_timestamp()) * 1000)::bigint - 60000)`);
    await member(t, url, 'second01');
    const { rows } = await adminQuery(`SELECT id FROM ${schema}.servers ORDER BY id`);
    assert.deepEqual(rows.map((r) => r.id), ['first001', 'recent01', 'second01']);
  });
});
