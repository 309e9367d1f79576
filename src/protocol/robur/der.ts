/**
 * A small, strict DER reader and writer: just the TLVs robur's builder uses (reference
 * robur-protocol.md §1.2). Written here rather than taken from a library because none we know of
 * does both things this codec needs: refuse everything that is not DER exactly as builder's
 * `Asn.der` does (non-minimal lengths, indefinite lengths, constructed strings, non-minimal
 * INTEGERs), and keep UTF8String contents as raw bytes (builder carries ELF artifacts in them).
 *
 * Nothing here knows builder's messages. Every decode failure is a RoburDecodeError with a
 * one-line message naming what was read and where; nothing else is ever thrown by the reader.
 * @internal
 */
import { InvalidRequestError, RoburDecodeError } from '../../errors.js';

/** Universal tag bytes as they appear on the wire (class, constructed bit and number in one byte). */
export const TAG = {
  INTEGER: 0x02,
  NULL: 0x05,
  UTF8STRING: 0x0c,
  UTCTIME: 0x17,
  GENERALIZEDTIME: 0x18,
  SEQUENCE: 0x30,
} as const;

/** The tag byte of an EXPLICIT context tag `[n]` (constructed, context class). */
export function contextTag(n: number): number {
  return 0xa0 | n;
}

/** How deep constructed values may nest: builder's deepest value (an Info_reply) needs 8. */
export const MAX_DEPTH = 16;

/** Largest length a long-form length may claim here: lengths are JS numbers, checked against the bytes. */
const MAX_LENGTH_OCTETS = 6;

// ---------------------------------------------------------------------------------------------
// Writer

/** The DER length octets of `n` (short form below 128, else minimal long form). */
export function encodeLength(n: number): Buffer {
  if (n < 0x80) return Buffer.from([n]);
  const octets: number[] = [];
  for (let v = n; v > 0; v = Math.floor(v / 256)) octets.unshift(v % 256);
  return Buffer.from([0x80 | octets.length, ...octets]);
}

/** One TLV: `tag`, the length of `content`, `content`. */
export function tlv(tag: number, content: Buffer): Buffer {
  return Buffer.concat([Buffer.from([tag]), encodeLength(content.length), content]);
}

/** A SEQUENCE of already encoded values. */
export function sequence(children: Buffer[]): Buffer {
  return tlv(TAG.SEQUENCE, Buffer.concat(children));
}

/** `[n] inner`, EXPLICIT. */
export function explicit(n: number, inner: Buffer): Buffer {
  return tlv(contextTag(n), inner);
}

/** NULL. */
export function nullValue(): Buffer {
  return Buffer.from([TAG.NULL, 0]);
}

/** A UTF8String of exactly these bytes (a JS string is written as its UTF-8). */
export function utf8String(value: string | Buffer): Buffer {
  return tlv(TAG.UTF8STRING, typeof value === 'string' ? Buffer.from(value, 'utf8') : value);
}

/** An INTEGER in minimal two's complement. Only safe integers: builder's are OCaml ints. */
export function integer(value: number): Buffer {
  if (!Number.isSafeInteger(value)) throw new InvalidRequestError(`cannot encode ${value} as a robur INTEGER: not a safe integer`);
  const bytes = Buffer.from(BigInt.asUintN(64, BigInt(value)).toString(16).padStart(16, '0'), 'hex');
  // Drop leading octets that only repeat the sign bit of the next one.
  let start = 0;
  while (start < bytes.length - 1) {
    const b = bytes[start]!;
    const next = bytes[start + 1]!;
    if ((b === 0x00 && next < 0x80) || (b === 0xff && next >= 0x80)) start++;
    else break;
  }
  return tlv(TAG.INTEGER, bytes.subarray(start));
}

const pad = (n: number, width: number) => String(n).padStart(width, '0');

/** A GeneralizedTime `YYYYMMDDHHMMSS[.fff]Z` of `ms` since the epoch (`.fff` only when ms ≠ 0). */
export function generalizedTime(ms: number): Buffer {
  const date = new Date(ms);
  if (!Number.isInteger(ms) || Number.isNaN(date.getTime()) || date.getUTCFullYear() < 0 || date.getUTCFullYear() > 9999) {
    throw new InvalidRequestError(`cannot encode ${ms} as a robur time: not a whole millisecond in years 0000-9999`);
  }
  const text =
    pad(date.getUTCFullYear(), 4) +
    pad(date.getUTCMonth() + 1, 2) +
    pad(date.getUTCDate(), 2) +
    pad(date.getUTCHours(), 2) +
    pad(date.getUTCMinutes(), 2) +
    pad(date.getUTCSeconds(), 2) +
    (date.getUTCMilliseconds() !== 0 ? `.${pad(date.getUTCMilliseconds(), 3)}` : '') +
    'Z';
  return tlv(TAG.GENERALIZEDTIME, Buffer.from(text, 'ascii'));
}

