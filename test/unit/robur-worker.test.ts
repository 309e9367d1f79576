/** The pure parts of the robur listener: the script a robur worker gets, and --robur-listen's address. */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
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

test('--robur-listen takes HOST or HOST:PORT, the port 1234 by default', () => {
  assert.deepEqual(parseRoburListen('127.0.0.1'), { host: '127.0.0.1', port: 1234 });
  assert.deepEqual(parseRoburListen('0.0.0.0:4321'), { host: '0.0.0.0', port: 4321 });
  assert.deepEqual(parseRoburListen('[::1]'), { host: '::1', port: 1234 });
  assert.deepEqual(parseRoburListen('[::1]:99'), { host: '::1', port: 99 });
  assert.throws(() => parseRoburListen('host:port'), { code: 'KILN_ERR_USAGE' });
});
