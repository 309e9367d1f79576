/** The PostgreSQL store's edge, as tables: which URLs it takes, how it shows them, and what driver failures become. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import pg from 'pg';
import { JobNotFoundError } from '../../src/errors.js';
import { checkUrl, connectionTimeouts, Connections, describeUrl, storeError } from '../../src/store/postgres/connection.js';
import { JOB_LIST } from '../../src/store/postgres/statements.js';

test('store URLs: postgres:// with a host and a database; anything else is a KILN_ERR_CONFIG naming the URL without its password', () => {
  const good = ['postgres://kiln@db1:5432/kiln', 'postgresql://kiln:pw@db1/kiln', 'postgres://db1/kiln?sslmode=require', 'postgres://[::1]:5433/kiln'];
  for (const url of good) assert.doesNotThrow(() => checkUrl(url), url);
  const bad: [string, RegExp][] = [
    ['postgres://', /names no host/],
    ['postgres:///kiln', /names no host/],
    ['postgres://kiln:secret@db1', /names no database/],
    ['postgres://kiln:secret@db1/', /names no database/],
    ['postgres://kiln:secret@/kiln', /not a URL/],
    ['mysql://kiln:secret@db1/kiln', /use postgres:\/\/USER@HOST:PORT\/DATABASE/],
    ['postgres://kiln:secret@db1/kiln?statement_timeout=5s', /statement_timeout must be a whole number of milliseconds/],
    ['postgres://kiln:secret@db1/kiln?statement_timeout=-1', /statement_timeout must be a whole number of milliseconds/],
    ['postgres://kiln:secret@db1/kiln?statement_timeout=99999999999', /statement_timeout must be a whole number of milliseconds/],
  ];
  for (const [url, why] of bad) {
    assert.throws(() => checkUrl(url), (err: { code?: string; message: string }) => {
      assert.equal(err.code, 'KILN_ERR_CONFIG', url);
      assert.match(err.message, why, url);
      assert.doesNotMatch(err.message, /secret/, url);
      return true;
    });
  }
});

test('a URL is shown without its password or query', () => {
  const cases: [string, string][] = [
    ['postgres://kiln:secret@db1:5432/kiln?sslmode=require', 'postgres://kiln@db1:5432/kiln'],
    ['postgres://db1/kiln', 'postgres://db1/kiln'],
    // Not URLs (no host; a `/` in the password): everything between scheme:// and the last @ goes.
    ['postgres://kiln:secret@/kiln?x=1', 'postgres://***@/kiln'],
    ['postgres://u:pa/ss@host/db', 'postgres://***@host/db'],
    ['pg://u:sec/ret@db1/kiln', 'pg://***@db1/kiln'],
    ['u:secret@db1', '(a URL with credentials)'],
  ];
  for (const [url, shown] of cases) assert.equal(describeUrl(url), shown, url);
});

test('driver failures: what means "PostgreSQL cannot be used" becomes KILN_ERR_STORE_UNAVAILABLE; a NUL an invalid request; the rest stays as it came', () => {
  const database = (code: string, message = `sqlstate ${code}`) => Object.assign(new pg.DatabaseError(message, 0, 'error'), { code });
  const system = (code: string) => Object.assign(new Error(`connect ${code} 127.0.0.1:5432`), { code });
  const unavailable = [
    database('08006'), database('57P01', 'terminating connection due to administrator command'), database('57P03'), database('28P01'),
    database('3D000', 'database "kiln" does not exist'), system('ECONNREFUSED'), system('ENOTFOUND'), system('ECONNRESET'),
    new Error('Connection terminated unexpectedly'), database('57014', 'canceling statement due to statement timeout'),
    database('25P03', 'terminating connection due to idle-in-transaction timeout'), new Error('Query read timeout'),
  ];
  for (const raw of unavailable) {
    const err = storeError(raw, 'postgres://db1/kiln') as { code?: string; message: string };
    assert.equal(err.code, 'KILN_ERR_STORE_UNAVAILABLE', raw.message);
    assert.ok(err.message.startsWith('the store postgres://db1/kiln cannot be used: '), err.message);
  }
  assert.match((storeError(database('3D000', 'database "kiln" does not exist'), 'x') as Error).message, /createdb/);
  assert.equal((storeError(database('22021'), 'x') as { code?: string }).code, 'KILN_ERR_INVALID_REQUEST');
  const unchanged = [database('23505'), database('40P01'), database('42P01'), new TypeError('bad value'), new JobNotFoundError('x')];
  for (const raw of unchanged) assert.equal(storeError(raw, 'x'), raw, raw.message);
});

test('timeouts: statements 30 s unless the URL says (0: none), the driver 10 s past that, a session idle in a transaction 60 s', () => {
  const cases: [string, ReturnType<typeof connectionTimeouts>][] = [
    ['postgres://db1/kiln', { statement_timeout: 30_000, query_timeout: 40_000, idle_in_transaction_session_timeout: 60_000 }],
    ['postgres://db1/kiln?statement_timeout=500', { statement_timeout: 500, query_timeout: 10_500, idle_in_transaction_session_timeout: 60_000 }],
    ['postgres://db1/kiln?sslmode=require&statement_timeout=0', { statement_timeout: 0, query_timeout: undefined, idle_in_transaction_session_timeout: 60_000 }],
  ];
  for (const [url, expected] of cases) assert.deepEqual(connectionTimeouts(url), expected, url);
});

test("a server's pool runs nothing while its presence on the store is not held (being taken back, or lost for good)", async () => {
  // Nothing listens there: a statement that got past the guard would fail to connect instead.
  const connections = new Connections('postgres://kiln@127.0.0.1:1/kiln');
  const lock = { held: false };
  connections.guardWith(lock);
  try {
    await assert.rejects(connections.run(JOB_LIST), (err: { code?: string; message: string }) => {
      assert.equal(err.code, 'KILN_ERR_STORE_UNAVAILABLE');
      assert.match(err.message, /this server's presence on it was lost and is being taken back$/);
      return true;
    });
    await assert.rejects(connections.transaction(async () => assert.fail('not run')), /presence on it was lost/);
  } finally {
    await connections.end();
  }
});
