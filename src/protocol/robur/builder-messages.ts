/**
 * builder's `cmd` CHOICE (reference robur-protocol.md §1.4) and its framing (§1.1): one DER value
 * per frame, preceded by its 8-byte big-endian length.
 */
import { RoburDecodeError } from '../../errors.js';
import { asDecodeError, DerReader, explicit, generalizedTime, integer, nullValue, sequence, utf8String, tagName } from './der.js';
import {
  decodeFiles, decodeOrbJob, decodeQueue, decodePeriod, decodeResult, decodeScheduleItem, decodeScriptJob, decodeSequenceOf, decodeUuid,
  encodeFiles, encodeOrbJob, encodeQueue, encodePeriod, encodeResult, encodeScheduleItem, encodeScriptJob, encodeUuid,
} from './values.js';
import type { RoburCmd, RoburQueue, RoburRunning, RoburScheduleItem } from './types.js';

/** Default largest frame body a FrameReader takes: a Job_finished carries whole artifacts inline. */
export const MAX_ROBUR_FRAME_BYTES = 256 * 1024 * 1024;

type Info = { schedule: RoburScheduleItem[]; queues: RoburQueue[]; running: RoburRunning[] };

function encodeInfo(info: Info, dropped?: string[]): Buffer {
  return sequence([
    sequence(info.schedule.map(encodeScheduleItem)),
    sequence(info.queues.map(encodeQueue)),
    sequence(info.running.map((r) => sequence([generalizedTime(r.started), encodeUuid(r.uuid), encodeScriptJob(r.job)]))),
    ...(dropped !== undefined ? [sequence(dropped.map((p) => utf8String(p)))] : []),
  ]);
}

function decodeInfo(r: DerReader, what: string, withDropped: boolean): Info & { dropped: string[] } {
  const s = r.sequence(what);
  const schedule = decodeSequenceOf(s, `${what} schedule`, decodeScheduleItem);
  const queues = decodeSequenceOf(s, `${what} queues`, decodeQueue);
  const running = decodeSequenceOf(s, `${what} running`, (q, w) => {
    const rs = q.sequence(w);
    const started = rs.time(`${w} started`);
    const uuid = decodeUuid(rs, `${w} uuid`);
    const job = decodeScriptJob(rs, `${w} job`);
    rs.end(w);
    return { started, uuid, job };
  });
  const dropped = withDropped ? decodeSequenceOf(s, `${what} dropped`, (q, w) => q.utf8(w)) : [];
  s.end(what);
  return { schedule, queues, running, dropped };
}

/** The tag and content of one message: the frame body is `[tag] content`. */
function encodeBody(cmd: RoburCmd): [number, Buffer] {
  switch (cmd.type) {
    case 'job-schedule':
      return [2, sequence([encodeUuid(cmd.uuid), encodeScriptJob(cmd.job)])];
    case 'job-finished':
      return [3, sequence([encodeUuid(cmd.uuid), encodeResult(cmd.result), encodeFiles(cmd.files)])];
    case 'output':
      return [4, sequence([encodeUuid(cmd.uuid), utf8String(cmd.line), ...(cmd.timestampNs !== undefined ? [integer(cmd.timestampNs)] : [])])];
    case 'schedule':
      return [5, sequence([encodePeriod(cmd.period), encodeScriptJob(cmd.job)])];
    case 'info':
      return [6, nullValue()];
    case 'info-reply-old':
      return [7, encodeInfo(cmd)];
    case 'unschedule':
      return [9, utf8String(cmd.name)];
    case 'observe':
      return [10, encodeUuid(cmd.uuid)];
    case 'execute-old':
      return [11, utf8String(cmd.name)];
    case 'schedule-orb-build':
      return [12, sequence([encodePeriod(cmd.period), encodeOrbJob(cmd.job)])];
    case 'reschedule':
      return [13, sequence([utf8String(cmd.name), generalizedTime(cmd.next), ...(cmd.period !== undefined ? [encodePeriod(cmd.period)] : [])])];
    case 'client-hello':
      return [14, sequence([explicit(cmd.peer === 'client' ? 0 : 1, nullValue()), integer(cmd.version)])];
    case 'server-hello':
      return [15, nullValue()];
    case 'job-requested':
      return [16, utf8String(cmd.platform)];
    case 'drop-platform':
      return [17, utf8String(cmd.platform)];
    case 'success':
      return [18, nullValue()];
    case 'failure':
      return [19, utf8String(cmd.message)];
    case 'execute':
      return [20, sequence([utf8String(cmd.name), ...(cmd.platform !== undefined ? [utf8String(cmd.platform)] : [])])];
    case 'undrop-platform':
      return [21, utf8String(cmd.platform)];
    case 'info-reply':
      return [22, encodeInfo(cmd, cmd.dropped)];
  }
}

