/** Applies the numbered SQL files in ./migrations, each once and in its own transaction. */
import { readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type Database from 'better-sqlite3';

const MIGRATIONS_DIR = fileURLToPath(new URL('./migrations/', import.meta.url));

/** Brings the database to the newest schema; returns the versions it applied. */
export function migrate(db: Database.Database): number[] {
  db.exec('CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)');
  const isApplied = db.prepare('SELECT 1 FROM schema_migrations WHERE version = ?').pluck();
  const done: number[] = [];
  for (const file of readdirSync(MIGRATIONS_DIR).filter((f) => /^\d{4}_.*\.sql$/.test(f)).sort()) {
    const version = Number(file.slice(0, 4));
    const sql = readFileSync(MIGRATIONS_DIR + file, 'utf8');
    // Checked inside the write transaction, so two processes opening a new file cannot both apply it.
    db.transaction(() => {
      if (isApplied.get(version)) return;
      db.exec(sql);
      db.prepare('INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)').run(version, Date.now());
      done.push(version);
    }).immediate();
  }
  return done;
}
