/** Resolves the global client options into a client: --server/--token, the environment, ./.kiln. */
import type { Command } from 'commander';
import { ApiClient } from './api-client.js';
import { DEFAULT_SERVER, LOCAL_DATA_DIR, readTokenFile } from './defaults.js';

export { DEFAULT_SERVER, LOCAL_DATA_DIR, readTokenFile };

/** The options every client command takes. */
export interface GlobalOptions {
  server?: string;
  token?: string;
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
  return new ApiClient(server, token);
}