/** One message as one DER value: the frame body, without the length header. */
export function encodeCmd(cmd: RoburCmd): Buffer {
  const [tag, content] = encodeBody(cmd);
  return explicit(tag, content);
}

/** Reads the content of `[tag]` as that message. */
function decodeBody(tag: number, r: DerReader): RoburCmd {
  const what = `message [${tag}]`;
  switch (tag) {
    case 2: {
      const s = r.sequence(`${what} Job_schedule`);
      const uuid = decodeUuid(s, 'Job_schedule uuid');
      const job = decodeScriptJob(s, 'Job_schedule job');
      s.end('Job_schedule');
      return { type: 'job-schedule', uuid, job };
    }
    case 3: {
      const s = r.sequence(`${what} Job_finished`);
      const uuid = decodeUuid(s, 'Job_finished uuid');
      const result = decodeResult(s, 'Job_finished result');
      const files = decodeFiles(s, 'Job_finished data');
      s.end('Job_finished');
      return { type: 'job-finished', uuid, result, files };
    }
    case 4: {
      const s = r.sequence(`${what} Output`);
      const uuid = decodeUuid(s, 'Output uuid');
      const line = s.utf8('Output line');
      const cmd: RoburCmd = { type: 'output', uuid, line };
      if (!s.atEnd()) cmd.timestampNs = s.integer('Output timestamp');
      s.end('Output');
      return cmd;
    }
    case 5: {
      const s = r.sequence(`${what} Schedule`);
      const period = decodePeriod(s, 'Schedule period');
      const job = decodeScriptJob(s, 'Schedule job');
      s.end('Schedule');
      return { type: 'schedule', period, job };
    }
    case 6:
      r.null('Info');
      return { type: 'info' };
    case 7:
      return { type: 'info-reply-old', ...stripDropped(decodeInfo(r, 'Info_reply (old)', false)) };
    case 9:
      return { type: 'unschedule', name: r.utf8('Unschedule name') };
    case 10:
      return { type: 'observe', uuid: decodeUuid(r, 'Observe uuid') };
    case 11:
      return { type: 'execute-old', name: r.utf8('Execute (old) name') };
    case 12: {
      const s = r.sequence(`${what} Schedule_orb_build`);
      const period = decodePeriod(s, 'Schedule_orb_build period');
      const job = decodeOrbJob(s, 'Schedule_orb_build job');
      s.end('Schedule_orb_build');
      return { type: 'schedule-orb-build', period, job };
    }
    case 13: {
      const s = r.sequence(`${what} Reschedule`);
      const name = s.utf8('Reschedule name');
      const next = s.time('Reschedule next');
      const cmd: RoburCmd = { type: 'reschedule', name, next };
      if (!s.atEnd()) cmd.period = decodePeriod(s, 'Reschedule period');
      s.end('Reschedule');
      return cmd;
    }
    case 14: {
      const s = r.sequence(`${what} Client_hello`);
      const typ = s.next('Client_hello typ');
      if (typ.tag !== 0xa0 && typ.tag !== 0xa1) throw new RoburDecodeError(`robur DER: Client_hello typ: expected [0] or [1], got ${tagName(typ.tag)} at byte ${typ.offset}`);
      const inner = s.enter(typ, 'Client_hello typ');
      inner.null('Client_hello typ');
      inner.end('Client_hello typ');
      const version = s.integer('Client_hello version');
      s.end('Client_hello');
      return { type: 'client-hello', peer: typ.tag === 0xa0 ? 'client' : 'worker', version };
    }
    case 15:
      r.null('Server_hello');
      return { type: 'server-hello' };
    case 16:
      return { type: 'job-requested', platform: r.utf8('Job_requested platform') };
    case 17:
      return { type: 'drop-platform', platform: r.utf8('Drop_platform platform') };
    case 18:
      r.null('Success');
      return { type: 'success' };
    case 19:
      return { type: 'failure', message: r.utf8('Failure message') };
    case 20: {
      const s = r.sequence(`${what} Execute`);
      const name = s.utf8('Execute job_name');
      const cmd: RoburCmd = { type: 'execute', name };
      if (!s.atEnd()) cmd.platform = s.utf8('Execute platform');
      s.end('Execute');
      return cmd;
    }
    case 21:
      return { type: 'undrop-platform', platform: r.utf8('Undrop_platform platform') };
    case 22:
      return { type: 'info-reply', ...decodeInfo(r, 'Info_reply', true) };
    case 0:
    case 1:
    case 8:
      throw new RoburDecodeError(`robur message: legacy tag [${tag}] is not accepted (it crashes builder-server)`);
    default:
      throw new RoburDecodeError(`robur message: unknown tag [${tag}]`);
  }
}

