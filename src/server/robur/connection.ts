/**
 * One TCP connection on the `--robur-listen` port, past its hello, as the client commands and the
 * worker sessions see it: send a message, wait for the peer to read, close. The listener
 * (robur-listener.ts) frames and writes; nothing else touches the socket.
 */
import type { RoburCmd } from '../../protocol/robur/index.js';

/** A robur peer's connection. */
export interface RoburConnection {
  /** `ADDRESS:PORT` of the peer, for logs. */
  readonly peer: string;
  /** Frames and writes one message (TCP_NODELAY: sent at once). Nothing happens once closed. */
  send(cmd: RoburCmd): void;
  /** Resolves once what was sent has been handed to the kernel (backpressure for a long observe), or on close. */
  drained(): Promise<void>;
  /** Ends the connection; `reason` is logged. */
  close(reason: string): void;
  /** True once the socket is closed, by either side. */
  readonly isClosed: boolean;
  /** Resolves when the socket has closed, by either side. */
  readonly closed: Promise<void>;
}
