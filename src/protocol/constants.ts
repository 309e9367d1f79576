/**
 * The protocol's plain values, with no schema library behind them: the worker imports these (and
 * the decoder of server frames) without loading zod.
 */

/** The protocol version this build speaks. */
export const PROTOCOL_VERSION = 1;
/** Versions a server of this build accepts from workers. */
export const SUPPORTED_PROTOCOLS: readonly number[] = [1];

/** WebSocket close codes with a meaning of our own (4000-4999 is the application range). */
export const CloseCode = {
  /** The peer's protocol version is not supported: do not reconnect. */
  protocolVersion: 4001,
  /** Another worker holds the name: do not reconnect with it. */
  nameTaken: 4002,
  /** A message broke the protocol. */
  protocolError: 4003,
  /** The server is shutting down: reconnect later. */
  shutdown: 4004,
  /** The worker's credential does not allow the name it gave: do not reconnect with it. */
  identity: 4005,
  /** The worker's token was revoked: do not reconnect. */
  revoked: 4006,
} as const;

/**
 * The largest console seq (a run's line number, from 0): the stores keep it as a 32-bit integer
 * (PostgreSQL's `integer`), so a larger one is refused at the edge, not by a failing write.
 */
export const MAX_CONSOLE_SEQ = 2 ** 31 - 1;

/** Why a worker stopped a job before it ended on its own. */
export const STOP_CAUSES = ['timeout', 'idle-timeout', 'cancel', 'shutdown', 'output'] as const;
export type StopCause = (typeof STOP_CAUSES)[number];