function stripDropped(info: Info & { dropped: string[] }): Info {
  return { schedule: info.schedule, queues: info.queues, running: info.running };
}

/** Reads one frame body as a message. Throws RoburDecodeError, and only that, for anything else. */
export function decodeCmd(body: Buffer): RoburCmd {
  try {
    const top = new DerReader(body);
    const value = top.next('message');
    top.end('message');
    if ((value.tag & 0xe0) !== 0xa0) throw new RoburDecodeError(`robur message: expected a context tag [n], got ${tagName(value.tag)}`);
    const tag = value.tag & 0x1f;
    if (tag === 0 || tag === 1 || tag === 8 || tag > 22) return decodeBody(tag, top);
    const inner = top.enter(value, `message [${tag}]`);
    const cmd = decodeBody(tag, inner);
    inner.end(`message [${tag}]`);
    return cmd;
  } catch (raw) {
    throw asDecodeError(raw);
  }
}

/** The 8-byte big-endian length, then the body. */
export function frameOf(body: Buffer): Buffer {
  const header = Buffer.alloc(8);
  header.writeBigUInt64BE(BigInt(body.length));
  return Buffer.concat([header, body]);
}

/**
 * Splits a TCP byte stream into frame bodies, however the segments are cut (builder writes header
 * and body separately, and Nagle may hold either). A length over `maxBodyBytes` fails before any
 * of the body is buffered.
 */
export class FrameReader {
  private chunks: Buffer[] = [];
  private buffered = 0;
  /** The body length being waited for, once its header has arrived. */
  private want: number | undefined;

  constructor(private readonly maxBodyBytes: number = MAX_ROBUR_FRAME_BYTES) {}

  /** Takes the next bytes; returns every frame body they complete, in order. */
  push(chunk: Buffer): Buffer[] {
    if (chunk.length > 0) {
      this.chunks.push(chunk);
      this.buffered += chunk.length;
    }
    const bodies: Buffer[] = [];
    for (;;) {
      if (this.want === undefined) {
        if (this.buffered < 8) break;
        const length = this.take(8).readBigUInt64BE();
        if (length > BigInt(this.maxBodyBytes)) {
          throw new RoburDecodeError(`robur frame: a body of ${length} bytes is over the limit of ${this.maxBodyBytes}`);
        }
        this.want = Number(length);
      }
      if (this.buffered < this.want) break;
      bodies.push(this.take(this.want));
      this.want = undefined;
    }
    return bodies;
  }

