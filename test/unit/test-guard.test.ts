/**
 * Every test file runs with a deadline and leaves no process: the npm scripts that run tests load
 * test/helpers/guard.ts into each file's process, and a file that leaves a process running fails.
 * A missing requirement skips with its reason, or fails under KILN_TEST_REQUIRE_ALL=1.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const GUARD = './test/helpers/guard.ts';

test('every npm script that runs node --test loads the guard and sets a file deadline', () => {
  const { scripts } = JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { scripts: Record<string, string> };
  const running = Object.entries(scripts).filter(([, command]) => /\bnode\b.*\s--test(\s|=|$)/.test(command));
  assert.ok(running.length >= 3, 'unit, integration and e2e at least');
  for (const [name, command] of running) {
    assert.ok(command.includes(`--import ${GUARD}`), `npm run ${name} must load ${GUARD}: ${command}`);
    assert.match(command, /\bKILN_TEST_FILE_DEADLINE=\d+ /, `npm run ${name} sets its files' deadline`);
  }
});

/** Runs `source` as a test file the way the npm scripts do; resolves with its output and exit code. */
function runTestFile(source: string, env: Record<string, string>): Promise<{ code: number; output: string }> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'kiln-guard-'));
  const file = path.join(dir, 'probe.test.ts');
  writeFileSync(file, source);
  // Not this file's runner context: the probe is a run of its own.
  const { NODE_TEST_CONTEXT: _, ...inherited } = process.env;
  return new Promise((resolve) => {
    execFile(process.execPath, ['--import', 'tsx', '--import', GUARD, '--test', '--test-reporter=tap', file], { cwd: ROOT, env: { ...inherited, ...env } }, (error, stdout, stderr) => {
      rmSync(dir, { recursive: true, force: true });
      resolve({ code: error ? Number(error.code ?? 1) : 0, output: stdout + stderr });
    });
  });
}

test('a file that leaves a process running fails and the process is killed; one past its deadline is stopped', async () => {
  const marker = `${process.pid}${Date.now()}`;
  const leaky = await runTestFile(
    `import { spawn } from 'node:child_process';\nimport { test } from 'node:test';\n` +
      `test('leaks', () => { spawn('sleep', ['${marker}1'], { detached: true, stdio: 'ignore' }).unref(); });\n`,
    {},
  );
  assert.notEqual(leaky.code, 0, leaky.output);
  assert.match(leaky.output, new RegExp(`left 1 process\\(es\\) running \\(killed now\\): \\d+ sleep ${marker}1`));
  const slow = await runTestFile(
    `import { spawn } from 'node:child_process';\nimport { test } from 'node:test';\n` +
      `test('hangs', async () => { spawn('sleep', ['${marker}2'], { stdio: 'ignore' }); await new Promise((resolve) => setTimeout(resolve, 600_000)); });\n`,
    { KILN_TEST_FILE_DEADLINE: '1' },
  );
  assert.notEqual(slow.code, 0);
  assert.match(slow.output, new RegExp(`passed its deadline of 1 s .*killed 1 process\\(es\\) it started: \\d+ sleep ${marker}2`));
});

test('a missing requirement skips with its reason, and fails under KILN_TEST_REQUIRE_ALL=1', async () => {
  const source =
    `import { test } from 'node:test';\nimport { needs } from '${path.join(ROOT, 'test/helpers/requirements.ts')}';\n` +
    `test('uses it', { skip: needs('kiln-no-such-program') }, () => {});\n`;
  const skipped = await runTestFile(source, { KILN_TEST_REQUIRE_ALL: '' });
  assert.equal(skipped.code, 0, skipped.output);
  assert.match(skipped.output, /# SKIP needs kiln-no-such-program on PATH/);
  const required = await runTestFile(source, { KILN_TEST_REQUIRE_ALL: '1' });
  assert.notEqual(required.code, 0, required.output);
  assert.match(required.output, /not ok \d+ - requirement missing: needs kiln-no-such-program on PATH/);
  assert.match(required.output, /KILN_TEST_REQUIRE_ALL=1 makes a missing requirement a failure/);
});
