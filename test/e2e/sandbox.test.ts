/**
 * `kiln worker --sandbox bwrap` with real bubblewrap: what a job can and cannot touch, exact results
 * for signals and timeouts with no process left behind, resource limits, and clear refusals.
 */
import assert from 'node:assert/strict';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { followRun, kiln, spawnKiln, startServer, startWorker, tempDir } from '../helpers/processes.js';
import { needs } from '../helpers/requirements.js';
import { nodeBinds, noneLeft, processesWith } from '../helpers/sandbox-jobs.js';

const never = ['--platform', 'testos', '--period', 'never'];

const bwrap = needs('bwrap');

test('a bwrap job writes only its work dir and /tmp, sees no token, no spool, no host /tmp; --network none cuts it off', { skip: bwrap }, async (t) => {
  const server = await startServer(t);
  const spool = tempDir(t);
  const hostMarker = path.join(tempDir(t), 'host-file');
  writeFileSync(hostMarker, '');
  const otherWorker = tempDir(t);
  writeFileSync(path.join(otherWorker, 'secret'), 'other runs');
  const worker = await startWorker(t, server, ['--platform', 'testos', '--sandbox', 'bwrap', '--network', 'none', '--spool-dir', spool, '--token', server.workerToken, '--hide', otherWorker, ...nodeBinds()]);
  const port = new URL(server.url).port;
  const probe = `require('net').connect(${port}, '127.0.0.1').on('connect', () => { console.log('net: connected'); process.exit(0); }).on('error', (e) => console.log('net: ' + e.code))`;
  const script = [
    'touch /etc/kiln-escape 2>/dev/null && echo "etc: written" || echo "etc: denied"',
    `touch ${os.homedir()}/kiln-escape 2>/dev/null && echo "home: written" || echo "home: denied"`,
    'echo data > result.txt && echo "workdir: written"',
    'touch /tmp/scratch && echo "tmp: written"; echo "tmp: $(ls /tmp | tr "\\n" " ")"',
    `echo "spool: $(ls -A ${spool} | wc -l) entries"`,
    `echo "hidden: $(ls -A ${otherWorker} | wc -l) entries"`,
    'echo "env: $(env | cut -d= -f1 | sort | tr "\\n" " ")"',
    'echo "pids: $(ls /proc | grep -c "^[0-9]")"',
    'cat /proc/[0-9]*/cmdline /proc/[0-9]*/environ 2>/dev/null | tr "\\0" "\\n" > procs.txt; echo "proc: read"',
    `node -e "${probe}"`,
  ].join('\n');
  assert.equal((await kiln(server, ['schedule', 'probe', '--command', script, '--env', 'EXTRA=1', ...never])).code, 0);
  const runId = (await kiln(server, ['execute', 'probe'])).stdout.trim();
  const { lines, run } = await followRun(server, runId);
  assert.equal(run.status, 'succeeded', lines.join('\n'));
  assert.match(lines[0]!, /^kiln: sandbox bwrap \(network none at most\), limits by /);
  // A node under the home dir (one fetched into ~/.cache) is bound there, so the sandbox has a home
  // dir of its own, bwrap's mount-point parents: writable, and gone with the job. The host's stays as it was.
  const nodeUnderHome = !path.relative(os.homedir(), process.execPath).startsWith('..');
  for (const expected of ['etc: denied', ...(nodeUnderHome ? [] : ['home: denied']), 'workdir: written', 'tmp: written', 'spool: 0 entries', 'hidden: 0 entries', 'net: ECONNREFUSED']) {
    assert.ok(lines.includes(expected), `${expected} in:\n${lines.join('\n')}`);
  }
  assert.equal(existsSync(path.join(os.homedir(), 'kiln-escape')), false, 'the host\'s home dir is unchanged');
  // /tmp is private: the job's files, and only the mount points of its work dir and the hidden spool.
  const tmp = lines.find((l) => l.startsWith('tmp: ') && l !== 'tmp: written')!.slice(5).trim().split(' ');
  assert.ok(tmp.includes('scratch') && !tmp.includes(path.basename(path.dirname(hostMarker))), `private /tmp: ${tmp.join(' ')}`);
  assert.equal(lines.find((l) => l.startsWith('env: ')), 'env: EXTRA HOME KILN_ATTEMPT KILN_JOB KILN_PLATFORM KILN_RUN LANG PATH PWD ');
  assert.ok(Number(lines.find((l) => l.startsWith('pids: '))!.slice(6)) < 10, 'only the sandbox\'s own processes are visible');
  assert.equal(existsSync('/etc/kiln-escape'), false);
  const kept = JSON.parse((await kiln(server, ['artifacts', runId, '--json'])).stdout).artifacts.map((a: { path: string }) => a.path);
  assert.deepEqual(kept, ['procs.txt', 'result.txt'], 'artifacts come from the work dir as without a sandbox');
  const dir = tempDir(t);
  assert.equal((await kiln(server, ['artifacts', runId, '--download', dir])).code, 0);
  assert.ok(!readFileSync(path.join(dir, 'procs.txt'), 'utf8').includes(server.workerToken), 'the token is nowhere in /proc');
  assert.ok(!lines.join('\n').includes(server.workerToken));
  assert.match(worker.stderr.join("\n"), /"sandbox":"sandbox bwrap.*"msg":"jobs run in this sandbox"/);
});

test('with --network host a bwrap job reaches the host; a job asking for host on a none worker is refused', { skip: bwrap }, async (t) => {
  const server = await startServer(t);
  await startWorker(t, server, ['--platform', 'testos', '--sandbox', 'bwrap', '--network', 'host', '--name', 'open', ...nodeBinds()]);
  const probe = `require('net').connect(${new URL(server.url).port}, '127.0.0.1').on('connect', () => { console.log('net: connected'); process.exit(0); }).on('error', (e) => console.log('net: ' + e.code))`;
  assert.equal((await kiln(server, ['schedule', 'online', '--command', `node -e "${probe}"`, ...never])).code, 0);
  assert.equal((await kiln(server, ['schedule', 'offline', '--command', `node -e "${probe}"`, '--network', 'none', ...never])).code, 0);
  const online = await followRun(server, (await kiln(server, ['execute', 'online'])).stdout.trim());
  assert.ok(online.lines.includes('net: connected'), online.lines.join('\n'));
  const offline = await followRun(server, (await kiln(server, ['execute', 'offline'])).stdout.trim());
  assert.ok(offline.lines.includes('net: ECONNREFUSED'), `a job can always ask for less network: ${offline.run.resultText}\n${offline.lines.join('\n')}`);

  const closed = await startServer(t);
  await startWorker(t, closed, ['--platform', 'testos', '--sandbox', 'bwrap', '--network', 'none', ...nodeBinds()]);
  assert.equal((await kiln(closed, ['schedule', 'wants-net', '--command', 'true', '--network', 'host', ...never])).code, 0);
  const refused = await followRun(closed, (await kiln(closed, ['execute', 'wants-net'])).stdout.trim());
  assert.equal(refused.run.status, 'failed');
  assert.match(refused.run.resultText ?? '', /aborted: cannot start the job: the job asks for --network host, but this worker cuts every job off the network/);
});

test('--ro-bind and --bind add host paths to every bwrap job, read-only or writable', { skip: bwrap }, async (t) => {
  const server = await startServer(t);
  const shared = tempDir(t);
  const out = tempDir(t);
  writeFileSync(path.join(shared, 'hello.txt'), 'from the host\n');
  await startWorker(t, server, ['--platform', 'testos', '--sandbox', 'bwrap', '--ro-bind', `${shared}:/srv`, '--bind', `${out}:/media`]);
  const script = [
    'cat /srv/hello.txt',
    'touch /srv/new 2>/dev/null && echo "ro: written" || echo "ro: denied"',
    'echo result > /media/made-in-job && echo "rw: written"',
  ].join('\n');
  assert.equal((await kiln(server, ['schedule', 'binds', '--command', script, ...never])).code, 0);
  const { lines, run } = await followRun(server, (await kiln(server, ['execute', 'binds'])).stdout.trim());
  assert.equal(run.status, 'succeeded', lines.join('\n'));
  assert.deepEqual(lines.slice(1), ['from the host', 'ro: denied', 'rw: written']);
  assert.equal(readFileSync(path.join(out, 'made-in-job'), 'utf8'), 'result\n');
  assert.equal(existsSync(path.join(shared, 'new')), false);
});

test('SIGKILL, timeouts and cancels inside bwrap are reported exactly and leave no process, even one that setsid-ed', { skip: bwrap }, async (t) => {
  const server = await startServer(t);
  await startWorker(t, server, ['--platform', 'testos', '--sandbox', 'bwrap', '--kill-grace', '300ms']);
  assert.equal((await kiln(server, ['schedule', 'killed', '--command', 'echo going; kill -KILL $$', ...never])).code, 0);
  assert.equal((await followRun(server, (await kiln(server, ['execute', 'killed'])).stdout.trim())).run.resultText, 'signalled SIGKILL');
  assert.equal((await kiln(server, ['schedule', 'three', '--command', 'exit 3', ...never])).code, 0);
  assert.equal((await followRun(server, (await kiln(server, ['execute', 'three'])).stdout.trim())).run.resultText, 'exited 3');

  const script = 'sleep 3101 & setsid sleep 3102 & trap "" TERM; echo started; wait';
  assert.equal((await kiln(server, ['schedule', 'slow', '--command', script, '--timeout', '2s', ...never])).code, 0);
  const slow = await followRun(server, (await kiln(server, ['execute', 'slow'])).stdout.trim());
  assert.equal(slow.run.status, 'timed-out', slow.lines.join('\n'));
  await noneLeft('sleep 310');

  assert.equal((await kiln(server, ['schedule', 'cancelled', '--command', 'setsid sleep 3201 & sleep 3202 & echo started; wait', ...never])).code, 0);
  const runId = (await kiln(server, ['execute', 'cancelled'])).stdout.trim();
  const observing = followRun(server, runId);
  while (processesWith('sleep 3201').length === 0) await new Promise((resolve) => setTimeout(resolve, 50));
  assert.equal((await kiln(server, ['cancel', runId])).code, 0);
  assert.equal((await observing).run.status, 'cancelled');
  await noneLeft('sleep 320');
});

test('a worker killed with SIGKILL takes its bwrap job with it (--die-with-parent)', { skip: bwrap }, async (t) => {
  const server = await startServer(t);
  const worker = await startWorker(t, server, ['--platform', 'testos', '--sandbox', 'bwrap']);
  assert.equal((await kiln(server, ['schedule', 'orphan', '--command', 'sleep 3301 & setsid sleep 3302 & wait', ...never])).code, 0);
  await kiln(server, ['execute', 'orphan']);
  while (processesWith('sleep 3302').length === 0) await new Promise((resolve) => setTimeout(resolve, 50));
  await worker.kill('SIGKILL');
  await noneLeft('sleep 330');
});

// --pids and --memory against a fork bomb and a memory hog: test/e2e/sandbox-attacks.test.ts.

test('--sandbox bwrap refuses to start without bubblewrap, and bad sandbox options are usage errors', async (t) => {
  const server = await startServer(t);
  const cases: [string[], Record<string, string>, RegExp][] = [
    [['--sandbox', 'bwrap'], { PATH: '/nonexistent' }, /bubblewrap is not installed .*apt-get install bubblewrap/],
    [['--sandbox', 'docker'], {}, /bad --sandbox 'docker': use none or bwrap/],
    [['--platform', ''], {}, /bad --platform '': use letters, digits, dot, dash and underscore/],
    [['--network', 'none'], {}, /--network none, --bind, --ro-bind and --hide need --sandbox bwrap/],
    [['--sandbox', 'bwrap', '--bind', '/does/not/exist'], {}, /bad --bind '\/does\/not\/exist': \/does\/not\/exist does not exist/],
    [['--sandbox', 'bwrap', '--ro-bind', '/tmp:/usr/no/such/dir'], {}, /bad --ro-bind '\/tmp:\/usr\/no\/such\/dir': the mount point \/usr\/no\/such\/dir is in a read-only system dir and must exist on this host/],
  ];
  // The worker checks bubblewrap before it reads binds: without it, those two say it is missing.
  for (const [args, env, message] of bwrap ? cases.slice(0, 4) : cases) {
    const worker = spawnKiln(t, ['worker', '--server', server.url, '--platform', 'testos', ...args], { KILN_WORKER_TOKEN: server.workerToken, ...env });
    assert.equal((await worker.exited).code, 2, args.join(' '));
    assert.match(worker.stderr.join('\n'), message);
  }
});