  /** The body length the frame in hand declares, once its header has arrived. */
  get expecting(): number | undefined {
    return this.want;
  }

  /** Bytes received and not yet returned (a partial header or body). */
  get pending(): number {
    return this.buffered;
  }

  private take(n: number): Buffer {
    const all = this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks);
    const out = all.subarray(0, n);
    const rest = all.subarray(n);
    this.chunks = rest.length > 0 ? [rest] : [];
    this.buffered = rest.length;
    return out;
  }
}

/** ` TEXT` for an optional field that is present, else nothing. */
const optional = (text: string | undefined) => (text === undefined ? '' : ` ${text}`);

/** Control characters and over-long text out of a name, so that a log line stays one line. */
function clean(text: string): string {
  const flat = text.replace(/[\u0000-\u001f\u007f]/g, '?');
  return flat.length > 80 ? `${flat.slice(0, 80)}…` : flat;
}

/** A short text for logs (`Job_requested debian-12`): never a script, a line or file data. */
export function describeCmd(cmd: RoburCmd): string {
  switch (cmd.type) {
    case 'job-schedule':
      return `Job_schedule ${cmd.uuid} ${clean(cmd.job.name)}${optional(cmd.job.platform === undefined ? undefined : clean(cmd.job.platform))}`;
    case 'job-finished': {
      const r = cmd.result;
      const result = r.kind === 'msg' ? 'msg' : `${r.kind} ${r.kind === 'exited' ? r.code : r.signal}`;
      return `Job_finished ${cmd.uuid} ${result}, ${cmd.files.length} file(s)`;
    }
    case 'output':
      return `Output ${cmd.uuid} (${Buffer.byteLength(cmd.line)} bytes${cmd.timestampNs !== undefined ? ` at ${cmd.timestampNs} ns` : ''})`;
    case 'schedule':
      return `Schedule ${cmd.period} ${clean(cmd.job.name)}${optional(cmd.job.platform === undefined ? undefined : clean(cmd.job.platform))}`;
    case 'info':
      return 'Info';
    case 'info-reply-old':
    case 'info-reply':
      return `Info_reply${cmd.type === 'info-reply-old' ? ' (old)' : ''} (${cmd.schedule.length} scheduled, ${cmd.queues.length} queues, ${cmd.running.length} running)`;
    case 'unschedule':
      return `Unschedule ${clean(cmd.name)}`;
    case 'observe':
      return `Observe ${cmd.uuid}`;
    case 'execute-old':
      return `Execute (old) ${clean(cmd.name)}`;
    case 'schedule-orb-build':
      return `Schedule_orb_build ${cmd.period} ${clean(cmd.job.name)} ${clean(cmd.job.opamPackage)}`;
    case 'reschedule':
      return `Reschedule ${clean(cmd.name)} ${new Date(cmd.next).toISOString()}${optional(cmd.period)}`;
    case 'client-hello':
      return `Client_hello ${cmd.peer} ${cmd.version}`;
    case 'server-hello':
      return 'Server_hello';
    case 'job-requested':
      return `Job_requested ${clean(cmd.platform)}`;
    case 'drop-platform':
      return `Drop_platform ${clean(cmd.platform)}`;
    case 'success':
      return 'Success';
    case 'failure':
      return `Failure ${clean(cmd.message)}`;
    case 'execute':
      return `Execute ${clean(cmd.name)}${optional(cmd.platform === undefined ? undefined : clean(cmd.platform))}`;
    case 'undrop-platform':
      return `Undrop_platform ${clean(cmd.platform)}`;
  }
}
