/**
 * The SQLite schema as text, the same on every machine: what src/store/sqlite/schema.sql holds
 * (written by `npm run schema:dump`) and what a test compares the migrations' result with.
 */
import type Database from 'better-sqlite3';

/** Every table, index and trigger of `db` (not SQLite's own), by kind and name, as SQLite keeps their SQL. */
export function dumpSqliteSchema(db: Database.Database): string {
  const rows = db.prepare("SELECT type, name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' AND sql IS NOT NULL ORDER BY type DESC, name")
    .all() as { type: string; name: string; sql: string }[];
  const header = [
    "-- Kiln's SQLite schema after every migration in src/store/sqlite/migrations (sqlite_master, by kind",
    '-- and name). Written by `npm run schema:dump`; DO NOT EDIT: a test compares it with what the migrations make.',
    `-- application_id: 0x${(db.pragma('application_id', { simple: true }) as number).toString(16)}`,
  ];
  return [...header, ...rows.map((row) => `\n-- ${row.type} ${row.name}\n${row.sql};`)].join('\n') + '\n';
}
