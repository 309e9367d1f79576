/**
 * A run's console lines kept on disk by the worker until the server has the run's result, so a
 * worker that loses its server keeps its job running and later resends whatever the server did
 * not store. Memory stays bounded: lines go to the file as they come and are read back in pages.
 */
import { createReadStream, createWriteStream, mkdirSync, rmSync, type WriteStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import path from 'node:path';
import { createInterface } from 'node:readline';
import type { ConsoleLine } from '../protocol/index.js';

/** Lines of one run's attempt, appended to `<dir>/<key>.ndjson`. */
export class OutputSpool {
  private stream: WriteStream | undefined;
  private readonly file: string;
  /** The seq of the last line appended, or -1. */
  lastSeq = -1;
  /** Set once a write failed: the spool can no longer keep the run's output. */
  failure: Error | undefined;
  /** Set by remove(): later lines are not kept. */
  private removed = false;

  constructor(
    dir: string,
    key: string,
    /** Called once, on the first write that fails. */
    private readonly onFailure: (err: Error) => void,
  ) {
    this.file = path.join(dir, `${key}.ndjson`);
  }

  /** Appends a line (the file is created on the first). */
  append(line: ConsoleLine): void {
    if (this.failure || this.removed) return;
    if (!this.stream) {
      try {
        mkdirSync(path.dirname(this.file), { recursive: true });
        this.stream = createWriteStream(this.file, { flags: 'a' });
        this.stream.on('error', (err) => this.fail(err));
      } catch (raw) {
        this.fail(raw as Error);
        return;
      }
    }
    this.lastSeq = line.seq;
    this.stream.write(JSON.stringify(line) + '\n');
  }

  private fail(err: Error): void {
    if (this.failure) return;
    this.failure = err;
    this.onFailure(err);
  }

  /** Resolves once every appended line is in the file. */
  private settled(): Promise<void> {
    const stream = this.stream;
    if (!stream || this.failure) return Promise.resolve();
    return new Promise((resolve) => stream.write('', () => resolve()));
  }

  /** The lines after `afterSeq`, in pages of at most `pageSize`. */
  async *readAfter(afterSeq: number, pageSize: number): AsyncGenerator<ConsoleLine[]> {
    await this.settled();
    if (!this.stream) return;
    // Only what was complete when we looked: lines appended meanwhile are read on the next call.
    const { size } = await stat(this.file);
    if (size === 0) return;
    let page: ConsoleLine[] = [];
    for await (const text of createInterface({ input: createReadStream(this.file, { end: size - 1 }) })) {
      if (text === '') continue;
      const line = JSON.parse(text) as ConsoleLine;
      if (line.seq <= afterSeq) continue;
      page.push(line);
      if (page.length >= pageSize) {
        yield page;
        page = [];
      }
    }
    if (page.length > 0) yield page;
  }

  /** Closes and deletes the file. */
  remove(): void {
    this.removed = true;
    this.stream?.destroy();
    rmSync(this.file, { force: true });
  }
}
