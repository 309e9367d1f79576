/**
 * Files of the package found at run time. This module is src/package-paths.ts when the sources run
 * (tsx), and part of a file directly under dist/ in the build (scripts/build.mjs writes every
 * bundle file there, never in a subdirectory): either way the package root is one level up.
 */
import { fileURLToPath } from 'node:url';

/** src/ or dist/. */
const CODE_DIR = new URL('./', import.meta.url);

/** The `kiln` command of this package, for the processes Kiln starts itself. */
export const KILN_BIN = fileURLToPath(new URL('../bin/kiln.mjs', CODE_DIR));

/** The store's numbered SQL migrations (copied beside the bundle by the build). */
export const MIGRATIONS_DIR = fileURLToPath(new URL('./store/sqlite/migrations/', CODE_DIR));

/** The PostgreSQL store's numbered SQL migrations (copied beside the bundle by the build). */
export const PG_MIGRATIONS_DIR = fileURLToPath(new URL('./store/postgres/migrations/', CODE_DIR));

/**
 * The dashboard's static files, built by scripts/build.mjs into dist/web/ (so also found from src/
 * when the sources run under tsx, once `npm run build` has run).
 */
export const WEB_DIR = fileURLToPath(new URL('../dist/web/', CODE_DIR));
