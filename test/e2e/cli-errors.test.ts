/** The CLI's errors: one clear line on stderr, SPEC.md's exit codes, and no change to the store. */
import assert from 'node:assert/strict';
import { writeFileSync, chmodSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { freePort, kiln, spawnKiln, startServer, tempDir } from '../helpers/processes.js';

test('bad requests fail with one line, the right exit code, and change nothing', async (t) => {
  const server = await startServer(t);
  const dir = tempDir(t);
  const unreadable = path.join(dir, 'secret.sh');
  writeFileSync(unreadable, 'echo hi\n');
  chmodSync(unreadable, 0o000);
  assert.equal((await kiln(server, ['schedule', 'build', '--command', 'echo hi', '--platform', 'testos', '--period', 'never'])).code, 0);
  const before = (await kiln(server, ['jobs', '--json'])).stdout;

  const cases: [string, string[], number, RegExp][] = [
    ['unknown job', ['execute', 'nope'], 1, /^kiln: no job named 'nope'$/],
    ['unknown job to modify', ['modify', 'nope', '--period', 'daily'], 1, /^kiln: no job named 'nope'$/],
    ['unknown job to unschedule', ['unschedule', 'nope'], 1, /^kiln: no job named 'nope'$/],
    ['duplicate name', ['schedule', 'build', '--command', 'echo again'], 1, /^kiln: a job named 'build' already exists/],
    ['unknown run', ['observe', '00000000'], 1, /^kiln: no run matches '00000000'$/],
    ['unknown run logs', ['logs', 'ffff'], 1, /^kiln: no run matches 'ffff'$/],
    ['bad period', ['schedule', 'x', '--command', 'true', '--period', 'fortnightly'], 2, /^kiln: unknown period 'fortnightly'/],
    ['bad timeout', ['schedule', 'x', '--command', 'true', '--timeout', 'soon'], 2, /^kiln: bad --timeout 'soon'/],
    ['env without =', ['schedule', 'x', '--command', 'true', '--env', 'FOO'], 2, /^kiln: --env 'FOO' must look like KEY=VALUE$/],
    ['missing script file', ['schedule', 'x', '--script', path.join(dir, 'missing.sh')], 2, /^kiln: cannot read script file .*missing\.sh.*ENOENT/],
    ['no script at all', ['schedule', 'x'], 2, /^kiln: give the job a --script FILE, a --command CMD or a --template NAME$/],
    ['bad cron', ['schedule', 'x', '--command', 'true', '--cron', '61 * * * *'], 2, /^kiln: bad cron expression '61 \* \* \* \*': .*minute/],
    ['cron with 4 fields', ['schedule', 'x', '--command', 'true', '--cron', '* * * *'], 2, /^kiln: cron expression '\* \* \* \*' has 4 fields/],
    ['bad zone', ['schedule', 'x', '--command', 'true', '--cron', '0 3 * * *', '--tz', 'Mars/Olympus'], 2, /^kiln: unknown time zone 'Mars\/Olympus'/],
    ['--tz without --cron', ['schedule', 'x', '--command', 'true', '--tz', 'UTC'], 2, /^kiln: --tz goes with --cron$/],
    ['every 0s', ['schedule', 'x', '--command', 'true', '--every', '0s'], 2, /^kiln: --every must be at least 1s$/],
    ['var without =', ['schedule', 'x', '--template', 'hello', '--var', 'VERSION'], 2, /^kiln: --var 'VERSION' must look like KEY=VALUE$/],
    ['template with a slash', ['schedule', 'x', '--template', '../etc/passwd'], 2, /^kiln: bad --template '..\/etc\/passwd'/],
    ['template with dots', ['schedule', 'x', '--template', 'a..b'], 2, /^kiln: bad --template 'a..b'/],
    ['bad overlap', ['schedule', 'x', '--command', 'true', '--overlap', 'sometimes'], 2, /Allowed choices are skip, queue, cancel-previous/],
    ['script and command', ['schedule', 'x', '--command', 'true', '--script', unreadable], 2, /cannot be used with/],
    ['bad job name', ['schedule', '../x', '--command', 'true'], 2, /^kiln: invalid job: name: job names use/],
    ['bad reschedule time', ['reschedule', 'build', 'tomorrow'], 2, /^kiln: 'tomorrow' is not an RFC 3339 time/],
    ['modify without changes', ['modify', 'build'], 2, /^kiln: nothing to change/],
    ['unknown command', ['frobnicate'], 2, /unknown command 'frobnicate'/],
    ['bad --limit', ['runs', '--limit', 'lots'], 2, /^kiln: bad --limit 'lots'/],
    ['bad --status', ['runs', '--status', 'happy'], 2, /Allowed choices are/],
    ['observe without a run', ['observe'], 2, /^kiln: give a RUN or --latest/],
  ];
  if (process.getuid?.() !== 0) {
    // root reads files whatever their mode, so this case only means something for other users.
    cases.push(['unreadable script', ['schedule', 'x', '--script', unreadable], 2, /^kiln: cannot read script file .*EACCES/]);
  }
  for (const [what, args, code, message] of cases) {
    const result = await kiln(server, args);
    assert.equal(result.code, code, `${what}: exit ${result.code}, stderr ${result.stderr}`);
    assert.match(result.stderr.split('\n')[0]!, message, what);
    assert.equal(result.stdout, '', `${what}: nothing on stdout`);
  }
  assert.equal((await kiln(server, ['jobs', '--json'])).stdout, before, 'the store did not change');
  assert.equal(JSON.parse((await kiln(server, ['runs', '--json'])).stdout).runs.length, 0);
});

test('an unreachable server or a wrong token exits 3 with one line', async (t) => {
  const server = await startServer(t);
  const nobody = `http://127.0.0.1:${await freePort()}`;
  const unreachable = await kiln({ url: nobody, adminToken: 'x' }, ['jobs']);
  assert.equal(unreachable.code, 3);
  assert.match(unreachable.stderr, new RegExp(`^kiln: cannot reach the Kiln server at ${nobody}: ECONNREFUSED\\n$`));

  const wrong = await kiln({ url: server.url, adminToken: 'not-the-token' }, ['jobs']);
  assert.equal(wrong.code, 3);
  assert.equal(wrong.stderr, 'kiln: the server rejected the token: invalid token\n');
  assert.doesNotMatch(server.stderr.join('\n'), /not-the-token/, 'tokens are never logged');
  assert.doesNotMatch(server.stderr.join('\n'), new RegExp(server.adminToken), 'tokens are never logged');

  // A worker with a wrong token stops with a clear message instead of retrying forever.
  const worker = spawnKiln(t, ['worker', '--server', server.url, '--token', 'nope']);
  const { code } = await worker.exited;
  assert.equal(code, 3);
  assert.match(worker.stderr.join('\n'), /rejected the worker token \(401\)/);
});

test('--json prints only JSON on stdout for every listing command', async (t) => {
  const server = await startServer(t);
  assert.equal((await kiln(server, ['schedule', 'build', '--command', 'echo hi', '--platform', 'testos', '--period', 'never'])).code, 0);
  for (const args of [['jobs'], ['runs'], ['info'], ['workers'], ['execute', 'build'], ['modify', 'build', '--timeout', '5m'], ['schedule', 'other', '--command', 'true', '--period', 'never']]) {
    const result = await kiln(server, ['--json', ...args]);
    assert.equal(result.code, 0, `${args[0]}: ${result.stderr}`);
    assert.doesNotThrow(() => JSON.parse(result.stdout), `${args[0]} prints JSON`);
  }
});

test('kiln server refuses an --advertise URL it cannot hand on (a comma would split the farm\'s server list), with one line, exit 2', async (t) => {
  const done = await kiln(undefined, ['server', '--listen', '127.0.0.1:0', '--data', tempDir(t), '--advertise', 'http://a.example,http://b.example']);
  assert.equal(done.code, 2);
  assert.equal(done.stderr, "kiln: bad --advertise 'http://a.example,http://b.example': give the URL this server is reached at, e.g. http://kiln-1.example.com:7420\n");
});
