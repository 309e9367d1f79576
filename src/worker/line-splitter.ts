/**
 * Cuts a byte stream into lines: UTF-8 decoded (bad bytes become U+FFFD), `\n` or `\r\n`
 * terminated, and no line longer than a cap, so a job printing without newlines cannot grow the
 * worker's memory.
 */
import { StringDecoder } from 'node:string_decoder';

/** Longest line kept whole; longer ones are cut into pieces of this size. */
export const MAX_LINE_CHARS = 16 * 1024;

/** Feeds chunks in, calls `emit` with each complete line. */
export class LineSplitter {
  private readonly decoder = new StringDecoder('utf8');
  private partial = '';

  constructor(private readonly emit: (line: string) => void) {}

  push(chunk: Buffer): void {
    this.take(this.decoder.write(chunk));
  }

  /** Emits what is left (a last line without newline). */
  end(): void {
    this.take(this.decoder.end());
    if (this.partial !== '') this.emitCapped(this.partial.endsWith('\r') ? this.partial.slice(0, -1) : this.partial);
    this.partial = '';
  }

  private take(text: string): void {
    const buffered = this.partial + text;
    let start = 0;
    let newline: number;
    while ((newline = buffered.indexOf('\n', start)) !== -1) {
      const line = buffered.slice(start, newline);
      this.emitCapped(line.endsWith('\r') ? line.slice(0, -1) : line);
      start = newline + 1;
    }
    let rest = buffered.slice(start);
    // A trailing \r may be half of a \r\n split across chunks: it does not count towards the cap.
    while (rest.length - (rest.endsWith('\r') ? 1 : 0) > MAX_LINE_CHARS) {
      const cut = cutPoint(rest);
      this.emit(rest.slice(0, cut));
      rest = rest.slice(cut);
    }
    this.partial = rest;
  }

  private emitCapped(line: string): void {
    let rest = line;
    while (rest.length > MAX_LINE_CHARS) {
      const cut = cutPoint(rest);
      this.emit(rest.slice(0, cut));
      rest = rest.slice(cut);
    }
    this.emit(rest);
  }
}

/** Where to cut an over-long line: at the cap, but never between the two halves of a surrogate pair. */
function cutPoint(text: string): number {
  const last = text.charCodeAt(MAX_LINE_CHARS - 1);
  return last >= 0xd800 && last <= 0xdbff ? MAX_LINE_CHARS - 1 : MAX_LINE_CHARS;
}
