/**
 * The worker's logger: the lines pino writes for the server (level number, time, pid, the child's
 * bindings, the fields, msg; `err` as {type, message, stack}; the same keys redacted), written by a
 * few lines of code. pino, with its worker-thread transport, serializers and redaction compiler,
 * is ~30 modules and 1 to 2 MB of an idle worker that logs a line a run. test/unit/json-logger
 * holds both to the same output.
 */
import type { Log, LogFn } from '../log.js';
import { SafeLogDestination } from './log-destination.js';

/** pino's level numbers. */
const LEVELS: Record<string, number> = { trace: 10, debug: 20, info: 30, warn: 40, error: 50, fatal: 60, silent: Infinity };

const REDACTED = '[Redacted]';

/** The line's destination: anything with pino's `write(line)`. */
export interface LineSink {
  write(line: string): void;
}

/** pino's err serializer: the class name, message and stack, then the error's own fields. */
function serializeError(err: Error): Record<string, unknown> {
  const out: Record<string, unknown> = { type: err.constructor?.name ?? 'Error', message: err.message, stack: err.stack };
  for (const [key, value] of Object.entries(err)) if (!(key in out)) out[key] = value instanceof Error ? serializeError(value) : value;
  if (err.cause instanceof Error && !('cause' in out)) out.cause = serializeError(err.cause);
  return out;
}

/** The paths the daemons' pino redacts: token, *.token, headers.authorization, req.headers.authorization. */
function redact(fields: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(fields)) {
    if (key === 'token') out[key] = REDACTED;
    else if (key === 'err' && value instanceof Error) out[key] = serializeError(value);
    else if (typeof value === 'object' && value !== null && !Array.isArray(value) && !(value instanceof Error)) {
      let copy = value as Record<string, unknown>;
      if ('token' in copy) copy = { ...copy, token: REDACTED };
      if (key === 'headers' && 'authorization' in copy) copy = { ...copy, authorization: REDACTED };
      const headers = copy.headers as Record<string, unknown> | undefined;
      if (key === 'req' && typeof headers === 'object' && headers !== null && 'authorization' in headers) copy = { ...copy, headers: { ...headers, authorization: REDACTED } };
      out[key] = copy;
    } else out[key] = value;
  }
  return out;
}

/** `{"a":1,"b":2}` as `,"a":1,"b":2` (nothing for no fields), circular references cut. */
function members(fields: Record<string, unknown>): string {
  let text: string;
  try {
    text = JSON.stringify(fields);
  } catch {
    const seen = new WeakSet<object>();
    text = JSON.stringify(fields, (_key, value: unknown) => {
      if (typeof value !== 'object' || value === null) return typeof value === 'bigint' ? value.toString() : value;
      if (seen.has(value)) return '[Circular]';
      seen.add(value);
      return value;
    });
  }
  return text.length > 2 ? `,${text.slice(1, -1)}` : '';
}

class JsonLogger implements Log {
  trace: LogFn = this.method('trace');
  debug: LogFn = this.method('debug');
  info: LogFn = this.method('info');
  warn: LogFn = this.method('warn');
  error: LogFn = this.method('error');
  fatal: LogFn = this.method('fatal');

  constructor(
    private readonly sink: LineSink,
    private threshold: number,
    /** The pid and the bindings of this logger and its parents, already as JSON members. */
    private readonly bound: string,
  ) {}

  get level(): string {
    return Object.keys(LEVELS).find((name) => LEVELS[name] === this.threshold)!;
  }

  set level(name: string) {
    this.threshold = levelNumber(name);
  }

  child(bindings: Record<string, unknown>): Log {
    return new JsonLogger(this.sink, this.threshold, this.bound + members(redact(bindings)));
  }

  private method(name: string): LogFn {
    const level = LEVELS[name]!;
    return ((first: unknown, message?: string) => {
      if (level < this.threshold) return;
      let fields: Record<string, unknown> = {};
      if (typeof first === 'string') message = first;
      else if (first instanceof Error) {
        fields = { err: first };
        message ??= first.message;
      } else if (typeof first === 'object' && first !== null) fields = first as Record<string, unknown>;
      const msg = message === undefined ? '' : `,"msg":${JSON.stringify(String(message))}`;
      this.sink.write(`{"level":${level},"time":${Date.now()}${this.bound}${members(redact(fields))}${msg}}\n`);
    }) as LogFn;
  }
}

function levelNumber(name: string): number {
  const level = LEVELS[name];
  if (level === undefined) throw new Error(`unknown log level '${name}' (KILN_LOG_LEVEL): use ${Object.keys(LEVELS).join(', ')}`);
  return level;
}

/** A logger at `level` (KILN_LOG_LEVEL overrides the default) writing to `sink` (stderr by default). */
export function createJsonLogger(level?: string, sink: LineSink = new SafeLogDestination(2)): Log {
  return new JsonLogger(sink, levelNumber(level ?? process.env.KILN_LOG_LEVEL ?? 'info'), `,"pid":${process.pid}`);
}
