/**
 * PLACEHOLDER until the client commands (client-commands.ts, serveRoburClient) land: every client
 * command is answered as builder answers one it does not know. Deleted when they land.
 */
import type { RoburCmd } from '../../protocol/robur/index.js';
import type { RoburConnection } from './connection.js';

/** Answers `Failure "bad communication"`. */
export async function serveRoburClient(conn: RoburConnection, _command: RoburCmd): Promise<void> {
  conn.send({ type: 'failure', message: 'bad communication' });
}
