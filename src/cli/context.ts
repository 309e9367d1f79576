/** Resolves the global client options into a client: --server/--token, the environment, ./.kiln. */
import { readFileSync } from 'node:fs';
import type { Command } from 'commander';
import { ApiClient } from './api-client.js';

/** Default server URL. */
export const DEFAULT_SERVER = 'http://127.0.0.1:7420';
/** Data dir of `kiln up` when run in the current directory. */
export const LOCAL_DATA_DIR = '.kiln';

/** The options every client command takes. */
export interface GlobalOptions {
  server?: string;
  token?: string;
  json?: boolean;
}

/** Reads a token file if it exists. */
export function readTokenFile(file: string): string | undefined {
  try {
    return readFileSync(file, 'utf8').trim() || undefined;
  } catch {
    return undefined;
  }
}

/** The global options of the command being run. */
export function globals(command: Command): GlobalOptions {
  return command.optsWithGlobals<GlobalOptions>();
}

/** A client for the server and token the user chose. */
export function clientFor(command: Command): ApiClient {
  const options = globals(command);
  const server = options.server ?? process.env.KILN_SERVER ?? DEFAULT_SERVER;
  const token = options.token ?? process.env.KILN_TOKEN ?? readTokenFile(`${LOCAL_DATA_DIR}/admin.token`);
  return new ApiClient(server, token);
}
