/**
 * Opens an SQLite database with better-sqlite3, naming its native add-on by path. Left to itself,
 * better-sqlite3 finds the add-on with the `bindings` package, which walks the call stack and tries a
 * dozen paths; the server's bundle (dist/server.js) carries better-sqlite3's JavaScript inside it and
 * loads only the add-on, so a start resolves no CommonJS module from node_modules (BENCHMARKS.md,
 * "The server in one file"). Where the add-on is not at its usual place, `bindings` still finds it.
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import Database from 'better-sqlite3';

/** better-sqlite3's add-on where its install (prebuilt or compiled) puts it, if it is there. */
function nativeBinding(): string | undefined {
  const file = path.join(path.dirname(createRequire(import.meta.url).resolve('better-sqlite3/package.json')), 'build/Release/better_sqlite3.node');
  return existsSync(file) ? file : undefined;
}

let binding: string | undefined | null = null;

/** `new Database(file, options)`, with the add-on named when it was found. */
export function openDatabase(file: string, options: Database.Options = {}): Database.Database {
  if (binding === null) binding = nativeBinding();
  return new Database(file, binding === undefined ? options : { ...options, nativeBinding: binding });
}
