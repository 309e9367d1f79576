/**
 * `kiln migrate-store --from STORE --to STORE`: copies a farm's data from one store into another,
 * empty one (SQLite to PostgreSQL, or back). The copy is driven by the schemas the two stores'
 * migrations made: every table but the migration versions, the same tables and columns on both
 * sides (checked, or nothing is copied), values carried as SQLite keeps them and converted where
 * PostgreSQL keeps them otherwise (booleans, JSON, console text as BYTEA). The target is written in
 * one transaction, after which PostgreSQL's sequences are moved past the copied values. Both stores
 * are held for the whole copy: a PostgreSQL schema exclusively (server-lock.ts; servers hold it
 * shared), an SQLite data dir as a server holds it (data-dir.ts). A server on either is refused,
 * naming it, and none can start meanwhile. A PostgreSQL lock lost for good
 * meanwhile stops the copy (KILN_ERR_STORE_LOCK_LOST) before its next statement.
 */
import { existsSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import type Database from 'better-sqlite3';
import type pg from 'pg';
import { coerceError, ConfigError, StoreNotEmptyError, UsageError } from '../errors.js';
import { isPostgresUrl, sqliteStoreFile } from '../store/open-store.js';
import { openDatabase } from '../store/sqlite/open-database.js';
import { openSqliteStore } from '../store/sqlite/sqlite-store.js';
import { describeUrl } from '../url-for-humans.js';
import { holdSqliteStore } from './data-dir.js';

/** A value as the copy carries it: as SQLite keeps it (booleans 0/1, JSON and console text as text). */
type Value = number | string | null;

/** A table as one side's catalog describes it. */
interface Table {
  name: string;
  columns: string[];
  /** The primary key's columns, in order: the source is read in pages by it. */
  key: string[];
}

/** One store, held for the copy: read as a source, or written as the target in one transaction. */
interface Side {
  /** The store as messages name it (no password). */
  readonly where: string;
  /** Kiln's tables (not the migration versions'), by name. */
  tables(): Promise<Map<string, Table>>;
  /** Up to `limit` rows of `table`'s `columns`, in key order, after the row whose key is `after`. */
  page(table: Table, columns: string[], after: Value[] | undefined, limit: number): Promise<Value[][]>;
  /** Whether `table` has a row. */
  hasRows(table: string): Promise<boolean>;
  begin(): Promise<void>;
  insert(table: Table, columns: string[], rows: Value[][]): Promise<void>;
  /** Moves what generates values (sequences) past the copied rows. */
  finish(): Promise<void>;
  commit(): Promise<void>;
  rollback(): Promise<void>;
  close(): Promise<void>;
}

/** Rows read and written per round trip. */
const PAGE_ROWS = 500;

/** What `migrateStore` copied, table by table. */
export interface CopyReport {
  from: string;
  to: string;
  rows: Record<string, number>;
}

/**
 * Copies the store `from` into the empty store `to` (each `sqlite:PATH` or `postgres://...`);
 * refuses a target with rows (StoreNotEmptyError) and a store a server holds (DataDirInUseError).
 */
export async function migrateStore(from: string, to: string): Promise<CopyReport> {
  checkStore('--from', from);
  checkStore('--to', to);
  if (sameStore(from, to)) throw new UsageError('--from and --to name the same store: give --to a new, empty one');
  const source = await openSide(from, 'source');
  try {
    const target = await openSide(to, 'target');
    try {
      return { from: source.where, to: target.where, rows: await copy(source, target) };
    } finally {
      await target.close();
    }
  } finally {
    await source.close();
  }
}

function checkStore(flag: string, store: string): void {
  if (sqliteStoreFile(store) === undefined && !isPostgresUrl(store)) {
    throw new UsageError(`bad ${flag} '${describeUrl(store)}': use sqlite:PATH (a data dir's store is DIR/kiln.db) or postgres://USER@HOST:PORT/DATABASE`);
  }
}

function sameStore(a: string, b: string): boolean {
  const fileA = sqliteStoreFile(a);
  return fileA !== undefined ? fileA === sqliteStoreFile(b) : a === b;
}

async function openSide(store: string, role: 'source' | 'target'): Promise<Side> {
  const file = sqliteStoreFile(store);
  return file === undefined ? openPostgresSide(store, role) : openSqliteSide(file, role);
}

/** Copies every table of `source` into `target` in one transaction; returns the rows copied per table. */
async function copy(source: Side, target: Side): Promise<Record<string, number>> {
  const [from, to] = [await source.tables(), await target.tables()];
  checkSameTables(from, to, source.where, target.where);
  const rows: Record<string, number> = {};
  await target.begin();
  try {
    for (const name of to.keys()) if (await target.hasRows(name)) throw new StoreNotEmptyError(target.where, name);
    for (const [name, table] of from) {
      if (table.key.length === 0) throw new ConfigError(`${source.where}: table ${name} has no primary key to read it by`);
      rows[name] = 0;
      for (let lastKey: Value[] | undefined; ;) {
        const page = await source.page(table, table.columns, lastKey, PAGE_ROWS);
        if (page.length === 0) break;
        try {
          await target.insert(to.get(name)!, table.columns, page);
        } catch (raw) {
          // Said with the table, and with the store's own code kept (a NUL PostgreSQL refuses is an
          // invalid request, a lost connection the store unavailable), so the exit code says which.
          const err = coerceError(raw);
          err.message = `copying table ${name} into ${target.where}: ${err.message}`;
          throw err;
        }
        rows[name] += page.length;
        const last = page.at(-1)!;
        lastKey = table.key.map((column) => last[table.columns.indexOf(column)]!);
      }
    }
    await target.finish();
    await target.commit();
  } catch (raw) {
    await target.rollback().catch(() => undefined);
    throw raw;
  }
  return rows;
}

/** Refuses, before anything is written, two schemas whose tables or columns differ. */
function checkSameTables(from: Map<string, Table>, to: Map<string, Table>, fromWhere: string, toWhere: string): void {
  const names = (map: Map<string, Table>) => [...map.keys()].sort().join(', ');
  const differ = (why: string) => new ConfigError(`${fromWhere} and ${toWhere} have different schemas (${why}): both are migrated by this Kiln, so one of them is not Kiln's or was changed by hand`);
  if (names(from) !== names(to)) throw differ(`tables ${names(from)} against ${names(to)}`);
  for (const [name, table] of from) {
    const [a, b] = [[...table.columns].sort().join(', '), [...to.get(name)!.columns].sort().join(', ')];
    if (a !== b) throw differ(`table ${name}: columns ${a} against ${b}`);
  }
}

const quote = (name: string) => `"${name.replaceAll('"', '""')}"`;
/** `(a, b) > (?, ?)`: the rows after a key, with `param(i)` naming the i-th placeholder. */
const afterKey = (key: string[], param: (i: number) => string) => `(${key.map(quote).join(', ')}) > (${key.map((_, i) => param(i)).join(', ')})`;

// ---- SQLite ----

/** The migrations' version table, which each store keeps for itself. */
const SQLITE_VERSIONS = 'schema_migrations';

async function openSqliteSide(file: string, role: 'source' | 'target'): Promise<Side> {
  if (role === 'source' && !existsSync(file)) throw new ConfigError(`no SQLite store at ${file} (a data dir's store is DIR/kiln.db)`);
  if (role === 'target') mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
  const hold = holdSqliteStore(file);
  let db: Database.Database | undefined;
  try {
    // Opened (made if the target is new, checked to be Kiln's, migrated) as a server opens it.
    await openSqliteStore(file).close();
    db = openDatabase(file);
  } catch (raw) {
    hold.release();
    throw raw;
  }
  const handle = db;
  return {
    where: `sqlite:${file}`,
    async tables() {
      const names = handle.prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' AND name <> ? ORDER BY name").pluck().all(SQLITE_VERSIONS) as string[];
      return new Map(names.map((name) => {
        const info = handle.pragma(`table_info(${quote(name)})`) as { name: string; pk: number }[];
        const key = info.filter((c) => c.pk > 0).sort((a, b) => a.pk - b.pk).map((c) => c.name);
        return [name, { name, columns: info.map((c) => c.name), key }];
      }));
    },
    async page(table, columns, from, limit) {
      const where = from === undefined ? '' : `WHERE ${afterKey(table.key, () => '?')}`;
      const sql = `SELECT ${columns.map(quote).join(', ')} FROM ${quote(table.name)} ${where} ORDER BY ${table.key.map(quote).join(', ')} LIMIT ?`;
      return handle.prepare(sql).raw(true).all(...(from ?? []), limit) as Value[][];
    },
    async hasRows(table) {
      return handle.prepare(`SELECT 1 FROM ${quote(table)} LIMIT 1`).get() !== undefined;
    },
    async begin() {
      handle.exec('BEGIN IMMEDIATE');
    },
    async insert(table, columns, rows) {
      const statement = handle.prepare(`INSERT INTO ${quote(table.name)} (${columns.map(quote).join(', ')}) VALUES (${columns.map(() => '?').join(', ')})`);
      for (const row of rows) statement.run(...row);
    },
    // AUTOINCREMENT keeps sqlite_sequence at the largest id inserted; queue positions are read from the rows.
    async finish() {},
    async commit() {
      handle.exec('COMMIT');
    },
    async rollback() {
      if (handle.inTransaction) handle.exec('ROLLBACK');
    },
    async close() {
      handle.close();
      hold.release();
    },
  };
}

// ---- PostgreSQL ----

/** How PostgreSQL keeps a column, where that differs from SQLite's way (Value). */
type Kind = 'plain' | 'boolean' | 'json' | 'bytes';

function kindOf(dataType: string, where: string): Kind {
  switch (dataType) {
    case 'bigint': case 'integer': case 'smallint': case 'text': return 'plain';
    case 'boolean': return 'boolean';
    case 'json': case 'jsonb': return 'json';
    case 'bytea': return 'bytes';
    default: throw new ConfigError(`${where} has a column of type ${dataType}, which kiln migrate-store does not know how to copy`);
  }
}

/** A PostgreSQL value as the copy carries it. */
function fromPostgres(kind: Kind, value: unknown): Value {
  if (value === null) return null;
  if (kind === 'boolean') return value ? 1 : 0;
  if (kind === 'bytes') return (value as Buffer).toString('utf8');
  return value as Value; // JSON is selected as text, BIGINT read as a number (connection.ts).
}

/** A carried value as PostgreSQL keeps it (JSON text is parsed by PostgreSQL itself). */
function toPostgres(kind: Kind, value: Value): unknown {
  if (value === null) return null;
  if (kind === 'boolean') return value !== 0 && value !== '0';
  if (kind === 'bytes') return Buffer.from(String(value), 'utf8');
  return value;
}

/**
 * Sequences the store's statements draw from, beside the identity columns' own: each with the
 * query for the largest value the copied rows took from it (postgres/migrations/0001_init.sql:
 * a run queued at the back takes nextval('queue_back'), one at the front -nextval('queue_front')).
 */
const SEQUENCES: Record<string, string> = {
  queue_back: 'SELECT MAX(queue_pos) AS used FROM runs',
  queue_front: 'SELECT -MIN(queue_pos) AS used FROM runs',
};

interface PgTable extends Table {
  kinds: Map<string, Kind>;
  identity: string[];
}

async function openPostgresSide(url: string, role: 'source' | 'target'): Promise<Side> {
  // The driver is loaded only for a PostgreSQL store, as for the server.
  const { Connections } = await import('../store/postgres/connection.js');
  const { migrate, VERSION_TABLE } = await import('../store/postgres/migrate.js');
  const { holdSchemaExclusive } = await import('../store/postgres/server-lock.js');
  const connections = new Connections(url);
  const where = connections.where;
  let release: (() => Promise<void>) | undefined;
  // Lost for good (another server took it): the copy stops at its next statement, the target's transaction rolled back.
  let lost: Error | undefined;
  let client: { query: (text: string, values?: unknown[]) => Promise<pg.QueryResult>; done: () => void } | undefined;
  try {
    release = (await holdSchemaExclusive(url, where, { onLost: (err) => (lost = err) })).release;
    if (role === 'source') {
      const found = await connections.script((query) => query('SELECT 1 FROM pg_tables WHERE schemaname = current_schema() AND tablename = $1', [VERSION_TABLE]));
      if (found.rowCount === 0) throw new ConfigError(`${where} holds no Kiln store (no ${VERSION_TABLE} in its schema): check the URL and its search_path`);
    }
    await migrate(connections);
    client = await checkedOut(connections);
  } catch (raw) {
    await release?.();
    await connections.end();
    throw raw;
  }
  const lent = client.query;
  const query = (text: string, values?: unknown[]): Promise<pg.QueryResult> => (lost ? Promise.reject(lost) : lent(text, values));
  let cached: Map<string, PgTable> | undefined;
  const tables = async () => (cached ??= await pgTables(query, VERSION_TABLE, where));
  const side: Side = {
    where,
    tables,
    async page(table, columns, from, limit) {
      const { kinds } = (await tables()).get(table.name)!;
      const list = columns.map((c) => (kinds.get(c) === 'json' ? `${quote(c)}::text AS ${quote(c)}` : quote(c))).join(', ');
      const values = [...(from ?? []), limit];
      const condition = from === undefined ? '' : `WHERE ${afterKey(table.key, (i) => `$${i + 1}`)}`;
      const { rows } = await query(`SELECT ${list} FROM ${quote(table.name)} ${condition} ORDER BY ${table.key.map(quote).join(', ')} LIMIT $${values.length}`, values);
      return rows.map((row: Record<string, unknown>) => columns.map((c) => fromPostgres(kinds.get(c)!, row[c])));
    },
    async hasRows(table) {
      return ((await query(`SELECT 1 FROM ${quote(table)} LIMIT 1`)).rowCount ?? 0) > 0;
    },
    async begin() {
      await query('BEGIN');
    },
    async insert(table, columns, rows) {
      const { kinds, identity } = table as PgTable;
      const values: unknown[] = [];
      const tuples = rows.map((row) => `(${row.map((value, i) => `$${values.push(toPostgres(kinds.get(columns[i]!)!, value))}`).join(', ')})`);
      // Identity columns are GENERATED ALWAYS: the copied ids are kept, and the sequence moved in finish().
      const overriding = identity.length > 0 ? ' OVERRIDING SYSTEM VALUE' : '';
      await query(`INSERT INTO ${quote(table.name)} (${columns.map(quote).join(', ')})${overriding} VALUES ${tuples.join(', ')}`, values);
    },
    async finish() {
      for (const table of (await tables()).values()) {
        for (const column of table.identity) {
          await query(`SELECT setval(pg_get_serial_sequence($1, $2), COALESCE(MAX(${quote(column)}), 0) + 1, false) FROM ${quote(table.name)}`, [quote(table.name), column]);
        }
      }
      const { rows } = await query(`
        SELECT c.relname AS name FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind = 'S' AND n.nspname = current_schema()
          AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = c.oid AND d.deptype IN ('a', 'i'))`);
      for (const { name } of rows as { name: string }[]) {
        const used = SEQUENCES[name];
        if (used === undefined) throw new ConfigError(`${where} has a sequence ${name} that kiln migrate-store does not know how to move: nothing was copied`);
        const { rows: [row] } = await query(used);
        await query('SELECT setval($1::regclass, $2, false)', [quote(name), Math.max(Number(row?.used ?? 0), 0) + 1]);
      }
    },
    async commit() {
      await query('COMMIT');
    },
    async rollback() {
      await lent('ROLLBACK');
    },
    async close() {
      client!.done();
      await release!();
      await connections.end();
    },
  };
  return side;
}

/**
 * One connection of the pool, held until `done`: the copy's reads (or its transaction) run on it.
 * Connections.script lends one only for a callback; this keeps it lent until the copy ends.
 */
function checkedOut(connections: { script<T>(fn: (query: (text: string, values?: unknown[]) => Promise<pg.QueryResult>) => Promise<T>): Promise<T> }):
  Promise<{ query: (text: string, values?: unknown[]) => Promise<pg.QueryResult>; done: () => void }> {
  return new Promise((resolve, reject) => {
    connections.script((query) => new Promise<void>((done) => resolve({ query, done }))).catch(reject);
  });
}

/** The schema's tables (but `versions`) with their columns in order, how each is kept, the primary key and the identity columns. */
async function pgTables(query: (text: string, values?: unknown[]) => Promise<pg.QueryResult>, versions: string, where: string): Promise<Map<string, PgTable>> {
  const { rows: columns } = await query(`
    SELECT table_name AS table, column_name AS column, data_type AS type, is_identity = 'YES' AS identity
    FROM information_schema.columns WHERE table_schema = current_schema() AND table_name <> $1 ORDER BY table_name, ordinal_position`, [versions]);
  const { rows: keys } = await query(`
    SELECT c.relname AS table, a.attname AS column FROM pg_index i
    JOIN pg_class c ON c.oid = i.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace
    CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
    JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum
    WHERE i.indisprimary AND n.nspname = current_schema() ORDER BY c.relname, k.ord`);
  const tables = new Map<string, PgTable>();
  for (const row of columns as { table: string; column: string; type: string; identity: boolean }[]) {
    let table = tables.get(row.table);
    if (!table) tables.set(row.table, (table = { name: row.table, columns: [], key: [], kinds: new Map(), identity: [] }));
    table.columns.push(row.column);
    table.kinds.set(row.column, kindOf(row.type, where));
    if (row.identity) table.identity.push(row.column);
  }
  for (const row of keys as { table: string; column: string }[]) tables.get(row.table)?.key.push(row.column);
  return tables;
}
