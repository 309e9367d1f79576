/**
 * The logging calls Kiln's modules make. pino's Logger (the server's) has this shape, and so has the
 * worker's own JSON-line logger (cli/json-logger.ts), so a module takes either.
 */
export interface LogFn {
  (fields: object, message?: string): void;
  (message: string): void;
}

export interface Log {
  level: string;
  child(bindings: Record<string, unknown>): Log;
  trace: LogFn;
  debug: LogFn;
  info: LogFn;
  warn: LogFn;
  error: LogFn;
  fatal: LogFn;
}
