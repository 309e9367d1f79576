/** Applies the numbered SQL files in ./migrations, each once and in its own transaction. */
import { readdirSync, readFileSync } from 'node:fs';
import type Database from 'better-sqlite3';
import { StoreDamagedError, StoreForeignError, StoreTooNewError } from '../../errors.js';
import { MIGRATIONS_DIR } from '../../package-paths.js';

/**
 * SQLite's `application_id` header field for Kiln's databases: ASCII 'KILN'. It tells `file(1)`,
 * other tools and Kiln itself whose file this is.
 */
export const KILN_APPLICATION_ID = 0x4b494c4e;

/** The shipped migration files, in order. */
function migrationFiles(): string[] {
  return readdirSync(MIGRATIONS_DIR).filter((f) => /^\d{4}_.*\.sql$/.test(f)).sort();
}

/** The newest schema version this build knows. */
export function knownSchemaVersion(): number {
  return Math.max(0, ...migrationFiles().map((f) => Number(f.slice(0, 4))));
}

/** What `checkDatabase` found. */
export type DatabaseKind = 'new' | 'kiln' | 'unmarked-kiln';

/**
 * Decides whether `db` (at `file`) may be opened as Kiln's, reading only: it refuses another
 * application's file (a different application_id, or tables without Kiln's marker), a schema
 * newer than this build knows, and a damaged file. A Kiln database from before the marker (it
 * has schema_migrations and jobs) is accepted; migrate() then marks it.
 */
export function checkDatabase(db: Database.Database, file: string): DatabaseKind {
  try {
    const appId = db.pragma('application_id', { simple: true }) as number;
    const tables = db.prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name").pluck().all() as string[];
    let kind: DatabaseKind;
    if (appId === KILN_APPLICATION_ID) kind = 'kiln';
    else if (appId !== 0) throw new StoreForeignError(file, `its application_id is 0x${(appId >>> 0).toString(16).padStart(8, '0')}, not Kiln's 0x${KILN_APPLICATION_ID.toString(16)}`);
    else if (tables.length === 0) kind = 'new';
    else if (tables.includes('schema_migrations') && tables.includes('jobs')) kind = 'unmarked-kiln';
    else throw new StoreForeignError(file, `it has tables ${tables.slice(0, 5).join(', ')}${tables.length > 5 ? ', ...' : ''} and no Kiln marker`);
    if (tables.includes('schema_migrations')) {
      const found = (db.prepare('SELECT MAX(version) FROM schema_migrations').pluck().get() as number | null) ?? 0;
      const known = knownSchemaVersion();
      if (found > known) throw new StoreTooNewError(file, found, known);
    }
    // quick_check reads every page (not the index-to-table cross-checks of integrity_check): a
    // damaged b-tree is found here, at start, rather than as a 500 on whichever request reads it.
    const problems = db.pragma('quick_check(3)', { simple: false }) as { quick_check: string }[];
    const report = problems.map((row) => row.quick_check);
    if (report.length !== 1 || report[0] !== 'ok') {
      // One line, as every refusal is: SQLite's report spans lines ("*** in database main ***").
      const detail = report.flatMap((row) => row.split('\n')).map((line) => line.trim()).filter((line) => line !== '' && !line.startsWith('***')).join('; ');
      throw new StoreDamagedError(file, `quick_check: ${detail.length > 300 ? `${detail.slice(0, 300)}...` : detail}`);
    }
    return kind;
  } catch (raw) {
    const code = (raw as { code?: unknown }).code;
    if (code === 'SQLITE_NOTADB') throw new StoreForeignError(file, 'it is not an SQLite database');
    if (typeof code === 'string' && code.startsWith('SQLITE_CORRUPT')) throw new StoreDamagedError(file, (raw as Error).message);
    throw raw;
  }
}

/** Brings the database to the newest schema and marks it as Kiln's; returns the versions it applied. */
export function migrate(db: Database.Database): number[] {
  db.exec('CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)');
  const isApplied = db.prepare('SELECT 1 FROM schema_migrations WHERE version = ?').pluck();
  const done: number[] = [];
  for (const file of migrationFiles()) {
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
  if (db.pragma('application_id', { simple: true }) !== KILN_APPLICATION_ID) db.pragma(`application_id = ${KILN_APPLICATION_ID}`);
  return done;
}
