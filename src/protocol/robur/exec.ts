/**
 * builder-web's exec blob (reference robur-protocol.md §2.3): the body of `POST /upload` and
 * builder's `full` file. In memory for small values and tests; streamed (with its length known up
 * front) for uploads, and read by positional reads from a file, so that a big artifact is never
 * held whole.
 */
import { open } from 'node:fs/promises';
import { createReadStream } from 'node:fs';
import { Readable } from 'node:stream';
import { InternalError, RoburDecodeError } from '../../errors.js';
import { asDecodeError, DerReader, encodeLength, explicit, generalizedTime, integer, readHeader, sequence, TAG, tagName, utf8String } from './der.js';
import { decodeFile, decodeResult, decodeScriptJob, decodeSequenceOf, decodeUuid, encodeResult, encodeScriptJob, encodeUuid } from './values.js';
import type { RoburConsoleLine, RoburExec } from './types.js';

/** The exec without its artifacts: what sits before them on the wire. */
export type RoburExecHead = Omit<RoburExec, 'files'>;

/** An artifact to stream: its size is announced before its bytes are read. */
export interface ExecStreamFile {
  path: string;
  size: number;
  open(): Promise<Readable>;
}

/** An artifact inside an exec file: `read()` streams its bytes from the file. */
export interface ExecFileEntry {
  path: string;
  size: number;
  read(): Readable;
}

/** The exec head with its console already encoded (entries newest first) and of known length: what execStream sends. */
export type RoburExecStreamHead = Omit<RoburExecHead, 'console'> & { console: readonly RoburConsoleLine[] | EncodedConsole };

/**
 * A console's entries as the exec carries them (the content of its console SEQUENCE, newest line
 * first), produced in chunks whose total is `length`: a long console is read, encoded and sent a
 * part at a time, never held whole.
 */
export interface EncodedConsole {
  length: number;
  chunks(): AsyncIterable<Buffer>;
}

/** Console entries, each SEQUENCE { INTEGER delta, UTF8String line }, in the order given (the wire's: newest first). */
export function encodeConsoleEntries(newestFirst: readonly RoburConsoleLine[]): Buffer {
  return Buffer.concat(newestFirst.map((l) => sequence([integer(l.deltaNs), utf8String(l.line)])));
}

/** A console held in memory (oldest first), encoded for the wire. */
function inMemoryConsole(console: readonly RoburConsoleLine[]): EncodedConsole {
  const entries = encodeConsoleEntries([...console].reverse());
  return { length: entries.length, chunks: async function* () { yield entries; } };
}

/** The encoded fields before `output`: job, uuid, console (newest first), timestamps, result. */
function encodeHeadFields(head: RoburExecHead): Buffer[] {
  return [
    encodeScriptJob(head.job),
    encodeUuid(head.uuid),
    sequence([encodeConsoleEntries([...head.console].reverse())]),
    sequence([generalizedTime(head.started), generalizedTime(head.finished)]),
    encodeResult(head.result),
  ];
}

/** The whole exec blob, in memory. */
export function encodeExec(exec: RoburExec): Buffer {
  const output = sequence(exec.files.map((f) => sequence([utf8String(f.path), utf8String(f.data)])));
  return explicit(0, sequence([...encodeHeadFields(exec), output]));
}

/** Reads the head fields (job … result) from `s`. */
function decodeHeadFields(s: DerReader): RoburExecHead {
  const job = decodeScriptJob(s, 'exec job');
  const uuid = decodeUuid(s, 'exec uuid');
  const newestFirst = decodeSequenceOf(s, 'exec console', (c, what): RoburConsoleLine => {
    const l = c.sequence(what);
    const deltaNs = l.integer(`${what} delta`);
    const line = l.utf8(`${what} data`);
    l.end(what);
    return { deltaNs, line };
  });
  const t = s.sequence('exec timestamps');
  const started = t.time('exec started');
  const finished = t.time('exec finished');
  t.end('exec timestamps');
  const result = decodeResult(s, 'exec result');
  return { job, uuid, console: newestFirst.reverse(), started, finished, result };
}