// ---------------------------------------------------------------------------------------------
// Reader

/** A TLV's header: its tag byte, the header's size and the content's length. */
export interface DerHeader {
  tag: number;
  headerBytes: number;
  length: number;
}

/**
 * Reads the header of the TLV at `offset` of `bytes`, strictly. Returns undefined when `bytes`
 * ends inside the header (a caller reading a file in pieces then reads more). The content length
 * is not checked against anything here: the caller knows how many bytes its value has left.
 */
export function readHeader(bytes: Buffer, offset: number, where: string): DerHeader | undefined {
  if (offset >= bytes.length) return undefined;
  const tag = bytes[offset]!;
  if ((tag & 0x1f) === 0x1f) throw new RoburDecodeError(`robur DER: ${where}: high tag number form (tag byte 0x${tag.toString(16)}) at byte ${offset}`);
  if (offset + 1 >= bytes.length) return undefined;
  const first = bytes[offset + 1]!;
  if (first < 0x80) return { tag, headerBytes: 2, length: first };
  if (first === 0x80) throw new RoburDecodeError(`robur DER: ${where}: indefinite length at byte ${offset + 1}`);
  const count = first & 0x7f;
  if (count > MAX_LENGTH_OCTETS) throw new RoburDecodeError(`robur DER: ${where}: length of ${count} octets at byte ${offset + 1} is too long`);
  if (offset + 2 + count > bytes.length) return undefined;
  if (bytes[offset + 2] === 0) throw new RoburDecodeError(`robur DER: ${where}: length with a leading zero octet at byte ${offset + 1}`);
  let length = 0;
  for (let i = 0; i < count; i++) length = length * 256 + bytes[offset + 2 + i]!;
  if (length < 0x80) throw new RoburDecodeError(`robur DER: ${where}: long-form length ${length} (< 128) at byte ${offset + 1}`);
  return { tag, headerBytes: 2 + count, length };
}

/** Names a tag byte for messages: `UTF8String`, `[3]`, `tag 0x2c`. */
export function tagName(tag: number): string {
  switch (tag) {
    case TAG.INTEGER:
      return 'INTEGER';
    case TAG.NULL:
      return 'NULL';
    case TAG.UTF8STRING:
      return 'UTF8String';
    case TAG.UTCTIME:
      return 'UTCTime';
    case TAG.GENERALIZEDTIME:
      return 'GeneralizedTime';
    case TAG.SEQUENCE:
      return 'SEQUENCE';
  }
  if ((tag & 0xe0) === 0xa0) return `[${tag & 0x1f}]`;
  if ((tag & 0xe0) === 0x80) return `primitive [${tag & 0x1f}]`;
  return `tag 0x${tag.toString(16).padStart(2, '0')}`;
}

/** Universal string/time tags that DER forbids in constructed form (0x20 set). */
const PRIMITIVE_ONLY = new Set<number>([TAG.UTF8STRING, TAG.UTCTIME, TAG.GENERALIZEDTIME, TAG.INTEGER, TAG.NULL]);

/** One TLV read from a buffer: its tag, its content, where it started. */
export interface DerValue {
  tag: number;
  content: Buffer;
  /** Where the TLV starts in the whole input. */
  offset: number;
  /** Where its content starts in the whole input. */
  contentOffset: number;
}

/**
 * Reads the values inside one constructed value (or the top level), in order. Offsets in
 * messages are from the start of the whole input, so a failure points at the byte.
 */
export class DerReader {
  private pos: number;

  /** @param base where `bytes[0]` sits in the whole input (for messages). */
  constructor(
    private readonly bytes: Buffer,
    private readonly depth = 0,
    private readonly base = 0,
  ) {
    this.pos = 0;
  }

  /** True when every byte has been read. */
  atEnd(): boolean {
    return this.pos >= this.bytes.length;
  }

