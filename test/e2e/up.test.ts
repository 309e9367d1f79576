/** `kiln up`, as `npm start` runs it: a server and one local worker in one process tree. */
import assert from 'node:assert/strict';
import { statSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { freePort, kiln, spawnKiln, tempDir } from '../helpers/processes.js';

test('kiln up serves a client in the same directory with no token setup, and stops cleanly', async (t) => {
  const dir = tempDir(t);
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const up = spawnKiln(t, ['up', '--listen', `127.0.0.1:${port}`], {}, dir);
  const banner = await up.waitFor(/Kiln is up at/);
  assert.match(banner, new RegExp(`Kiln is up at ${url}`));
  await up.waitFor(/KILN_TOKEN=/);
  assert.match(await up.waitFor(/dashboard:/), new RegExp(`^  dashboard: ${url}/ \\(sign in with the admin token\\)$`));
  const page = await fetch(`${url}/`);
  assert.equal(page.status, 200, 'the dashboard is served');
  assert.equal(statSync(path.join(dir, '.kiln', 'admin.token')).mode & 0o777, 0o600);

  // The client finds ./.kiln/admin.token on its own.
  const cli = (args: string[]) => kiln(undefined, ['--server', url, ...args], { cwd: dir });
  const scheduled = await cli(['schedule', 'hello', '--command', 'echo hello from kiln', '--period', 'never']);
  assert.equal(scheduled.code, 0, scheduled.stderr);
  // The local worker connects right after the banner; observe waits for the run either way.
  const runId = (await cli(['execute', 'hello'])).stdout.trim();
  const observed = await cli(['observe', runId]);
  assert.equal(observed.code, 0, observed.stderr);
  assert.match(observed.stdout, /^hello from kiln\n/);
  const workers = JSON.parse((await cli(['workers', '--json'])).stdout).workers;
  assert.equal(workers.length, 1);

  // Without the token file nearby, the client is refused with exit 3.
  const elsewhere = await kiln(undefined, ['--server', url, 'jobs'], { cwd: tempDir(t) });
  assert.equal(elsewhere.code, 3);
  assert.match(elsewhere.stderr, /^kiln: the server rejected the token: missing token/);

  await up.kill('SIGTERM');
  const { code } = await up.exited;
  assert.equal(code, 0, up.stderr.join('\n'));
});
