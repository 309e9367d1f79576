/**
 * The PostgreSQL a test runs against (KILN_TEST_POSTGRES_URL, default: the project machine's
 * server, trust auth, database `test`), and a fresh schema of it per test, dropped when the test ends.
 */
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import type { TestContext } from 'node:test';
import pg from 'pg';

/** The database tests use. */
export const POSTGRES_URL = process.env.KILN_TEST_POSTGRES_URL ?? 'postgres://postgres@127.0.0.1:5432/test';

/**
 * Runs `sql` on `url` in a child process and returns its exit status and stderr, blocking this
 * process meanwhile: nothing of this process (a pool's connections, say) sees the effects until it returns.
 */
export function querySync(url: string, sql: string): { status: number | null; stderr: string; error?: Error } {
  const probe = `const pg = require('pg'); const c = new pg.Client({ connectionString: process.argv[1], connectionTimeoutMillis: 5000 });
    c.connect().then(() => c.query(process.argv[2])).then(() => c.end(), (e) => { process.stderr.write(e.message); process.exit(1); });`;
  return spawnSync(process.execPath, ['-e', probe, url, sql], { encoding: 'utf8', timeout: 15_000, cwd: new URL('../../', import.meta.url).pathname });
}

/**
 * Why PostgreSQL cannot be used here, or undefined when a connection to POSTGRES_URL works. Checked
 * in a child process, so the requirement check stays synchronous (requirements.ts).
 */
export function postgresReason(): string | undefined {
  const done = querySync(POSTGRES_URL, 'SELECT 1');
  if (done.status === 0) return undefined;
  const why = (done.stderr || done.error?.message || `exit ${done.status}`).trim().split('\n')[0];
  return `needs PostgreSQL at ${POSTGRES_URL} (KILN_TEST_POSTGRES_URL): ${why} (Debian: apt-get install postgresql; .ci/run starts it)`;
}

/** `url` whose connections use `schema` (created and dropped by the caller). */
export function urlWithSchema(url: string, schema: string): string {
  const parsed = new URL(url);
  parsed.searchParams.set('options', `-c search_path=${schema}`);
  return parsed.toString();
}

/** Runs `sql` on POSTGRES_URL with a connection of its own. */
export async function adminQuery(sql: string): Promise<pg.QueryResult> {
  const client = new pg.Client({ connectionString: POSTGRES_URL });
  await client.connect();
  try {
    return await client.query(sql);
  } finally {
    await client.end();
  }
}

/** Creates an empty schema for this test, dropped (with everything in it) when the test ends; returns its name and a URL that uses it. */
export async function freshSchema(t: Pick<TestContext, 'after'>): Promise<{ schema: string; url: string }> {
  const schema = `kiln_test_${randomBytes(6).toString('hex')}`;
  await adminQuery(`CREATE SCHEMA ${schema}`);
  t.after(() => dropSchema(schema));
  return { schema, url: urlWithSchema(POSTGRES_URL, schema) };
}

/**
 * Drops a test's schema. Its hook may run before the hook that stops a server still using the schema
 * (node:test runs a test's hooks in the order they were registered), so the drop can meet that
 * server's locks or a deadlock with it: it waits at most 10 s for a lock, tries again a few times, and
 * then leaves the schema with a warning. It never throws: a failed cleanup must not skip the ones
 * after it (the server's stop among them), which would keep the test file alive until its deadline.
 */
async function dropSchema(schema: string): Promise<void> {
  for (let attempt = 1; ; attempt++) {
    try {
      await adminQuery(`SET lock_timeout = '10s'; DROP SCHEMA ${schema} CASCADE`);
      return;
    } catch (err) {
      if (attempt >= 5) {
        process.stderr.write(`warning: test schema ${schema} left behind: ${(err as Error).message}\n`);
        return;
      }
    }
  }
}
