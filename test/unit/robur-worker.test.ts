/** The pure parts of the robur listener: the script a robur worker gets, and --robur-listen's address. */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { parseRoburListen } from '../../src/cli/commands/daemons.js';
import { roburScriptOf } from '../../src/server/robur/robur-worker.js';

test('the env is exported at the top of the script, after a #! line, and the shell reads it back as given', () => {
  assert.deepEqual(roburScriptOf('echo hi\n', {}), { script: 'echo hi\n', skipped: [] });
  const env = { A: "it's", B: '$HOME `x` "q"\nnext', 'not-a-name': 'v' };
  const { script, skipped } = roburScriptOf('#!/bin/sh\nprintf "%s|%s" "$A" "$B"\n', env);
  assert.deepEqual(skipped, ['not-a-name']);
  assert.ok(script.startsWith("#!/bin/sh\nexport A='it'\\''s'\n"), script);
  assert.equal(execFileSync('/bin/sh', ['-c', script]).toString(), `it's|${env.B}`);
  assert.equal(roburScriptOf('#!/bin/sh', { A: '1' }).script, "#!/bin/sh\nexport A='1'\n");
  assert.equal(roburScriptOf('echo $A', { A: '1' }).script, "export A='1'\necho $A");
});

test('a #! naming another interpreter gets a shell script that runs it with the env, written to a dot-file (never an artifact)', (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'kiln-robur-script-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  // As builder-worker runs it: script.sh in the work dir, the cwd, executed by its #! line.
  const run = (script: string) => {
    writeFileSync(path.join(dir, 'script.sh'), script, { mode: 0o700 });
    return execFileSync('./script.sh', { cwd: dir }).toString();
  };
  const env = { A: "it's", B: '$HOME `x` "q"\nnext' };
  // The script holds the here-document's first delimiter as a line of its own: another is taken.
  const perl = '#!/usr/bin/perl -w\nprint "$ENV{A}|$ENV{B}|";\nprint <<\'X\';\nKILN_SCRIPT_END\nX\n';
  assert.equal(run(roburScriptOf(perl, env).script), `it's|${env.B}|KILN_SCRIPT_END\n`);
  assert.deepEqual(readdirSync(dir).filter((f) => !f.startsWith('.')), ['script.sh'], 'nothing builder-worker would send as an artifact');
  assert.equal(readFileSync(path.join(dir, '.kiln-script'), 'utf8'), perl, 'the job\'s script, byte for byte');
  // Through env too; no trailing newline.
  assert.equal(run(roburScriptOf('#!/usr/bin/env -S perl -w\nprint $ENV{A}', { A: 'via env' }).script), 'via env');
  // Shells, however named, get the exports inline.
  for (const shebang of ['#!/bin/sh -e', '#!/usr/bin/env bash', '#!/bin/dash', '#!/usr/bin/env -S bash -e']) {
    assert.ok(roburScriptOf(`${shebang}\necho "$A"\n`, { A: '1' }).script.startsWith(`${shebang}\nexport A='1'\n`), shebang);
  }
  assert.equal(run(roburScriptOf('#!/usr/bin/env bash\necho "$A"\n', { A: 'bash' }).script), 'bash\n');
  assert.deepEqual(roburScriptOf(perl, { 'not-a-name': 'v' }), { script: perl, skipped: ['not-a-name'] }, 'nothing to export: the script as it is');
});

test('--robur-listen takes HOST or HOST:PORT, the port 1234 by default', () => {
  assert.deepEqual(parseRoburListen('127.0.0.1'), { host: '127.0.0.1', port: 1234 });
  assert.deepEqual(parseRoburListen('0.0.0.0:4321'), { host: '0.0.0.0', port: 4321 });
  assert.deepEqual(parseRoburListen('[::1]'), { host: '::1', port: 1234 });
  assert.deepEqual(parseRoburListen('[::1]:99'), { host: '::1', port: 99 });
  assert.throws(() => parseRoburListen('host:port'), { code: 'KILN_ERR_USAGE' });
});
