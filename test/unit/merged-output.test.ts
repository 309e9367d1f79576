/** The job output channel without a wrapper shell: stdout and stderr as one ordered, blocking socket, one per job. */
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { promisify } from 'node:util';
import type { Readable } from 'node:stream';
import { test } from 'node:test';
import { openMergedOutput, spareMergedOutput, takeMergedOutput } from '../../src/worker/sandbox/merged-output.js';

async function readAll(stream: Readable): Promise<string> {
  let text = '';
  for await (const chunk of stream) text += String(chunk);
  return text;
}

/** Runs `script` with the channel as its stdout and stderr; resolves with what the worker read. */
async function runOnChannel(script: string, open = openMergedOutput): Promise<string> {
  const { writer, reader } = await open();
  const child = spawn('/bin/sh', ['-c', script], { stdio: ['ignore', writer, writer] });
  writer.destroy();
  const [text] = await Promise.all([readAll(reader), new Promise((resolve) => child.once('exit', resolve))]);
  return text;
}

test('stdout and stderr arrive in the order written, and each job reads only its own channel', async () => {
  const texts = await Promise.all(Array.from({ length: 6 }, (_, i) => runOnChannel(`echo out-${i}; echo err-${i} >&2; printf 'a-'; echo b-${i} >&2`)));
  assert.deepEqual(texts, Array.from({ length: 6 }, (_, i) => `out-${i}\nerr-${i}\na-b-${i}\n`));
});

test('the job sees sockets in blocking mode on fd 1 and 2 (as with a pipe) and /dev/null on stdin', async () => {
  const text = await runOnChannel('[ -S /dev/stdout ] && [ -S /dev/stderr ] && echo sockets; grep ^flags /proc/self/fdinfo/1; grep ^flags /proc/self/fdinfo/2 >&2; readlink /proc/self/fd/0');
  const [sockets, out, err, stdin] = text.trim().split('\n');
  assert.equal(sockets, 'sockets');
  for (const flags of [out, err]) {
    const value = parseInt(flags!.split(/\s+/)[1]!, 8);
    assert.equal(value & 0o4000, 0, `O_NONBLOCK is clear: ${flags}`);
  }
  assert.equal(stdin, '/dev/null');
});

test('the channel ends when the last holder closes it, not when the job\'s main process exits', async () => {
  const text = await runOnChannel('(sleep 0.3; echo late) & echo early');
  assert.equal(text, 'early\nlate\n');
});

test('the next channel is opened ahead: the job after this one takes it ready-made, and it carries that job\'s output', async () => {
  const first = await takeMergedOutput();
  const ahead = spareMergedOutput();
  assert.ok(ahead, 'a spare is being opened once one is taken');
  const ready = await ahead;
  first.writer.destroy();
  first.reader.destroy();
  const next = await takeMergedOutput();
  assert.equal(next.writer, ready.writer);
  assert.equal(next.reader, ready.reader);
  next.writer.destroy();
  next.reader.destroy();
  assert.equal(await runOnChannel('echo taken; echo ahead >&2', takeMergedOutput), 'taken\nahead\n');
});

test('a channel opened ahead does not keep the worker process alive', { timeout: 60_000 }, async () => {
  const script = `import { takeMergedOutput } from ${JSON.stringify(new URL('../../src/worker/sandbox/merged-output.ts', import.meta.url).href)};
const channel = await takeMergedOutput();
channel.writer.destroy();
channel.reader.destroy();
console.log('taken');`;
  // Exits by itself once its work is done, with the spare still open (the test times out if not).
  const { stdout } = await promisify(execFile)(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script]);
  assert.equal(stdout, 'taken\n');
});
