/**
 * A run's console lines kept on disk by the worker until the server has the run's result, so a
 * worker that loses its server keeps its job running and later resends whatever the server did
 * not store. Memory stays bounded: lines go to the file as they come and are read back in pages.
 */
import { constants, createReadStream, createWriteStream, mkdirSync, mkdtempSync, openSync, rmSync, type WriteStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { ConsoleLine } from '../protocol/index.js';

/**
 * Makes the worker's own spool dir, `TMPDIR/kiln-spool-NAME-XXXXXX`, mode 0700: a fresh
 * unpredictable name that no other local user can have made first, or read. The caller removes
 * it when the worker exits (the spool only matters while this process runs its jobs).
 */
export function makeSpoolDir(name: string): string {
  return mkdtempSync(path.join(os.tmpdir(), `kiln-spool-${name.replace(/[^A-Za-z0-9._-]/g, '_')}-`));
}

/**
 * How a spool file is opened: created 0600, and never through a symbolic link someone else put
 * where the file goes (a `--spool-dir` may be a shared dir).
 */
const SPOOL_FILE_FLAGS = constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC | constants.O_NOFOLLOW;

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
        mkdirSync(path.dirname(this.file), { recursive: true, mode: 0o700 });
        this.stream = createWriteStream(this.file, { fd: openSync(this.file, SPOOL_FILE_FLAGS, 0o600) });
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
    // Read back only after a reconnect: readline is not loaded by a worker that never needs it.
    const { createInterface } = await import('node:readline');
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

  /** Closes and deletes the file (a run that printed nothing never made one). */
  remove(): void {
    this.removed = true;
    if (!this.stream) return;
    this.stream.destroy();
    rmSync(this.file, { force: true });
  }
}
