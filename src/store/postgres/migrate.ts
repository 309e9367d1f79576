/**
 * Applies the numbered SQL files in ./migrations to the store's schema (the first on the
 * connection's search_path), each once, all in one transaction: PostgreSQL's DDL is transactional,
 * so a failed upgrade leaves the schema as it was. As on SQLite, a schema that is not Kiln's or is
 * newer than this build is refused, with one line, before anything in it changes.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { ConfigError, StoreForeignError, StoreTooNewError } from '../../errors.js';
import { PG_MIGRATIONS_DIR } from '../../package-paths.js';
import type { Connections } from './connection.js';

/** The table that records applied versions; its name is Kiln's own, so another application's schema is not mistaken for Kiln's. */
export const VERSION_TABLE = 'kiln_schema_migrations';

/** The shipped migration files, in order. */
export function migrationFiles(): string[] {
  return readdirSync(PG_MIGRATIONS_DIR).filter((f) => /^\d{4}_.*\.sql$/.test(f)).sort();
}

/** The newest schema version this build knows. */
export function knownSchemaVersion(): number {
  return Math.max(0, ...migrationFiles().map((f) => Number(f.slice(0, 4))));
}

/** Brings the schema to the newest version; returns the versions it applied. */
export function migrate(connections: Connections): Promise<number[]> {
  return connections.script(async (query) => {
    await query('BEGIN');
    try {
      // A migration may rewrite a big table: the store's statement_timeout is for Kiln's own statements.
      await query('SET LOCAL statement_timeout = 0');
      // Two servers opening one new database at once: the second waits, then finds it done.
      await query("SELECT pg_advisory_xact_lock(x'4b494c4e'::int, hashtext(current_schema()))");
      const [{ schema }] = (await query('SELECT current_schema() AS schema')).rows as [{ schema: string | null }];
      if (schema === null) throw new ConfigError(`the store ${connections.where} has no schema to use: its search_path names none that exists (CREATE SCHEMA it first)`);
      const tables = (await query("SELECT tablename FROM pg_tables WHERE schemaname = current_schema() ORDER BY tablename")).rows.map((row) => row.tablename as string);
      if (tables.length > 0 && !tables.includes(VERSION_TABLE)) {
        throw new StoreForeignError(connections.where, `its schema has tables ${tables.slice(0, 5).join(', ')}${tables.length > 5 ? ', ...' : ''} and no ${VERSION_TABLE}`,
          'give --store an empty database, or another schema (postgres://...?options=-c%20search_path%3DSCHEMA)');
      }
      await query(`CREATE TABLE IF NOT EXISTS ${VERSION_TABLE} (version INTEGER PRIMARY KEY, applied_at BIGINT NOT NULL)`);
      const applied = new Set((await query(`SELECT version FROM ${VERSION_TABLE}`)).rows.map((row) => Number(row.version)));
      const known = knownSchemaVersion();
      const newest = Math.max(0, ...applied);
      if (newest > known) throw new StoreTooNewError(connections.where, newest, known);
      const done: number[] = [];
      for (const file of migrationFiles()) {
        const version = Number(file.slice(0, 4));
        if (applied.has(version)) continue;
        await query(readFileSync(PG_MIGRATIONS_DIR + file, 'utf8'));
        await query(`INSERT INTO ${VERSION_TABLE} (version, applied_at) VALUES ($1, $2)`, [version, Date.now()]);
        done.push(version);
      }
      await query('COMMIT');
      return done;
    } catch (raw) {
      await query('ROLLBACK').catch(() => undefined);
      throw raw;
    }
  });
}
