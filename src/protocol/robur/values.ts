/**
 * builder's shared ASN.1 types (reference robur-protocol.md §1.3): UUID, ScriptJob, OrbBuildJob,
 * Job, Period, Result, ScheduleItem, Data — encoded and decoded in one place so that the messages,
 * the exec blob and the state file agree.
 * @internal
 */
import { InvalidRequestError, RoburDecodeError } from '../../errors.js';
import { DerReader, explicit, generalizedTime, integer, nullValue, sequence, utf8String } from './der.js';
import type { RoburFile, RoburJob, RoburOrbJob, RoburPeriod, RoburQueue, RoburResult, RoburScheduleItem, RoburScriptJob } from './types.js';

const UUID_TEXT = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** Whether `text` is a UUID, so it can travel as builder's 16-byte uuid. */
export function isRoburUuid(text: string): boolean {
  return UUID_TEXT.test(text);
}

/** A UUID string as builder's UUID: a UTF8String of its 16 raw bytes. */
export function encodeUuid(uuid: string): Buffer {
  if (!isRoburUuid(uuid)) throw new InvalidRequestError(`cannot encode '${uuid}' as a robur uuid: not a UUID`);
  return utf8String(Buffer.from(uuid.replace(/-/g, ''), 'hex'));
}

/** Reads a UUID (exactly 16 bytes) as its canonical lower-case text. */
export function decodeUuid(r: DerReader, what: string): string {
  const bytes = r.utf8Bytes(what);
  if (bytes.length !== 16) throw new RoburDecodeError(`robur DER: ${what}: a uuid must be 16 bytes, got ${bytes.length}`);
  const hex = bytes.toString('hex');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

const PERIODS: readonly RoburPeriod[] = ['hourly', 'daily', 'weekly', 'never'];

/** Period ::= CHOICE { [0] NULL hourly, [1] daily, [2] weekly, [3] never }. */
export function encodePeriod(period: RoburPeriod): Buffer {
  const n = PERIODS.indexOf(period);
  if (n < 0) throw new InvalidRequestError(`cannot encode '${String(period)}' as a robur period`);
  return explicit(n, nullValue());
}

/** Reads a Period. */
export function decodePeriod(r: DerReader, what: string): RoburPeriod {
  const value = r.next(what);
  const n = value.tag & 0x1f;
  if ((value.tag & 0xe0) !== 0xa0 || n > 3) throw new RoburDecodeError(`robur DER: ${what}: not a period (tag byte 0x${value.tag.toString(16)}) at byte ${value.offset}`);
  const inner = r.enter(value, what);
  inner.null(what);
  inner.end(what);
  return PERIODS[n]!;
}

/** Data ::= SEQUENCE { path UTF8String, data UTF8String }. */
export function encodeFile(file: RoburFile): Buffer {
  return sequence([utf8String(file.path), utf8String(file.data)]);
}

/** Reads a Data. */
export function decodeFile(r: DerReader, what: string): RoburFile {
  const s = r.sequence(what);
  const path = s.utf8(`${what} path`);
  const data = s.utf8Bytes(`${what} data`);
  s.end(what);
  return { path, data };
}

/** SEQUENCE OF Data. */
export function encodeFiles(files: RoburFile[]): Buffer {
  return sequence(files.map(encodeFile));
}

/** Reads a SEQUENCE OF Data. */
export function decodeFiles(r: DerReader, what: string): RoburFile[] {
  return decodeSequenceOf(r, what, decodeFile);
}

/** ScriptJob ::= SEQUENCE { name, script, files SEQUENCE OF Data (always empty), platform OPTIONAL }. */
export function encodeScriptJob(job: RoburScriptJob): Buffer {
  return sequence([
    utf8String(job.name),
    utf8String(job.script),
    sequence([]),
    ...(job.platform !== undefined ? [utf8String(job.platform)] : []),
  ]);
}

/** Reads a ScriptJob; its files must be a well-formed SEQUENCE OF Data, and are dropped (as builder does). */
export function decodeScriptJob(r: DerReader, what: string): RoburScriptJob {
  const s = r.sequence(what);
  const name = s.utf8(`${what} name`);
  const script = s.utf8(`${what} script`);
  decodeFiles(s, `${what} files`);
  const job: RoburScriptJob = { name, script };
  if (!s.atEnd()) job.platform = s.utf8(`${what} platform`);
  s.end(what);
  return job;
}

/** OrbBuildJob ::= SEQUENCE { name, opam_package }. */
export function encodeOrbJob(job: RoburOrbJob): Buffer {
  return sequence([utf8String(job.name), utf8String(job.opamPackage)]);
}

/** Reads an OrbBuildJob. */
export function decodeOrbJob(r: DerReader, what: string): RoburOrbJob {
  const s = r.sequence(what);
  const name = s.utf8(`${what} name`);
  const opamPackage = s.utf8(`${what} opam_package`);
  s.end(what);
  return { name, opamPackage };
}

/** Job ::= CHOICE { [0] ScriptJob, [1] OrbBuildJob }. */
export function encodeJob(job: RoburJob): Buffer {
  return job.kind === 'script' ? explicit(0, encodeScriptJob(job.job)) : explicit(1, encodeOrbJob(job.job));
}

/** Reads a Job. */
export function decodeJob(r: DerReader, what: string): RoburJob {
  const value = r.next(what);
  let job: RoburJob;
  if (value.tag === 0xa0) {
    const inner = r.enter(value, what);
    job = { kind: 'script', job: decodeScriptJob(inner, `${what} script job`) };
    inner.end(what);
  } else if (value.tag === 0xa1) {
    const inner = r.enter(value, what);
    job = { kind: 'orb-build', job: decodeOrbJob(inner, `${what} orb-build job`) };
    inner.end(what);
  } else {
    throw new RoburDecodeError(`robur DER: ${what}: not a job (tag byte 0x${value.tag.toString(16)}) at byte ${value.offset}`);
  }
  return job;
}

/** Result ::= CHOICE { [0] INTEGER exited, [1] INTEGER signalled, [2] INTEGER stopped, [3] UTF8String msg }. */
export function encodeResult(result: RoburResult): Buffer {
  switch (result.kind) {
    case 'exited':
      return explicit(0, integer(result.code));
    case 'signalled':
      return explicit(1, integer(result.signal));
    case 'stopped':
      return explicit(2, integer(result.signal));
    case 'msg':
      return explicit(3, utf8String(result.message));
  }
}

/** Reads a Result. */
export function decodeResult(r: DerReader, what: string): RoburResult {
  const value = r.next(what);
  const n = value.tag & 0x1f;
  if ((value.tag & 0xe0) !== 0xa0 || n > 3) throw new RoburDecodeError(`robur DER: ${what}: not a result (tag byte 0x${value.tag.toString(16)}) at byte ${value.offset}`);
  const inner = r.enter(value, what);
  let result: RoburResult;
  if (n === 0) result = { kind: 'exited', code: inner.integer(`${what} exit code`) };
  else if (n === 1) result = { kind: 'signalled', signal: inner.integer(`${what} signal`) };
  else if (n === 2) result = { kind: 'stopped', signal: inner.integer(`${what} signal`) };
  else result = { kind: 'msg', message: inner.utf8(`${what} message`) };
  inner.end(what);
  return result;
}

/** ScheduleItem ::= SEQUENCE { next Time, period Period, job Job }. */
export function encodeScheduleItem(item: RoburScheduleItem): Buffer {
  return sequence([generalizedTime(item.next), encodePeriod(item.period), encodeJob(item.job)]);
}

/** Reads a ScheduleItem. */
export function decodeScheduleItem(r: DerReader, what: string): RoburScheduleItem {
  const s = r.sequence(what);
  const next = s.time(`${what} next`);
  const period = decodePeriod(s, `${what} period`);
  const job = decodeJob(s, `${what} job`);
  s.end(what);
  return { next, period, job };
}

/** A queue: SEQUENCE { platform UTF8String, jobs SEQUENCE OF Job } (Info_reply and the state file). */
export function encodeQueue(queue: RoburQueue): Buffer {
  return sequence([utf8String(queue.platform), sequence(queue.jobs.map(encodeJob))]);
}

/** Reads a queue. */
export function decodeQueue(r: DerReader, what: string): RoburQueue {
  const s = r.sequence(what);
  const platform = s.utf8(`${what} platform`);
  const jobs = decodeSequenceOf(s, `${what} jobs`, decodeJob);
  s.end(what);
  return { platform, jobs };
}

/** Reads a SEQUENCE OF X with `each`. */
export function decodeSequenceOf<T>(r: DerReader, what: string, each: (r: DerReader, what: string) => T): T[] {
  const s = r.sequence(what);
  const items: T[] = [];
  while (!s.atEnd()) items.push(each(s, `${what} ${items.length}`));
  return items;
}
