/**
 * `npm run schema:dump`: writes each dialect's schema as its migrations leave it, to
 * src/store/sqlite/schema.sql and src/store/postgres/schema.sql. Run it after adding a migration and
 * commit the result; test/store/schema-dump.test.ts fails while a dump and the migrations differ.
 * PostgreSQL: KILN_TEST_POSTGRES_URL (default postgres://postgres@127.0.0.1:5432/test), in a schema
 * of its own, dropped afterwards.
 */
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import Database from 'better-sqlite3';
import pg from 'pg';
import { dumpPostgresSchema } from '../src/store/postgres/schema-dump.js';
import { migrate as migratePostgres } from '../src/store/postgres/migrate.js';
import { Connections } from '../src/store/postgres/connection.js';
import { dumpSqliteSchema } from '../src/store/sqlite/schema-dump.js';
import { migrate as migrateSqlite } from '../src/store/sqlite/migrate.js';

/** The schema a fresh SQLite database has after the migrations. */
export function migratedSqliteSchema(): string {
  const db = new Database(':memory:');
  try {
    migrateSqlite(db);
    return dumpSqliteSchema(db);
  } finally {
    db.close();
  }
}

/** The schema a fresh PostgreSQL schema of the database at `url` has after the migrations (made and dropped here). */
export async function migratedPostgresSchema(url: string): Promise<string> {
  const schema = `kiln_dump_${randomBytes(6).toString('hex')}`;
  const admin = new pg.Client({ connectionString: url });
  await admin.connect();
  try {
    await admin.query(`CREATE SCHEMA ${schema}`);
    const scoped = new URL(url);
    scoped.searchParams.set('options', `-c search_path=${schema}`);
    const connections = new Connections(scoped.toString());
    try {
      await migratePostgres(connections);
      return await connections.script((query) => dumpPostgresSchema({ query } as Pick<pg.ClientBase, 'query'>));
    } finally {
      await connections.end();
    }
  } finally {
    await admin.query(`DROP SCHEMA ${schema} CASCADE`);
    await admin.end();
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const url = process.env.KILN_TEST_POSTGRES_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
  writeFileSync(new URL('../src/store/sqlite/schema.sql', import.meta.url), migratedSqliteSchema());
  writeFileSync(new URL('../src/store/postgres/schema.sql', import.meta.url), await migratedPostgresSchema(url));
  process.stdout.write('wrote src/store/sqlite/schema.sql and src/store/postgres/schema.sql\n');
}
