/**
 * The committed schema dumps (src/store/sqlite/schema.sql, src/store/postgres/schema.sql) are what
 * the migrations make of a fresh database: a migration added without `npm run schema:dump`, or a
 * dump edited by hand, fails here.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { migratedPostgresSchema, migratedSqliteSchema } from '../../scripts/schema-dump.js';
import { POSTGRES_URL } from '../helpers/postgres.js';
import { needs } from '../helpers/requirements.js';

const committed = (dialect: string) => readFileSync(new URL(`../../src/store/${dialect}/schema.sql`, import.meta.url), 'utf8');
const FIX = 'the migrations and the committed dump differ: run `npm run schema:dump` and commit the result';

test('SQLite: the migrations make exactly the committed schema dump', () => {
  const made = migratedSqliteSchema();
  assert.match(made, /CREATE TABLE runs \(/, 'the dump lists the tables');
  assert.equal(made, committed('sqlite'), FIX);
});

test('PostgreSQL: the migrations make exactly the committed schema dump', { skip: needs('postgres') }, async () => {
  const made = await migratedPostgresSchema(POSTGRES_URL);
  assert.match(made, /CREATE TABLE runs \(/, 'the dump lists the tables');
  assert.equal(made, committed('postgres'), FIX);
});