/** Reads `[0] SEQUENCE {` and returns the reader of the SEQUENCE's fields. */
function enterExec(top: DerReader): DerReader {
  const choice = top.next('exec');
  if (choice.tag === 0xa1) throw new RoburDecodeError('robur exec: the [1] form is not an exec (builder itself cannot decode it)');
  if (choice.tag !== 0xa0) throw new RoburDecodeError(`robur exec: expected [0], got ${tagName(choice.tag)}`);
  const inner = top.enter(choice, 'exec');
  const s = inner.sequence('exec');
  inner.end('exec');
  return s;
}

/** The whole exec blob, from memory. Throws RoburDecodeError, and only that. */
export function decodeExec(blob: Buffer): RoburExec {
  try {
    const top = new DerReader(blob);
    const s = enterExec(top);
    top.end('exec');
    const head = decodeHeadFields(s);
    const files = decodeSequenceOf(s, 'exec output', decodeFile);
    s.end('exec');
    return { ...head, files };
  } catch (raw) {
    throw asDecodeError(raw);
  }
}

/** A TLV header (tag and length) for content of `length` bytes. */
function tlvHeader(tag: number, length: number): Buffer {
  return Buffer.concat([Buffer.from([tag]), encodeLength(length)]);
}

/**
 * The exec blob as a stream of exactly encodeExec's bytes, with its length known before the
 * first byte (a Content-Length). The console's chunks and each artifact's bytes are read when the
 * stream reaches them; a console or an artifact that yields another size than announced fails the stream.
 */
export function execStream(head: RoburExecStreamHead, files: ExecStreamFile[]): { length: number; stream: Readable } {
  const console = Array.isArray(head.console) ? inMemoryConsole(head.console as readonly RoburConsoleLine[]) : head.console as EncodedConsole;
  const beforeConsole = Buffer.concat([encodeScriptJob(head.job), encodeUuid(head.uuid), tlvHeader(TAG.SEQUENCE, console.length)]);
  const afterConsole = Buffer.concat([sequence([generalizedTime(head.started), generalizedTime(head.finished)]), encodeResult(head.result)]);
  // Each artifact: SEQUENCE { UTF8String path, UTF8String-header + data }.
  const perFile = files.map((f) => {
    const path = utf8String(f.path);
    const dataHeader = tlvHeader(TAG.UTF8STRING, f.size);
    const contentLength = path.length + dataHeader.length + f.size;
    return { file: f, prefix: Buffer.concat([tlvHeader(TAG.SEQUENCE, contentLength), path, dataHeader]) };
  });
  const outputLength = perFile.reduce((sum, p) => sum + p.prefix.length + p.file.size, 0);
  const outputHeader = tlvHeader(TAG.SEQUENCE, outputLength);
  const seqLength = beforeConsole.length + console.length + afterConsole.length + outputHeader.length + outputLength;
  const seqHeader = tlvHeader(TAG.SEQUENCE, seqLength);
  const topHeader = tlvHeader(0xa0, seqHeader.length + seqLength);
  const length = topHeader.length + seqHeader.length + seqLength;

  async function* bytes(): AsyncGenerator<Buffer> {
    yield Buffer.concat([topHeader, seqHeader, beforeConsole]);
    let consoleBytes = 0;
    for await (const chunk of console.chunks()) {
      consoleBytes += chunk.length;
      if (consoleBytes > console.length) throw new InternalError(`the console grew beyond its announced ${console.length} bytes while being sent`);
      yield chunk;
    }
    if (consoleBytes !== console.length) throw new InternalError(`the console gave ${consoleBytes} bytes, ${console.length} were announced`);
    yield Buffer.concat([afterConsole, outputHeader]);
    for (const { file, prefix } of perFile) {
      yield prefix;
      let seen = 0;
      const source = await file.open();
      for await (const chunk of source) {
        const buf = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk as Uint8Array);
        seen += buf.length;
        if (seen > file.size) {
          source.destroy();
          throw new InternalError(`artifact ${file.path} grew beyond its announced ${file.size} bytes while being sent`);
        }
        yield buf;
      }
      if (seen !== file.size) throw new InternalError(`artifact ${file.path} gave ${seen} bytes, ${file.size} were announced`);
    }
  }
  return { length, stream: Readable.from(bytes(), { objectMode: false }) };
}

