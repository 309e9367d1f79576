/**
 * The exec provider's command runner with real shell commands: answers are read even when the
 * command leaves a child holding its output, a hung command is killed whole at its timeout, and bad
 * answers give one-line errors that never repeat what the command printed.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import pino from 'pino';
import { ExecProvider, execOptionsSchema } from '../../src/server/latent/exec-provider.js';
import type { InstanceSpec } from '../../src/server/latent/provider.js';

const spec: InstanceSpec = {
  id: 'owner1/0b6f2c8e-0000-4000-8000-000000000001', owner: 'owner1', pool: 'vms', name: 'vms-000000000001', token: 'secret-token',
  server: 'http://127.0.0.1:9', platform: 'vm', labels: {}, once: true, values: {},
};

function provider(options: Record<string, unknown>): ExecProvider {
  const parsed = execOptionsSchema.parse({ check: 'echo "{\\"alive\\": true}"', stop: 'true', list: 'echo "[]"', ...options });
  return new ExecProvider(parsed, { pool: 'vms', baseDir: os.tmpdir(), log: pino({ level: 'silent' }) });
}

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

test('a start command that leaves a child holding its stdout is done when it exits', async (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'kiln-exec-'));
  const pidFile = path.join(dir, 'child.pid');
  t.after(() => {
    try {
      process.kill(Number(readFileSync(pidFile, 'utf8')), 'SIGKILL');
    } catch {
      // Never started, or gone.
    }
    rmSync(dir, { recursive: true, force: true });
  });
  const handle = await provider({ start: `sleep 600 & echo $! > ${pidFile}; echo '{"ref": "vm-1"}'` }).start(spec);
  assert.equal(handle.ref, 'vm-1');
  assert.ok(alive(Number(readFileSync(pidFile, 'utf8'))), 'answered while its background child still holds stdout');
});

test('a command that hangs is killed with its whole process group at its timeout', async (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'kiln-exec-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const pidFile = path.join(dir, 'child.pid');
  await assert.rejects(provider({ start: `sleep 60 & echo $! > ${pidFile}; wait`, timeout: '1s' }).start(spec), /^Error: sh took longer than 1s and was killed$/);
  const child = Number(readFileSync(pidFile, 'utf8'));
  // (Not our child: no event says it has gone. Polled, for up to 10 s.)
  for (let i = 0; i < 500 && alive(child); i += 1) await new Promise((resolve) => setTimeout(resolve, 20));
  assert.equal(alive(child), false, 'its background child was killed too');
});

test('the token travels on stdin, and a failing command says its last stderr line', async (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'kiln-exec-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const input = path.join(dir, 'input.json');
  await assert.rejects(provider({ start: `cat > ${input}; echo working >&2; echo "quota exceeded" >&2; exit 4` }).start(spec), /^Error: sh exited 4: quota exceeded$/);
  const given = JSON.parse(readFileSync(input, 'utf8')) as { env: Record<string, string>; command: string[] };
  assert.equal(given.env.KILN_WORKER_TOKEN, 'secret-token');
  assert.deepEqual(given.command.slice(0, 2), ['kiln', 'worker']);
});

test("answers that are not what the protocol says are one-line errors that do not repeat the command's output", async () => {
  // It echoes what it was given (the token too), then something that is not JSON.
  await assert.rejects(provider({ start: 'cat; echo garbage' }).start(spec), (err: Error) => {
    assert.match(err.message, /^the start command did not print JSON \(\d+ characters on stdout\)$/);
    assert.ok(!err.message.includes('secret-token'));
    return true;
  });
  await assert.rejects(provider({ start: 'echo "{\\"id\\": 1}"' }).start(spec), /^Error: the start command's answer is not as expected: ref: /);
  await assert.rejects(provider({ start: 'echo "{\\"ref\\": \\"x\\"}"', check: 'echo "{\\"alive\\": \\"yes\\"}"' }).check({ id: spec.id, ref: 'x', lastWords: () => '' }), /check command's answer is not as expected: alive/);
});

test('list keeps only instances whose id is exactly this owner\'s', async () => {
  const listed = JSON.stringify([
    { id: 'owner1/a', ref: 'r1', pool: 'vms', name: 'n1' },
    { id: 'owner10/b', ref: 'r2', pool: 'vms', name: 'n2' },
    { id: 'other/c', ref: 'r3', pool: 'vms', name: 'n3' },
  ]);
  const found = await provider({ start: 'true', list: `echo '${listed}'` }).listOwn('owner1');
  assert.deepEqual(found.map((f) => f.handle.ref), ['r1']);
});
