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
    if (this.partial !== '') this.emit(this.partial);
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
    while (rest.length > MAX_LINE_CHARS) {
      this.emit(rest.slice(0, MAX_LINE_CHARS));
      rest = rest.slice(MAX_LINE_CHARS);
    }
    this.partial = rest;
  }

  private emitCapped(line: string): void {
    for (let start = 0; start < line.length; start += MAX_LINE_CHARS) this.emit(line.slice(start, start + MAX_LINE_CHARS));
    if (line.length === 0) this.emit('');
  }
}