/**
 * Opens a `full` exec file and decodes everything but the artifacts' bytes, by positional reads:
 * only headers and the small fields are read, so a huge artifact never enters memory.
 * Throws RoburDecodeError for a file that is not one exec blob exactly.
 */
export async function openExecFile(file: string): Promise<{ exec: RoburExecHead; files: ExecFileEntry[] }> {
  const fh = await open(file, 'r');
  try {
    const size = (await fh.stat()).size;
    const readAt = async (position: number, length: number): Promise<Buffer> => {
      const buf = Buffer.alloc(length);
      let got = 0;
      while (got < length) {
        const { bytesRead } = await fh.read(buf, got, length - got, position + got);
        if (bytesRead === 0) break;
        got += bytesRead;
      }
      return buf.subarray(0, got);
    };
    /** Reads the header at `pos`, whose value must end by `end`. */
    const headerAt = async (pos: number, end: number, what: string) => {
      const bytes = await readAt(pos, Math.min(8, end - pos));
      const h = readHeader(bytes, 0, what);
      if (h === undefined) throw new RoburDecodeError(`robur exec file ${file}: ${what}: truncated at byte ${pos}`);
      if (pos + h.headerBytes + h.length > end) {
        throw new RoburDecodeError(`robur exec file ${file}: ${what}: length ${h.length} at byte ${pos} exceeds the ${end - pos - h.headerBytes} bytes left`);
      }
      return h;
    };
    const expectAt = async (pos: number, end: number, tag: number, what: string) => {
      const h = await headerAt(pos, end, what);
      if (h.tag !== tag) throw new RoburDecodeError(`robur exec file ${file}: ${what}: expected ${tagName(tag)}, got ${tagName(h.tag)} at byte ${pos}`);
      return { content: pos + h.headerBytes, end: pos + h.headerBytes + h.length };
    };

    const top = await headerAt(0, size, 'exec');
    if (top.tag !== 0xa0) throw new RoburDecodeError(`robur exec file ${file}: expected [0], got ${tagName(top.tag)}`);
    if (top.headerBytes + top.length !== size) throw new RoburDecodeError(`robur exec file ${file}: ${size - top.headerBytes - top.length} unexpected trailing bytes`);
    const seq = await expectAt(top.headerBytes, size, TAG.SEQUENCE, 'exec');
    if (seq.end !== size) throw new RoburDecodeError(`robur exec file ${file}: [0] holds more than its SEQUENCE`);

    // The head fields: read whole (they are small), then decoded with the strict reader.
    let pos = seq.content;
    const headStart = pos;
    for (let i = 0; i < 5; i++) {
      const h = await headerAt(pos, seq.end, 'exec field');
      pos += h.headerBytes + h.length;
    }
    let exec: RoburExecHead;
    try {
      const r = new DerReader(await readAt(headStart, pos - headStart), 1, headStart);
      exec = decodeHeadFields(r);
      r.end('exec head');
    } catch (raw) {
      throw asDecodeError(raw);
    }

    // The artifacts: headers and paths only; the data is located, not read.
    const output = await expectAt(pos, seq.end, TAG.SEQUENCE, 'exec output');
    if (output.end !== seq.end) throw new RoburDecodeError(`robur exec file ${file}: bytes after the exec output`);
    const files: ExecFileEntry[] = [];
    for (pos = output.content; pos < output.end; ) {
      const what = `exec output ${files.length}`;
      const item = await expectAt(pos, output.end, TAG.SEQUENCE, what);
      const pathTlv = await expectAt(item.content, item.end, TAG.UTF8STRING, `${what} path`);
      const path = (await readAt(pathTlv.content, pathTlv.end - pathTlv.content)).toString('utf8');
      const data = await expectAt(pathTlv.end, item.end, TAG.UTF8STRING, `${what} data`);
      if (data.end !== item.end) throw new RoburDecodeError(`robur exec file ${file}: ${what}: bytes after its data`);
      const start = data.content;
      const length = data.end - data.content;
      files.push({
        path,
        size: length,
        read: () => (length === 0 ? Readable.from([]) : createReadStream(file, { start, end: start + length - 1 })),
      });
      pos = item.end;
    }
    return { exec, files };
  } finally {
    await fh.close();
  }
}
