/** `kiln inspect`'s parts: builder-inspect's console format, and extracting files named by a blob without leaving the directory. */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { lstatSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { test, type TestContext } from 'node:test';
import { inspectConsole, ocamlQuoted, ptimeRfc3339 } from '../../src/cli/exec-report.js';
import { extractFile, planExtraction } from '../../src/cli/safe-extract.js';

function tempDir(t: TestContext): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'kiln-extract-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

test('the console as builder-inspect prints it: started at, `<ms>ms: "<OCaml-escaped>"` oldest first, the result, stopped at', () => {
  const started = Date.UTC(2026, 11, 6, 17, 0, 0, 250);
  assert.deepEqual(inspectConsole({
    job: { name: 'app', script: 'make\n', platform: 'debian-12' }, uuid: '00000000-0000-4000-8000-000000000000',
    console: [{ deltaNs: 1_999_999, line: 'one "two"' }, { deltaNs: 2_500_000_000, line: 'tab\there \x1b[31mred\\ é' }],
    started, finished: started + 3000, result: { kind: 'msg', message: 'timeout' },
  }), [
    'started at 2026-12-06T17:00:00-00:00',
    '1ms: "one \\"two\\""',
    '2500ms: "tab\\there \\027[31mred\\\\ \\195\\169"',
    'execution aborted: timeout',
    'stopped at 2026-12-06T17:00:03-00:00',
  ]);
  assert.equal(ocamlQuoted('\n\r\b\x00~'), '"\\n\\r\\b\\000~"');
  assert.equal(ptimeRfc3339(Date.UTC(1999, 0, 2, 3, 4, 5, 999)), '1999-01-02T03:04:05-00:00');
});

test('every path is checked before anything is written: relative, no `..`, no two files on one path, no file that another needs as a directory', () => {
  assert.deepEqual(planExtraction(['bin/app', './notes.txt', 'a//b/c']), ['bin/app', 'notes.txt', 'a/b/c']);
  for (const [paths, why] of [
    [['ok', '../x'], /may not contain '\.\.'/],
    [['/etc/passwd'], /must be relative/],
    [['a\\b'], /backslash/],
    [['a/./b', 'a/b'], /two artifacts have the path 'a\/b'/],
    [['bin', 'bin/app'], /artifact 'bin' is a file, and artifact 'bin\/app' needs it as a directory/],
    [['x\0y'], /NUL/],
  ] as const) {
    assert.throws(() => planExtraction(paths), (err: Error & { code?: string }) => err.code === 'KILN_ERR_UNSAFE_ARTIFACT_PATH' && why.test(err.message), paths.join(', '));
  }
});

test('extraction writes 0600 files in 0700 directories, replaces a symlink at a file\'s name without following it, and never walks through one', async (t) => {
  const dir = tempDir(t);
  const outside = tempDir(t);
  const written = await extractFile(dir, 'bin/app', Readable.from([Buffer.from('binary\0bytes')]));
  assert.deepEqual(written, { size: 12, sha256: createHash('sha256').update('binary\0bytes').digest('hex') });
  assert.equal(readFileSync(path.join(dir, 'bin/app'), 'latin1'), 'binary\0bytes');
  assert.equal(statSync(path.join(dir, 'bin/app')).mode & 0o777, 0o600);
  assert.equal(statSync(path.join(dir, 'bin')).mode & 0o777, 0o700);

  // A symlink where a file goes is replaced by the file; its target is untouched.
  writeFileSync(path.join(outside, 'victim'), 'keep');
  symlinkSync(path.join(outside, 'victim'), path.join(dir, 'notes.txt'));
  await extractFile(dir, 'notes.txt', Readable.from([Buffer.from('new')]));
  assert.equal(lstatSync(path.join(dir, 'notes.txt')).isSymbolicLink(), false);
  assert.equal(readFileSync(path.join(outside, 'victim'), 'utf8'), 'keep');

  // A symlinked directory on the way is refused; nothing lands outside.
  symlinkSync(outside, path.join(dir, 'lib'));
  await assert.rejects(extractFile(dir, 'lib/evil.so', Readable.from([Buffer.from('x')])), (err: Error & { code?: string }) => {
    assert.equal(err.code, 'KILN_ERR_UNSAFE_ARTIFACT_PATH');
    assert.match(err.message, /lib is a symlink: 'lib\/evil\.so' is not written through it/);
    return true;
  });
  mkdirSync(path.join(dir, 'plain'));
  writeFileSync(path.join(dir, 'plain', 'file'), '');
  await assert.rejects(extractFile(dir, 'plain/file/under', Readable.from([Buffer.from('x')])), /is not a directory/);
  assert.throws(() => statSync(path.join(outside, 'evil.so')));
});
