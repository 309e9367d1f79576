/** Where the CLI looks by default, for client commands and the worker alike (no client code behind it). */
import { readFileSync } from 'node:fs';

/** Default server URL. */
export const DEFAULT_SERVER = 'http://127.0.0.1:7420';
/** Data dir of `kiln up` when run in the current directory. */
export const LOCAL_DATA_DIR = '.kiln';

/** Reads a token file if it exists. */
export function readTokenFile(file: string): string | undefined {
  try {
    return readFileSync(file, 'utf8').trim() || undefined;
  } catch {
    return undefined;
  }
}
