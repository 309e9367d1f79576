/** Resolves the global client options into a client: --server/--token, the environment, ./.kiln. */
import { readFileSync } from 'node:fs';
import type { Command } from 'commander';
import { coerceError, UsageError } from '../errors.js';
import { ApiClient } from './api-client.js';
import { DEFAULT_SERVER, LOCAL_DATA_DIR, readTokenFile } from './defaults.js';

export { DEFAULT_SERVER, LOCAL_DATA_DIR, readTokenFile };

/** The options every client command takes. */
export interface GlobalOptions {
  server?: string;
  token?: string;
  ca?: string;
  json?: boolean;
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
  return new ApiClient(server, token, readCaFile(options.ca ?? process.env.KILN_CA));
}

/** The PEM of `--ca FILE` (or KILN_CA), read once; a file that cannot be read is a usage error. */
export function readCaFile(file: string | undefined): string | undefined {
  if (file === undefined || file === '') return undefined;
  try {
    return readFileSync(file, 'utf8');
  } catch (raw) {
    throw new UsageError(`cannot read the CA file ${file} (--ca or KILN_CA): ${coerceError(raw).message}`);
  }
}