  /** The next tag byte, without reading it; undefined at the end. */
  peekTag(): number | undefined {
    return this.atEnd() ? undefined : this.bytes[this.pos];
  }

  /** Reads the next TLV whatever its tag, checking its length against the bytes left. */
  next(what: string): DerValue {
    const offset = this.base + this.pos;
    if (this.atEnd()) throw new RoburDecodeError(`robur DER: ${what}: missing (input ends at byte ${offset})`);
    const header = readHeader(this.bytes, this.pos, what);
    if (header === undefined) throw new RoburDecodeError(`robur DER: ${what}: truncated header at byte ${offset}`);
    const left = this.bytes.length - this.pos - header.headerBytes;
    if (header.length > left) {
      throw new RoburDecodeError(`robur DER: ${what}: length ${header.length} at byte ${offset} exceeds the ${left} bytes left`);
    }
    if ((header.tag & 0x20) !== 0 && PRIMITIVE_ONLY.has(header.tag & ~0x20)) {
      throw new RoburDecodeError(`robur DER: ${what}: constructed ${tagName(header.tag & ~0x20)} at byte ${offset} (DER allows only primitive)`);
    }
    const start = this.pos + header.headerBytes;
    this.pos = start + header.length;
    return { tag: header.tag, content: this.bytes.subarray(start, start + header.length), offset, contentOffset: this.base + start };
  }

  /** Reads the next TLV, which must have `tag`; returns its content. */
  expect(tag: number, what: string): DerValue {
    const value = this.next(what);
    if (value.tag !== tag) {
      throw new RoburDecodeError(`robur DER: ${what}: expected ${tagName(tag)}, got ${tagName(value.tag)} at byte ${value.offset}`);
    }
    return value;
  }

  /** A reader of a constructed value's content (a SEQUENCE, an EXPLICIT tag). */
  enter(value: DerValue, what: string): DerReader {
    if (this.depth + 1 > MAX_DEPTH) throw new RoburDecodeError(`robur DER: ${what}: nested deeper than ${MAX_DEPTH} at byte ${value.offset}`);
    return new DerReader(value.content, this.depth + 1, value.contentOffset);
  }

  /** Reads a SEQUENCE and returns a reader of its elements. */
  sequence(what: string): DerReader {
    return this.enter(this.expect(TAG.SEQUENCE, what), what);
  }

  /** Reads `[n]` and returns a reader of what it wraps. */
  explicit(n: number, what: string): DerReader {
    return this.enter(this.expect(contextTag(n), what), what);
  }

  /** Reads a NULL. */
  null(what: string): void {
    const value = this.expect(TAG.NULL, what);
    if (value.content.length !== 0) throw new RoburDecodeError(`robur DER: ${what}: NULL with ${value.content.length} content bytes at byte ${value.offset}`);
  }

  /** Reads a UTF8String's bytes, unvalidated (builder does not validate them either). */
  utf8Bytes(what: string): Buffer {
    return this.expect(TAG.UTF8STRING, what).content;
  }

  /**
   * Reads a UTF8String as text. Bytes that are not UTF-8 become U+FFFD rather than failing the
   * whole message: builder never validates them, and a console line is whatever a program printed.
   */
  utf8(what: string): string {
    return this.utf8Bytes(what).toString('utf8');
  }

  /** Reads a minimal INTEGER that fits a JS safe integer. */
  integer(what: string): number {
    const value = this.expect(TAG.INTEGER, what);
    const c = value.content;
    if (c.length === 0) throw new RoburDecodeError(`robur DER: ${what}: empty INTEGER at byte ${value.offset}`);
    if (c.length > 1 && ((c[0] === 0x00 && c[1]! < 0x80) || (c[0] === 0xff && c[1]! >= 0x80))) {
      throw new RoburDecodeError(`robur DER: ${what}: non-minimal INTEGER at byte ${value.offset}`);
    }
    if (c.length > 8) throw new RoburDecodeError(`robur DER: ${what}: INTEGER of ${c.length} bytes at byte ${value.offset} is too large`);
    const n = BigInt.asIntN(c.length * 8, BigInt(`0x${c.toString('hex')}`));
    if (n > BigInt(Number.MAX_SAFE_INTEGER) || n < BigInt(Number.MIN_SAFE_INTEGER)) {
      throw new RoburDecodeError(`robur DER: ${what}: INTEGER ${n} at byte ${value.offset} is beyond ${Number.MAX_SAFE_INTEGER}`);
    }
    return Number(n);
  }

