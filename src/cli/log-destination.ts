/** Where the daemons' log lines go: a descriptor, written so that a failed write is never fatal. */
import { writeSync } from 'node:fs';

/** How long one log line may wait for a full pipe to drain (ms). */
const EAGAIN_WAIT_MS = 1000;
/** Something to Atomics.wait on: a synchronous pause without a busy loop. */
const PAUSE = new Int32Array(new SharedArrayBuffer(4));

/**
 * Log lines written straight to a descriptor, where a failed write is never fatal: a full disk
 * (ENOSPC), a closed pipe (EPIPE) or a hung-up terminal (EIO) loses that line, not the server
 * (pino's own destination emits 'error', which with no listener ends the process). Lost lines are
 * counted, and the count is written as a line of its own once writing works again.
 */
export class SafeLogDestination {
  /** Lines lost since the last successful write. */
  private dropped = 0;
  /** Why the first of them was lost (an errno code). */
  private firstError: string | undefined;
  /** A line was cut short by a failure: the next write starts a new line. */
  private partial = false;
  /** Lines lost in the life of the process. */
  droppedTotal = 0;

  constructor(private readonly fd: number) {}

  write(line: string): void {
    if (this.dropped > 0) {
      const note = { level: 40, time: Date.now(), pid: process.pid, dropped: this.dropped, error: this.firstError, msg: 'log lines were lost: the log could not be written' };
      if (!this.put(JSON.stringify(note) + '\n')) return;
      this.dropped = 0;
      this.firstError = undefined;
    }
    this.put(line);
  }

  /**
   * Writes all of `text`, or counts it lost. A full pipe (EAGAIN: Node makes stdio pipes
   * non-blocking) is waited for up to EAGAIN_WAIT_MS, and not at all while lines are being lost:
   * a reader that stopped reading must not stall the server on every line.
   */
  private put(text: string): boolean {
    let buffer = Buffer.from(this.partial ? '\n' + text : text);
    const length = buffer.length;
    let waited = 0;
    for (;;) {
      try {
        while (buffer.length > 0) buffer = buffer.subarray(writeSync(this.fd, buffer));
        this.partial = false;
        return true;
      } catch (raw) {
        const code = (raw as NodeJS.ErrnoException).code ?? String(raw);
        if (code === 'EAGAIN' && this.dropped === 0 && waited < EAGAIN_WAIT_MS) {
          Atomics.wait(PAUSE, 0, 0, 5);
          waited += 5;
          continue;
        }
        if (buffer.length < length) this.partial = true;
        this.dropped += 1;
        this.droppedTotal += 1;
        this.firstError ??= code;
        return false;
      }
    }
  }
}

