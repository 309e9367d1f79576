/**
 * Reads a server frame on the worker's side without zod: zod 4 loads ~220 modules (its locales
 * among them) whatever is imported, about half of an idle worker's start-up CPU and ~10 MB of its
 * memory. It accepts and refuses exactly what `serverMessage` (messages.ts) does, and returns what
 * zod's parse returns (unknown keys dropped, defaults filled in); test/unit/server-message-decoder
 * holds it to the schema, so a change to one that the other lacks fails there.
 */
import type { RunAssignment, ServerMessage } from './messages.js';

/** The decoded frame, or why it is not a server message (a path and what was wrong there). */
export type Decoded = { ok: true; message: ServerMessage } | { ok: false; issue: string };

/** zod's uuid(): RFC 9562 versions 1 to 8 and the nil and max ids. */
const UUID = /^([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[1-8][0-9a-fA-F]{3}-[89abAB][0-9a-fA-F]{3}-[0-9a-fA-F]{12}|00000000-0000-0000-0000-000000000000|ffffffff-ffff-ffff-ffff-ffffffffffff)$/;

class Refused extends Error {}

type Fields = Record<string, unknown>;

function refuse(path: string, what: string): never {
  throw new Refused(`${path || 'message'}: ${what}`);
}

function object(value: unknown, path: string): Fields {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) refuse(path, 'expected an object');
  return value as Fields;
}

function string(value: unknown, path: string): string {
  if (typeof value !== 'string') refuse(path, 'expected a string');
  return value;
}

/** zod's int(): a safe integer. */
function int(value: unknown, path: string, min = -Infinity): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value)) refuse(path, 'expected an integer');
  if (value < min) refuse(path, `expected at least ${min}`);
  return value;
}

function bool(value: unknown, path: string): boolean {
  if (typeof value !== 'boolean') refuse(path, 'expected a boolean');
  return value;
}

function literal<const T>(value: unknown, expected: T, path: string): T {
  if (value !== expected) refuse(path, `expected ${JSON.stringify(expected)}`);
  return expected;
}

function array<T>(value: unknown, path: string, item: (value: unknown, path: string) => T): T[] {
  if (!Array.isArray(value)) refuse(path, 'expected an array');
  return value.map((v, i) => item(v, `${path}.${i}`));
}

function optional<T>(value: unknown, read: (value: unknown) => T): T | undefined {
  return value === undefined ? undefined : read(value);
}

/** Copies only the keys that have a value: zod leaves an absent optional key out. */
function defined<T extends Fields>(fields: T): T {
  for (const key of Object.keys(fields)) if (fields[key] === undefined) delete fields[key];
  return fields;
}

function stringRecord(value: unknown, path: string): Record<string, string> {
  const fields = object(value, path);
  return Object.fromEntries(Object.keys(fields).map((key) => [key, string(fields[key], `${path}.${key}`)]));
}

function positiveInt(value: unknown, path: string): number {
  return int(value, path, 1);
}

function assignment(value: unknown, path: string): RunAssignment {
  const f = object(value, path);
  const at = (key: string) => `${path}.${key}`;
  const id = string(f.id, at('id'));
  if (!UUID.test(id)) refuse(at('id'), 'expected a uuid');
  let sandbox: RunAssignment['sandbox'] = {};
  if (f.sandbox !== undefined) {
    const s = object(f.sandbox, at('sandbox'));
    const sub = (key: string) => `${at('sandbox')}.${key}`;
    sandbox = defined({
      memoryBytes: optional(s.memoryBytes, (v) => positiveInt(v, sub('memoryBytes'))),
      pids: optional(s.pids, (v) => positiveInt(v, sub('pids'))),
      cpuSeconds: optional(s.cpuSeconds, (v) => positiveInt(v, sub('cpuSeconds'))),
      network: optional(s.network, (v) => (v === 'none' || v === 'host' ? v : refuse(sub('network'), 'expected "none" or "host"'))),
    });
  }
  let artifactLimits: RunAssignment['artifactLimits'];
  if (f.artifactLimits !== undefined) {
    const l = object(f.artifactLimits, at('artifactLimits'));
    artifactLimits = { fileBytes: int(l.fileBytes, `${at('artifactLimits')}.fileBytes`, 0), runBytes: int(l.runBytes, `${at('artifactLimits')}.runBytes`, 0) };
  }
  return defined({
    id,
    job: string(f.job, at('job')),
    platform: string(f.platform, at('platform')),
    attempt: int(f.attempt, at('attempt'), 1),
    script: string(f.script, at('script')),
    env: stringRecord(f.env, at('env')),
    timeoutMs: positiveInt(f.timeoutMs, at('timeoutMs')),
    idleTimeoutMs: optional(f.idleTimeoutMs, (v) => positiveInt(v, at('idleTimeoutMs'))),
    firstSeq: int(f.firstSeq, at('firstSeq'), 0),
    artifacts: f.artifacts === undefined ? [] : array(f.artifacts, at('artifacts'), string),
    artifactsOnFailure: f.artifactsOnFailure === undefined ? false : bool(f.artifactsOnFailure, at('artifactsOnFailure')),
    sandbox,
    artifactLimits,
  });
}

/** The fields of a frame after `v` and `type`, by type. */
function read(f: Fields): ServerMessage {
  const runId = () => string(f.runId, 'runId');
  const v1 = () => literal(f.v, 1, 'v');
  switch (f.type) {
    case 'welcome':
      return {
        v: v1(), type: 'welcome', name: string(f.name, 'name'), heartbeatMs: positiveInt(f.heartbeatMs, 'heartbeatMs'),
        resume: array(f.resume, 'resume', (item, path) => {
          const r = object(item, path);
          return { runId: string(r.runId, `${path}.runId`), afterSeq: int(r.afterSeq, `${path}.afterSeq`) };
        }),
        release: array(f.release, 'release', (item, path) => {
          const r = object(item, path);
          return { runId: string(r.runId, `${path}.runId`), reason: string(r.reason, `${path}.reason`) };
        }),
      };
    case 'refused':
      return { v: int(f.v, 'v'), type: 'refused', code: string(f.code, 'code'), message: string(f.message, 'message') };
    case 'run.assign':
      return { v: v1(), type: 'run.assign', run: assignment(f.run, 'run') };
    case 'error':
      return { v: v1(), type: 'error', code: string(f.code, 'code'), message: string(f.message, 'message') };
    case 'run.cancel':
    case 'run.release':
      return { v: v1(), type: f.type, runId: runId(), reason: string(f.reason, 'reason') };
    case 'run.done':
      return { v: v1(), type: 'run.done', runId: runId(), applied: bool(f.applied, 'applied') };
    case 'notice':
      return { v: v1(), type: 'notice', message: string(f.message, 'message') };
    default:
      return refuse('type', 'not a server message type');
  }
}

/** Decodes a parsed JSON frame from the server. */
export function decodeServerMessage(value: unknown): Decoded {
  try {
    return { ok: true, message: read(object(value, '')) };
  } catch (err) {
    if (err instanceof Refused) return { ok: false, issue: err.message };
    throw err;
  }
}