  /** Reads a `Time`: GeneralizedTime or UTCTime, as ms since the epoch. */
  time(what: string): number {
    const value = this.next(what);
    if (value.tag === TAG.GENERALIZEDTIME) return parseTime(value.content, false, what, value.offset);
    if (value.tag === TAG.UTCTIME) return parseTime(value.content, true, what, value.offset);
    throw new RoburDecodeError(`robur DER: ${what}: expected a time, got ${tagName(value.tag)} at byte ${value.offset}`);
  }

  /** Fails unless every byte has been read. */
  end(what: string): void {
    if (!this.atEnd()) {
      throw new RoburDecodeError(`robur DER: ${what}: ${this.bytes.length - this.pos} unexpected trailing bytes at byte ${this.base + this.pos}`);
    }
  }
}

/** GeneralizedTime: `YYYYMMDDHH[MM[SS[.f{1,3}]]](Z|±hhmm)`; UTCTime: `YYMMDDHHMM[SS](Z|±hhmm)`. */
const GENERALIZED = /^(\d{4})(\d\d)(\d\d)(\d\d)(?:(\d\d)(?:(\d\d)(?:\.(\d{1,3}))?)?)?(?:(Z)|([+-])(\d\d)(\d\d))$/;
const UTC = /^(\d\d)(\d\d)(\d\d)(\d\d)(\d\d)(\d\d)?(?:(Z)|([+-])(\d\d)(\d\d))$/;

function parseTime(content: Buffer, utc: boolean, what: string, offset: number): number {
  const fail = (why: string) => new RoburDecodeError(`robur DER: ${what}: ${utc ? 'UTCTime' : 'GeneralizedTime'} ${why} at byte ${offset}`);
  const text = content.toString('latin1');
  let year: number, month: number, day: number, hour: number, minute: number, second: number, ms: number;
  let sign: string | undefined, offH: string | undefined, offM: string | undefined;
  if (utc) {
    const m = UTC.exec(text);
    if (!m) throw fail('malformed');
    const yy = Number(m[1]);
    year = yy >= 50 ? 1900 + yy : 2000 + yy;
    [month, day, hour, minute] = [Number(m[2]), Number(m[3]), Number(m[4]), Number(m[5])];
    second = m[6] === undefined ? 0 : Number(m[6]);
    ms = 0;
    [sign, offH, offM] = [m[8], m[9], m[10]];
  } else {
    const m = GENERALIZED.exec(text);
    if (!m) throw fail('malformed');
    [year, month, day, hour] = [Number(m[1]), Number(m[2]), Number(m[3]), Number(m[4])];
    minute = m[5] === undefined ? 0 : Number(m[5]);
    second = m[6] === undefined ? 0 : Number(m[6]);
    ms = m[7] === undefined ? 0 : Number(m[7].padEnd(3, '0'));
    [sign, offH, offM] = [m[9], m[10], m[11]];
  }
  const daysInMonth = new Date(Date.UTC(2000, month, 0)).getUTCDate();
  const leap = (year % 4 === 0 && year % 100 !== 0) || year % 400 === 0;
  const maxDay = month === 2 ? (leap ? 29 : 28) : daysInMonth;
  if (month < 1 || month > 12 || day < 1 || day > maxDay || hour > 23 || minute > 59 || second > 59) throw fail(`'${text}' is not a valid date`);
  let offsetMin = 0;
  if (sign !== undefined) {
    const h = Number(offH);
    const mm = Number(offM);
    if (h > 23 || mm > 59) throw fail(`'${text}' has an invalid offset`);
    offsetMin = (sign === '-' ? -1 : 1) * (h * 60 + mm);
  }
  const date = new Date(0);
  date.setUTCFullYear(year, month - 1, day);
  date.setUTCHours(hour, minute, second, ms);
  return date.getTime() - offsetMin * 60_000;
}

/** Anything a decode throws, as a RoburDecodeError (a bug in a reader must not escape as another class). */
export function asDecodeError(raw: unknown): RoburDecodeError {
  if (raw instanceof RoburDecodeError) return raw;
  const message = raw instanceof Error ? raw.message : String(raw);
  return new RoburDecodeError(`robur DER: ${message.split('\n')[0]}`);
}
