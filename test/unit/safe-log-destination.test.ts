/** The daemons' log destination: a log that cannot be written loses lines, never the process. */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { closeSync, constants, mkdtempSync, openSync, readSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { SafeLogDestination } from '../../src/cli/logger.js';

test('a full disk (ENOSPC) loses the lines and throws nothing', () => {
  const fd = openSync('/dev/full', 'w');
  try {
    const destination = new SafeLogDestination(fd);
    for (let i = 0; i < 100; i += 1) destination.write(`{"msg":"line ${i}"}\n`);
    assert.equal(destination.droppedTotal, 100);
  } finally {
    closeSync(fd);
  }
});

test('a pipe nobody reads loses lines after a bounded wait; once read again, the count of lost lines is logged first', (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'kiln-log-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const fifo = path.join(dir, 'log');
  execFileSync('mkfifo', [fifo]);
  const reader = openSync(fifo, constants.O_RDONLY | constants.O_NONBLOCK);
  const writer = openSync(fifo, constants.O_WRONLY | constants.O_NONBLOCK);
  t.after(() => {
    closeSync(writer);
    closeSync(reader);
  });
  const destination = new SafeLogDestination(writer);
  const line = `{"msg":"${'x'.repeat(1000)}"}\n`;
  // A pipe holds 64 KiB by default: 200 lines of 1 KB overflow it.
  for (let i = 0; i < 200; i += 1) destination.write(line);
  assert.ok(destination.droppedTotal > 0, 'lines were lost');
  const lost = destination.droppedTotal;

  const drain = () => {
    const chunks: Buffer[] = [];
    const buffer = Buffer.alloc(65536);
    for (;;) {
      try {
        const n = readSync(reader, buffer);
        if (n === 0) break;
        chunks.push(Buffer.from(buffer.subarray(0, n)));
      } catch (raw) {
        if ((raw as NodeJS.ErrnoException).code === 'EAGAIN') break;
        throw raw;
      }
    }
    return Buffer.concat(chunks).toString();
  };
  drain();
  destination.write('{"msg":"after"}\n');
  const lines = drain().split('\n').filter(Boolean);
  assert.equal(lines.length, 2, lines.join('\n'));
  const note = JSON.parse(lines[0]!);
  assert.equal(note.dropped, lost);
  assert.equal(note.error, 'EAGAIN');
  assert.equal(lines[1], '{"msg":"after"}');
});
