/**
 * `kiln server` opens only a database that is Kiln's, of a schema it knows, and undamaged
 * (issue 12, item 7): anything else stops it at start with one line naming the file, and a file
 * that is not Kiln's is left exactly as it was.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { closeSync, existsSync, openSync, readdirSync, readFileSync, writeFileSync, writeSync } from 'node:fs';
import path from 'node:path';
import { test, type TestContext } from 'node:test';
import Database from 'better-sqlite3';
import { openSqliteStore } from '../../src/store/sqlite/sqlite-store.js';
import { freePort, spawnKiln, startServer, tempDir } from '../helpers/processes.js';

const sha256 = (file: string) => createHash('sha256').update(readFileSync(file)).digest('hex');

/** Starts `kiln server` on `dataDir` and resolves with how it ended; fails if it starts serving instead. */
async function refusedStart(t: TestContext, dataDir: string): Promise<{ code: number | null; lines: string[] }> {
  const server = spawnKiln(t, ['server', '--listen', `127.0.0.1:${await freePort()}`, '--data', dataDir]);
  // Rejected when the server exits first, which is what should happen.
  const listening = server.waitFor(/kiln server listening/).then(() => true, () => false);
  if (await Promise.race([server.exited.then(() => false), listening])) assert.fail(`the server started on it:\n${server.stderr.join('\n')}`);
  return { code: (await server.exited).code, lines: server.stderr };
}

test("another application's SQLite file is refused and left unchanged", async (t) => {
  const dataDir = tempDir(t);
  const file = path.join(dataDir, 'kiln.db');
  const other = new Database(file);
  other.exec("CREATE TABLE accounts (id INTEGER PRIMARY KEY, owner TEXT); CREATE TABLE invoices (id INTEGER PRIMARY KEY); INSERT INTO accounts (owner) VALUES ('alice')");
  other.close();
  const before = sha256(file);

  const { code, lines } = await refusedStart(t, dataDir);
  assert.equal(code, 1);
  assert.deepEqual(lines, [`kiln: ${file} is not a Kiln database (it has tables accounts, invoices and no Kiln marker); Kiln leaves it unchanged: give --data a new dir or --store sqlite:ANOTHER.db`]);
  assert.equal(sha256(file), before, 'not a byte changed');
  const reopened = new Database(file, { readonly: true });
  t.after(() => reopened.close());
  assert.deepEqual(reopened.prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name").pluck().all(), ['accounts', 'invoices'], 'no Kiln table was added');
});

test('a file marked with another application_id is refused', async (t) => {
  const dataDir = tempDir(t);
  const file = path.join(dataDir, 'kiln.db');
  const other = new Database(file);
  other.pragma(`application_id = ${0x5f4d504e}`); // some other program's
  other.close();
  const { code, lines } = await refusedStart(t, dataDir);
  assert.equal(code, 1);
  assert.match(lines.join('\n'), /^kiln: \S+kiln\.db is not a Kiln database \(its application_id is 0x5f4d504e, not Kiln's 0x4b494c4e\)/);
  assert.equal(lines.length, 1);
});

test('a file that is not SQLite at all is refused and left unchanged', async (t) => {
  const dataDir = tempDir(t);
  const file = path.join(dataDir, 'kiln.db');
  writeFileSync(file, 'these are my notes, not a database\n'.repeat(200));
  const before = sha256(file);
  const { code, lines } = await refusedStart(t, dataDir);
  assert.equal(code, 1);
  assert.deepEqual(lines, [`kiln: ${file} is not a Kiln database (it is not an SQLite database); Kiln leaves it unchanged: give --data a new dir or --store sqlite:ANOTHER.db`]);
  assert.equal(sha256(file), before);
});

test('a database from a newer Kiln (a schema version this build does not know) is refused', async (t) => {
  const dataDir = tempDir(t);
  const file = path.join(dataDir, 'kiln.db');
  await openSqliteStore(file).close();
  const db = new Database(file);
  db.prepare('INSERT INTO schema_migrations (version, applied_at) VALUES (9999, ?)').run(Date.now());
  db.close();
  const { code, lines } = await refusedStart(t, dataDir);
  assert.equal(code, 1);
  assert.equal(lines.length, 1, lines.join('\n'));
  assert.match(lines[0]!, new RegExp(`^kiln: ${file.replace(/[.]/g, '\\.')} has schema version 9999, newer than this Kiln knows \\(\\d+\\): run the newer Kiln`));
});

test('a Kiln database with a damaged interior page is refused at start, not answered with 500s later', async (t) => {
  // A real server's database, with a job and enough console lines that their b-tree has interior pages.
  const first = await startServer(t);
  await first.kill('SIGTERM');
  const file = path.join(first.dataDir, 'kiln.db');
  const db = new Database(file);
  const insert = db.prepare('INSERT INTO console_lines (run_id, seq, ts, text) VALUES (?, ?, ?, ?)');
  db.transaction(() => {
    for (let seq = 0; seq < 5000; seq += 1) insert.run('0123456789abcdef', seq, Date.now(), `line ${seq} `.padEnd(100, 'x'));
  })();
  const root = db.prepare("SELECT rootpage FROM sqlite_master WHERE name = 'console_lines'").pluck().get() as number;
  const pageSize = db.pragma('page_size', { simple: true }) as number;
  db.pragma('journal_mode = DELETE'); // everything into the main file, no WAL left beside it
  db.close();
  assert.deepEqual(readdirSync(first.dataDir).filter((f) => f.startsWith('kiln.db-')), []);

  // The root of a b-tree this size is an interior page (type 2: index interior, as WITHOUT ROWID tables are).
  const fd = openSync(file, 'r+');
  const header = Buffer.alloc(1);
  const offset = (root - 1) * pageSize;
  readFileSync(file).copy(header, 0, offset, offset + 1);
  assert.ok(header[0] === 0x02 || header[0] === 0x05, `page ${root} is interior (type ${header[0]})`);
  // Its child pointers (right-most child, then the cell pointer array) become garbage.
  writeSync(fd, Buffer.alloc(64, 0xee), 0, 64, offset + 8);
  closeSync(fd);

  const { code, lines } = await refusedStart(t, first.dataDir);
  assert.equal(code, 1);
  assert.equal(lines.length, 1, lines.join('\n'));
  assert.match(lines[0]!, new RegExp(`^kiln: ${file.replace(/[.]/g, '\\.')} is damaged \\(.+\\): restore a backup`));
  assert.ok(existsSync(file));
});
