/** The logger of the long-running commands: JSON lines on stderr, tokens redacted. */
import pino, { type Logger } from 'pino';

/** A logger at `level` (KILN_LOG_LEVEL overrides the default). */
export function createLogger(level?: string): Logger {
  return pino(
    {
      level: level ?? process.env.KILN_LOG_LEVEL ?? 'info',
      base: { pid: process.pid },
      redact: ['token', '*.token', 'req.headers.authorization', 'headers.authorization'],
    },
    pino.destination({ dest: 2, sync: true }),
  );
}
