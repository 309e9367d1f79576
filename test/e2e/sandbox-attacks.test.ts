/**
 * A job as an attacker, one test per attempt, each against a real server, a real `kiln worker
 * --sandbox bwrap` and real jobs: write the host, read a token, read another run's files, reach
 * loopback or a host socket under --network none, fork-bomb under --pids, exhaust memory under
 * --memory, leave a process behind. Each asserts the attempt fails; where the attempt got through
 * the sandbox as it was (the host's whole root, read-only), a control runs the same probe under
 * the former layout's view of those host paths to show the probe would have worked.
 */
import assert from 'node:assert/strict';
import { execFile, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { randomBytes, randomInt } from 'node:crypto';
import { promisify } from 'node:util';
import { test, type TestContext } from 'node:test';
import { followRun, kiln, KILN_BIN, spawnCommand, spawnKiln, startServer, startWorker, tempDir, type ServerProcess } from '../helpers/processes.js';
import { needs } from '../helpers/requirements.js';
import { systemRoot } from '../../src/worker/sandbox/bwrap-sandbox.js';
import { nodeBinds, nodeCommand, noneLeft, processesWith, someRunning } from '../helpers/sandbox-jobs.js';

const bwrap = needs('bwrap');
const never = ['--platform', 'testos', '--period', 'never'];

/**
 * A temp dir outside /tmp (the sandbox's /tmp was always private, so a secret there proves
 * nothing): under /var/tmp, where a server's data dir or a database socket could be.
 */
function hostDir(t: TestContext, parent = '/var/tmp'): string {
  const dir = mkdtempSync(path.join(parent, 'kiln-attack-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/**
 * The control: runs `argv` in a sandbox of the system dirs plus `hostPaths` (read-only), as the
 * former layout (`--ro-bind / /`) showed them among the rest of the host, to show the probe would
 * have worked there. Only these paths, not the whole root: a whole-root bind walks every mount of
 * the host (docker's, a CI runner's), and a CI run hung in this file once that control was in it.
 */
async function withHostPaths(hostPaths: string[], argv: string[]): Promise<string> {
  const binds = [...hostPaths, path.dirname(path.dirname(process.execPath))].flatMap((p) => ['--ro-bind', p, p]);
  // The binds after the tmpfs on /tmp, which would hide a node that lives under /tmp.
  const args = [...systemRoot(), '--dev', '/dev', '--proc', '/proc', '--tmpfs', '/tmp', ...binds, '--unshare-user', '--unshare-pid', '--unshare-net', '--die-with-parent', '--'];
  const { stdout } = await promisify(execFile)('bwrap', [...args, ...argv], { encoding: 'utf8', timeout: 30_000 }).catch((err: { stdout?: string }) => ({ stdout: err.stdout ?? '' }));
  return stdout;
}

/** A node script printing each descriptor above stdio with its fdinfo flags (octal). */
const DESCRIBE_DESCRIPTORS = `
  const fs = require('fs');
  const out = [];
  for (const fd of fs.readdirSync('/proc/self/fd').filter((fd) => Number(fd) > 2)) {
    try { out.push(fd + ' -> ' + fs.readlinkSync('/proc/self/fd/' + fd) + ' ' + /^flags:.*$/m.exec(fs.readFileSync('/proc/self/fdinfo/' + fd, 'utf8'))); } catch (e) { out.push(fd + ': ' + e.code); }
  }
  console.log(out.join('; ') || 'nothing above stdio');
`;

/** What process `pid` holds above stdio, with each descriptor's flags, for a failure's message. */
function describeDescriptors(pid: number): string {
  try {
    return readdirSync(`/proc/${pid}/fd`).filter((fd) => Number(fd) > 2).map((fd) => {
      try {
        return `${fd} -> ${readlinkSync(`/proc/${pid}/fd/${fd}`)} ${/^flags:.*$/m.exec(readFileSync(`/proc/${pid}/fdinfo/${fd}`, 'utf8'))?.[0]}`;
      } catch (err) {
        return `${fd}: ${(err as NodeJS.ErrnoException).code}`;
      }
    }).join('; ');
  } catch (err) {
    return `unreadable (${(err as NodeJS.ErrnoException).code})`;
  }
}

/**
 * Schedules `script` as job `name` (with extra flags), runs it once, and follows it to its end; a
 * probe that hangs ends timed-out (its console then says how far it got) unless flags say otherwise.
 */
async function runJob(server: ServerProcess, name: string, script: string, flags: string[] = []) {
  assert.equal((await kiln(server, ['schedule', name, '--command', script, '--timeout', '90s', ...flags, ...never])).code, 0);
  return followRun(server, (await kiln(server, ['execute', name])).stdout.trim());
}

test('attack: a job cannot write the host (/usr, /etc, /opt, the worker\'s cwd, the server\'s data dir)', { skip: bwrap }, async (t) => {
  const server = await startServer(t, { dataDir: hostDir(t) });
  const cwd = hostDir(t);
  const worker = spawnKiln(t, ['worker', '--server', server.url, '--platform', 'testos', '--sandbox', 'bwrap', ...nodeBinds()], { KILN_WORKER_TOKEN: server.workerToken }, cwd);
  await worker.waitFor(/connected to the server/);
  const name = `kiln-attack-${randomBytes(4).toString('hex')}`;
  const targets = ['/usr', '/etc', '/opt', '/bin', cwd, server.dataDir];
  const script = targets.map((dir) => `touch ${dir}/${name} 2>/dev/null && echo "${dir}: written" || echo "${dir}: denied"`).join('\n');
  const { lines, run } = await runJob(server, 'writer', script);
  assert.equal(run.status, 'succeeded', lines.join('\n'));
  assert.deepEqual(lines.slice(1), targets.map((dir) => `${dir}: denied`));
  for (const dir of targets) assert.equal(existsSync(path.join(dir, name)), false, `${dir} unchanged`);
  // Without a sandbox the job's user (the worker's) could write the last two: they are the
  // worker's and the server's own, and writable to them.
  for (const dir of [cwd, server.dataDir]) {
    writeFileSync(path.join(dir, name), '');
    rmSync(path.join(dir, name));
  }
});

test('attack: a job cannot read a token: not the server\'s data dir, not the worker\'s environment, files or descriptors', { skip: bwrap }, async (t) => {
  // Same user, same host: the worker could read the data dir itself.
  const server = await startServer(t, { dataDir: hostDir(t) });
  const tokenFile = path.join(hostDir(t), 'worker.token');
  writeFileSync(tokenFile, server.workerToken, { mode: 0o600 });
  // The worker inherits an open descriptor of the token file from the shell that starts it, as a
  // supervisor's leaked descriptor would be: jobs must not inherit it in turn. A high number: Node
  // itself marks the unbroken run of low descriptors from 0 close-on-exec at start (strace shows
  // F_SETFD on 0..N up to the first gap), so `3<file` is safe already and would prove nothing.
  const workerArgs = [process.execPath, KILN_BIN, 'worker', '--server', server.url, '--platform', 'testos', '--sandbox', 'bwrap', '--network', 'none', ...nodeBinds()];
  const handing = (argv: string[]) => ['-c', 'exec "$@" 200<"$KILN_TEST_HANDED"', 'bash', ...argv];
  const env = { KILN_WORKER_TOKEN: server.workerToken, KILN_TEST_HANDED: tokenFile };
  const worker = spawnCommand(t, 'bash', handing(workerArgs), { name: 'kiln worker', env });
  await worker.waitFor(/connected to the server/);
  // The worker closes what it inherited before it connects: the line is there by now. Were it not,
  // say what a process started the same way holds, so a failure shows whether the premise held.
  const closedLine = worker.stderr.find((line) => /closed descriptors inherited from the parent/.test(line));
  if (closedLine === undefined || !/"descriptors":\[[^\]]*\b200\b/.test(closedLine)) {
    const control = spawnSync('bash', handing([process.execPath, '-e', DESCRIBE_DESCRIPTORS]), { encoding: 'utf8', env: { ...process.env, ...env } });
    assert.fail(`the worker did not say it closed descriptor 200 (${closedLine ?? 'no line'}).\nA process started the same way holds: ${control.stdout}${control.stderr}\nThe worker now holds: ${describeDescriptors(worker.pid)}\nIt printed:\n${worker.stderr.join('\n')}`);
  }
  // The probe reads everything a token could be in and prints it all, for the test to search.
  const probe = `
    const fs = require('fs');
    const out = [];
    const tryRead = (what, file) => { try { out.push(what + ': ' + fs.readFileSync(file, 'utf8')); } catch (e) { out.push(what + ': ' + e.code); } };
    tryRead('admin.token', ${JSON.stringify(path.join(server.dataDir, 'admin.token'))});
    tryRead('worker.token', ${JSON.stringify(path.join(server.dataDir, 'worker.token'))});
    tryRead('token file', ${JSON.stringify(tokenFile)});
    for (const pid of fs.readdirSync('/proc').filter((e) => /^\\d+$/.test(e))) {
      tryRead('environ ' + pid, '/proc/' + pid + '/environ');
      tryRead('cmdline ' + pid, '/proc/' + pid + '/cmdline');
    }
    out.push('env: ' + JSON.stringify(process.env));
    // Descriptors open across exec (no O_CLOEXEC): what the job inherited, a token pipe say.
    for (const fd of fs.readdirSync('/proc/self/fd').filter((fd) => Number(fd) > 2)) {
      try {
        const flags = /^flags:\\s+([0-7]+)$/m.exec(fs.readFileSync('/proc/self/fdinfo/' + fd, 'utf8'));
        if (flags && (parseInt(flags[1], 8) & 0o2000000) === 0) out.push('fd ' + fd + ': ' + fs.readlinkSync('/proc/self/fd/' + fd));
      } catch {}
    }
    console.log(out.join('\\n').replace(/\\0/g, ' '));
  `;
  const { lines, run } = await runJob(server, 'thief', nodeCommand(probe));
  assert.equal(run.status, 'succeeded', lines.join('\n'));
  const said = lines.join('\n');
  assert.match(said, /^admin\.token: ENOENT$/m, said);
  assert.match(said, /^worker\.token: ENOENT$/m);
  assert.match(said, /^token file: ENOENT$/m);
  for (const token of [server.adminToken, server.workerToken]) assert.ok(!said.includes(token), `no token in what the job read:\n${said}`);
  // Beyond stdio the job inherits nothing: not the worker's own descriptors, and not what the
  // worker itself inherited (the token file above, a harness's pipe): the worker closed those.
  const inherited = lines.filter((l) => /^fd \d+: /.test(l));
  assert.deepEqual(inherited, [], `the job inherited descriptors:\n${said}`);
  // Control: where it saw the host (the former layout) the same user's job read the data dir, tokens and all.
  const former = await withHostPaths([server.dataDir, path.dirname(tokenFile)], ['cat', path.join(server.dataDir, 'admin.token'), tokenFile]);
  assert.ok(former.includes(server.adminToken) && former.includes(server.workerToken), `the former layout exposed them: ${former}`);
});

test('attack: a job cannot read the worker\'s --token-file, even where jobs see the host (/opt)', { skip: bwrap }, async (t) => {
  const server = await startServer(t);
  // An operator's choice of place that the job root shows read-only.
  const tokenFile = path.join(hostDir(t, '/opt'), 'worker.token');
  writeFileSync(tokenFile, server.workerToken + '\n', { mode: 0o600 });
  const worker = spawnKiln(t, ['worker', '--server', server.url, '--platform', 'testos', '--sandbox', 'bwrap', '--token-file', tokenFile]);
  await worker.waitFor(/connected to the server/);
  const { lines, run } = await runJob(server, 'file-thief', `cat ${tokenFile} && echo "read it" || echo "unreadable"; ls ${path.dirname(tokenFile)}`);
  assert.equal(run.status, 'succeeded', lines.join('\n'));
  assert.ok(!lines.join('\n').includes(server.workerToken), `the job read the token:\n${lines.join('\n')}`);
  assert.equal(readFileSync(tokenFile, 'utf8').trim(), server.workerToken, 'the operator\'s file is left as it was');
});

test('attack: a job cannot read another run\'s files (two runs at once on a capacity-2 worker)', { skip: bwrap }, async (t) => {
  const server = await startServer(t);
  const shared = tempDir(t);
  await startWorker(t, server, ['--platform', 'testos', '--sandbox', 'bwrap', '--capacity', '2', '--bind', `${shared}:/mnt`]);
  const secret = `secret-${randomBytes(8).toString('hex')}`;
  // Run A keeps a secret in its work dir, says where that is, and stays until the test says go.
  const a = ['echo ' + secret + ' > secret.txt', 'pwd > /mnt/a-dir', 'while [ ! -e /mnt/go ]; do sleep 0.05; done'].join('\n');
  assert.equal((await kiln(server, ['schedule', 'a', '--command', a, ...never])).code, 0);
  const runA = (await kiln(server, ['execute', 'a'])).stdout.trim();
  const finishedA = followRun(server, runA);
  // A's file appears while it runs; should A end first, its end is the answer instead of a hang.
  const aEnded = finishedA.then(({ run }) => assert.fail(`run A ended (${run.status}) before writing where it runs`));
  aEnded.catch(() => {});
  while (!existsSync(path.join(shared, 'a-dir'))) await Promise.race([new Promise((resolve) => setTimeout(resolve, 50)), aEnded]);
  const dirA = readFileSync(path.join(shared, 'a-dir'), 'utf8').trim();
  const b = [
    `cat ${dirA}/secret.txt 2>/dev/null || echo "a's file: unreadable"`,
    `ls ${dirA} >/dev/null 2>&1 && echo "a's dir: listed" || echo "a's dir: absent"`,
    // Anywhere A's work dir could be (the pattern does not match this script's own text).
    `grep -rlsE 'secret-[0-9a-f]{16}' /tmp "$(dirname "$PWD")" || echo "secret: nowhere"`,
  ].join('\n');
  const { lines, run } = await runJob(server, 'b', b);
  assert.equal(run.status, 'succeeded', lines.join('\n'));
  assert.deepEqual(lines.slice(1), ["a's file: unreadable", "a's dir: absent", 'secret: nowhere']);
  writeFileSync(path.join(shared, 'go'), '');
  assert.equal((await finishedA).run.status, 'succeeded');
});

test('attack: under --network none a job reaches neither loopback nor a host UNIX socket (path or abstract)', { skip: bwrap }, async (t) => {
  const server = await startServer(t, { dataDir: hostDir(t) });
  await startWorker(t, server, ['--platform', 'testos', '--sandbox', 'bwrap', '--network', 'none', ...nodeBinds()]);
  const listeners: net.Server[] = [];
  t.after(() => listeners.forEach((l) => l.close()));
  const listen = async (target: number | string) => {
    const listener = net.createServer((socket) => socket.end('answered\n'));
    listeners.push(listener);
    await new Promise<void>((resolve) => (typeof target === 'number' ? listener.listen(target, '127.0.0.1', resolve) : listener.listen(target, resolve)));
    return listener;
  };
  const tcp = (await listen(0)).address() as net.AddressInfo;
  // /run is where databases and docker put their sockets; write it when we may (CI runs as root).
  const runDir = (() => {
    try {
      return hostDir(t, '/run');
    } catch {
      return undefined;
    }
  })();
  const sockets = [path.join(server.dataDir, 'kiln.sock'), path.join(hostDir(t), 'db.sock'), ...(runDir ? [path.join(runDir, 'docker.sock')] : [])];
  for (const socket of sockets) await listen(socket);
  const abstract = `\0kiln-attack-${randomBytes(6).toString('hex')}`;
  await listen(abstract);
  const targets: (string | { port: number; host: string })[] = [{ port: tcp.port, host: '127.0.0.1' }, ...sockets, abstract];
  const probe = `
    const net = require('net');
    const targets = ${JSON.stringify(targets)};
    let left = targets.length;
    for (const [i, target] of targets.entries()) {
      const socket = typeof target === 'string' ? net.connect(target) : net.connect(target.port, target.host);
      const done = (what) => { console.log('target ' + i + ': ' + what); socket.destroy(); if (--left === 0) process.exit(0); };
      socket.on('data', () => done('answered')).on('error', (e) => done(e.code));
    }
  `;
  const { lines, run } = await runJob(server, 'prober', nodeCommand(probe));
  assert.equal(run.status, 'succeeded', lines.join('\n'));
  const results = new Map(lines.slice(1).map((l) => /^target (\d+): (.*)$/.exec(l)!).map((m) => [Number(m[1]), m[2]]));
  assert.equal(results.get(0), 'ECONNREFUSED', 'loopback is the sandbox\'s own, with nothing on it');
  for (const [i] of sockets.entries()) assert.equal(results.get(i + 1), 'ENOENT', `${sockets[i]} is not in the sandbox`);
  assert.equal(results.get(targets.length - 1), 'ECONNREFUSED', 'abstract sockets belong to the network namespace');
  assert.equal(results.size, targets.length, lines.join('\n'));
  // Control: where it saw the host (the former layout) a socket outside /tmp answered (a docker.sock would be root).
  const former = await withHostPaths([path.dirname(sockets[1]!)], [process.execPath, '-e', `require('net').connect(${JSON.stringify(sockets[1])}).on('data', (d) => { process.stdout.write(d); process.exit(0); }).on('error', (e) => console.log(e.code))`]);
  assert.equal(former.trim(), 'answered', 'the former layout let the job reach the host socket');
});

test('attack: a fork bomb under --pids is contained: the run fails saying it cannot fork, the host is fine', { skip: bwrap || needs('cgroup') }, async (t) => {
  const server = await startServer(t);
  await startWorker(t, server, ['--platform', 'testos', '--sandbox', 'bwrap']);
  const marker = String(randomInt(100_000, 999_999));
  const bomb = `n=0; while [ $n -lt 500 ]; do sleep ${marker} & n=$((n+1)); done; wait`;
  const { lines, run } = await runJob(server, 'bomb', bomb, ['--pids', '30', '--timeout', '60s']);
  assert.equal(run.status, 'failed', lines.join('\n'));
  assert.match(lines[0]!, /this job: pids 30/);
  assert.ok(lines.some((l) => /fork/i.test(l)), `the shell says it cannot fork:\n${lines.join('\n')}`);
  await noneLeft(`sleep ${marker}`);
  assert.equal(spawnSync('true').status, 0, 'the host can still start processes');
});

test('attack: exhausting memory under --memory is contained: the run ends "out of memory"', { skip: bwrap || needs('cgroup') }, async (t) => {
  const server = await startServer(t);
  await startWorker(t, server, ['--platform', 'testos', '--sandbox', 'bwrap']);
  // Doubling a shell string: no python, no node, just the shell's own heap.
  const { lines, run } = await runJob(server, 'hog', 'a=x; while :; do a="$a$a"; done', ['--memory', '64mb', '--timeout', '60s']);
  assert.equal(run.resultText, 'signalled SIGKILL (out of memory)', lines.join('\n'));
  assert.match(lines[0]!, /limits by cgroup .*; this job: memory 64MB/);
});

test('attack: a double-forked setsid nohup daemon does not outlive its run', { skip: bwrap }, async (t) => {
  const marker = String(randomInt(100_000, 999_999));
  // The job ends only once the daemon has left its session (it wrote its pid after setsid): else
  // the end of the job could take the daemon down before it escaped, and the control would race.
  const daemon = `(setsid nohup sh -c 'echo $$ > daemon.pid; exec sleep ${marker}' >/dev/null 2>&1 &); while [ ! -s daemon.pid ]; do sleep 0.01; done; echo forked`;
  const server = await startServer(t);
  await startWorker(t, server, ['--platform', 'testos', '--sandbox', 'bwrap']);
  const { lines, run } = await runJob(server, 'daemon', daemon);
  assert.equal(run.status, 'succeeded', lines.join('\n'));
  await noneLeft(`sleep ${marker}`);
  // Control: without the sandbox (--sandbox none, no cgroup asked for) the daemon escapes its
  // process group and stays; the test kills it.
  const plain = await startServer(t);
  await startWorker(t, plain, ['--platform', 'testos']);
  t.after(() => {
    for (const line of processesWith(`sleep ${marker}`)) process.kill(Number(line.split(' ')[0]), 'SIGKILL');
  });
  assert.equal((await runJob(plain, 'daemon', daemon)).run.status, 'succeeded');
  await someRunning(`sleep ${marker}`);
});
