/** The logger of the long-running commands: JSON lines on stderr, tokens redacted. */
import pino, { type Logger } from 'pino';
import { SafeLogDestination } from './log-destination.js';

export { SafeLogDestination };

/** A logger at `level` (KILN_LOG_LEVEL overrides the default). */
export function createLogger(level?: string): Logger {
  return pino(
    {
      level: level ?? process.env.KILN_LOG_LEVEL ?? 'info',
      base: { pid: process.pid },
      redact: ['token', '*.token', 'req.headers.authorization', 'headers.authorization'],
    },
    new SafeLogDestination(2),
  );
}
