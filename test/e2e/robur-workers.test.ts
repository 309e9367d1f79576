/**
 * robur builder-workers on `kiln server --robur-listen`: the real server process, the stand-in
 * builder-worker of test/helpers/robur-peers.ts (written from the reference: no OCaml here) over
 * real TCP, and the kiln CLI. One server for the file (each part on its own platform); its
 * re-attach grace is 10 minutes, so a run lost "at once" cannot have waited for it, and its
 * backstop 1 s, so that a run past its timeout is ended by the server soon.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { test } from 'node:test';
import { followRun, freePort, kiln, spawnKiln, startServer, tempDir, type ServerProcess } from '../helpers/processes.js';
import { roburClient, roburWorker } from '../helpers/robur-peers.js';
import { decodeCmd, encodeCmd, frameOf, FrameReader } from '../../src/protocol/robur/index.js';

/** Schedules a never-period job of `platform` running `script`; returns nothing (execute queues it). */
async function schedule(server: ServerProcess, dir: string, name: string, platform: string, script: string, extra: string[] = []): Promise<void> {
  const file = path.join(dir, `${name}.sh`);
  writeFileSync(file, script);
  const scheduled = await kiln(server, ['schedule', name, '--script', file, '--platform', platform, '--period', 'never', ...extra]);
  assert.equal(scheduled.code, 0, scheduled.stderr);
}

async function execute(server: ServerProcess, name: string): Promise<string> {
  const executed = await kiln(server, ['execute', name]);
  assert.equal(executed.code, 0, executed.stderr);
  return executed.stdout.trim();
}

const sha256 = (data: string | Buffer) => createHash('sha256').update(data).digest('hex');

test('robur builder-workers run Kiln runs through --robur-listen', async (t) => {
  const roburPort = await freePort();
  const server = await startServer(t, { args: ['--robur-listen', `127.0.0.1:${roburPort}`, '--reattach-grace', '10m', '--backstop', '1s'] });
  // The robur address is said at start.
  await server.waitFor(new RegExp(`robur builder protocol on 127\\.0\\.0\\.1:${roburPort}`));
  const dir = tempDir(t);

  await t.test('a run is taken, its lines observed in order, exit 3 with its files as artifacts, the env exported', async () => {
    await schedule(server, dir, 'build', 'robur-a', [
      '#!/bin/sh', 'echo first', 'echo "greeting: $GREETING"', 'echo second >&2', 'for i in 1 2 3; do echo "line $i"; done',
      'printf art > out.txt', 'mkdir -p bin && printf "\\177ELF binary" > bin/app', 'echo hidden > .dot', 'exit 3', '',
    ].join('\n'), ['--env', "GREETING=it's \"quoted\" $HOME"]);
    const worker = roburWorker(roburPort, 'robur-a');
    const runId = await execute(server, 'build');
    const job = await worker.scheduled;
    assert.equal(job.uuid, runId, 'the Job_schedule uuid is the run id');
    assert.equal(job.job.name, 'build');
    assert.equal(job.job.platform, 'robur-a');
    assert.match(job.job.script, /^#!\/bin\/sh\nexport GREETING='it'\\''s "quoted" \$HOME'\n/, 'the env is exported after the shebang');

    const observed = await kiln(server, ['observe', runId]);
    assert.equal(observed.code, 1, observed.stderr);
    const lines = observed.stdout.trimEnd().split('\n');
    assert.deepEqual(lines.slice(0, -1), ['first', 'greeting: it\'s "quoted" $HOME', 'second', 'line 1', 'line 2', 'line 3']);
    assert.match(lines.at(-1)!, /failed: exited 3$/);
    assert.deepEqual((await worker.done).sent, { kind: 'exited', code: 3 });

    const { run } = JSON.parse((await kiln(server, ['show', runId, '--json'])).stdout);
    assert.equal(run.status, 'failed');
    assert.match(run.worker, /^robur-robur-a-127\.0\.0\.1:\d+$/, 'the run names its robur worker');

    const listed = JSON.parse((await kiln(server, ['artifacts', runId, '--json'])).stdout);
    const byPath = Object.fromEntries(listed.artifacts.map((a: { path: string; sha256: string }) => [a.path, a.sha256]));
    assert.deepEqual(Object.keys(byPath).sort(), ['bin/app', 'out.txt'], 'every non-dot file but script.sh');
    assert.equal(byPath['out.txt'], sha256('art'));
    const into = path.join(dir, 'download');
    const downloaded = await kiln(server, ['artifacts', runId, '--download', into]);
    assert.equal(downloaded.code, 0, downloaded.stderr);
    assert.equal(sha256(readFileSync(path.join(into, 'bin/app'))), sha256(Buffer.from('\x7fELF binary', 'latin1')));
  });

  await t.test('a job killed by a signal is reported signalled', async () => {
    await schedule(server, dir, 'killed', 'robur-b', 'echo before\nkill -KILL 0\necho after\n');
    const worker = roburWorker(roburPort, 'robur-b');
    const runId = await execute(server, 'killed');
    const { lines, run } = await followRun(server, runId);
    assert.deepEqual(lines, ['before']);
    assert.equal(run.status, 'failed');
    assert.equal(run.resultText, 'signalled SIGKILL');
    assert.deepEqual((await worker.done).sent, { kind: 'signalled', signal: -7 }, 'OCaml\'s number for SIGKILL, as the real builder-worker sends');
  });

  await t.test('a cancel closes the worker\'s connection and the run ends cancelled', async () => {
    await schedule(server, dir, 'forever', 'robur-c', 'while :; do echo tick; sleep 0.1; done\n');
    const worker = roburWorker(roburPort, 'robur-c');
    const runId = await execute(server, 'forever');
    await worker.scheduled;
    const cancelled = await kiln(server, ['cancel', runId]);
    assert.equal(cancelled.code, 0, cancelled.stderr);
    const { run } = await followRun(server, runId);
    assert.equal(run.status, 'cancelled');
    // Its sender finds the connection closed on its next line and kills the job, as builder-worker's does.
    const outcome = await worker.done;
    assert.equal(outcome.closed, true);
    assert.equal(outcome.sent, undefined);
  });

  await t.test('Kiln\'s own deadline ends a robur run timed-out and closes the worker\'s connection', async () => {
    await schedule(server, dir, 'slow', 'robur-g', 'while :; do echo tick; sleep 0.1; done\n', ['--timeout', '1s']);
    const worker = roburWorker(roburPort, 'robur-g');
    const runId = await execute(server, 'slow');
    const { run } = await followRun(server, runId);
    assert.equal(run.status, 'timed-out');
    assert.equal((await worker.done).closed, true, 'released: its connection closed, its next line killed the job');
  });

  await t.test('a worker that dies mid-run loses its run at once, retried on another robur worker', async () => {
    const mark = path.join(dir, 'second-attempt');
    await schedule(server, dir, 'flaky', 'robur-d', `if [ -e '${mark}' ]; then echo again; exit 0; fi\ntouch '${mark}'\necho once\nsleep 60\n`);
    const first = roburWorker(roburPort, 'robur-d');
    const runId = await execute(server, 'flaky');
    await first.scheduled;
    const second = roburWorker(roburPort, 'robur-d');
    first.kill();
    const retried = await second.scheduled;
    assert.equal(retried.uuid, runId);
    const { run } = await followRun(server, runId);
    assert.equal(run.status, 'succeeded');
    assert.equal((await second.done).sent?.kind, 'exited');
    const shown = JSON.parse((await kiln(server, ['show', runId, '--json'])).stdout);
    assert.equal(shown.run.attempt, 2);
    assert.match(JSON.stringify(shown.events), /closed its connection before Job_finished; it cannot re-attach/, 'lost for its closed connection, not after the grace');
    assert.ok(existsSync(mark));
  });

  await t.test('a header and a body in separate TCP segments are read as one frame', async () => {
    await schedule(server, dir, 'split', 'robur-e', 'echo split\n');
    const worker = roburWorker(roburPort, 'robur-e', { splitWrites: true });
    const runId = await execute(server, 'split');
    const { lines, run } = await followRun(server, runId);
    assert.deepEqual(lines, ['split']);
    assert.equal(run.status, 'succeeded');
    assert.equal((await worker.done).closed, false);
  });

  await t.test('a legacy 13-byte frame closes only its connection; the server keeps serving', async () => {
    const socket = net.connect({ port: roburPort, host: '127.0.0.1' });
    const received: Buffer[] = [];
    socket.on('data', (chunk) => received.push(chunk));
    socket.on('error', () => {});
    await new Promise((resolve) => socket.once('connect', resolve));
    const since = server.stderr.length;
    socket.write(Buffer.from('0000000000000005a003020100', 'hex'));
    await new Promise((resolve) => socket.once('close', resolve));
    assert.equal(Buffer.concat(received).length, 0, 'no reply, as builder');
    await server.waitFor(/robur connection closed on bad input/, since);
    // Still serving, both sides of the port.
    const replies = await roburClient(roburPort, { type: 'info' });
    assert.deepEqual(replies.map((r) => r.type), ['info-reply', 'success']);
    // builder-client's schedule queues the job at once; a robur worker runs it.
    const worker = roburWorker(roburPort, 'robur-f');
    const scheduled = await roburClient(roburPort, { type: 'schedule', period: 'never', job: { name: 'after', script: 'echo still here\n', platform: 'robur-f' } });
    assert.deepEqual(scheduled, [{ type: 'success' }]);
    const { lines } = await followRun(server, (await worker.scheduled).uuid);
    assert.deepEqual(lines, ['still here']);
    assert.equal(server.child.exitCode, null);
  });

  await t.test('a platform that is not a platform name (a path) is refused: no template file outside the config dir is ever read', async () => {
    writeFileSync(path.join(server.dataDir, 'orb-build.template.robur-g'), 'echo %%OPAM_PACKAGE%%\n');
    assert.deepEqual(await roburClient(roburPort, { type: 'schedule-orb-build', period: 'never', job: { name: 'orbjob', opamPackage: 'x' } }), [{ type: 'success' }]);
    const since = server.stderr.length;
    // A worker asking for `/../admin.token` would make it a "known" platform, and an orb-build run there would read <data>/admin.token as its template.
    const evil = roburWorker(roburPort, '/../admin.token');
    await assert.rejects(evil.scheduled, /expected Job_schedule, got a close/);
    await server.waitFor(/robur connection closed: Job_requested: platform names use letters/, since);
    assert.deepEqual(await roburClient(roburPort, { type: 'execute', name: 'orbjob', platform: '/../admin.token' }), [{ type: 'failure', message: 'execute failed: no such platform' }]);
  });

  await t.test('a robur worker\'s row goes with its connection: `kiln workers` does not grow by one per robur job', async () => {
    await schedule(server, dir, 'once', 'robur-h', 'echo once\n');
    const since = server.stderr.length;
    const worker = roburWorker(roburPort, 'robur-h');
    const runId = await execute(server, 'once');
    assert.equal((await followRun(server, runId)).run.status, 'succeeded');
    await worker.done;
    const { run } = JSON.parse((await kiln(server, ['show', runId, '--json'])).stdout);
    assert.match(run.worker, /^robur-robur-h-127\.0\.0\.1:\d+$/, 'its run keeps the name');
    const name = run.worker.replaceAll('.', '\\.');
    await server.waitFor(new RegExp(`robur worker ${name} forgotten`), since);
    const listed = await kiln(server, ['workers', '--json']);
    assert.equal(listed.code, 0, listed.stderr);
    assert.doesNotMatch(listed.stdout, new RegExp(name));
  });

  await t.test('a Job_finished over the frame limit ends the run aborted with the sizes, not lost and retried', async () => {
    await schedule(server, dir, 'huge', 'robur-i', 'echo huge\n');
    // A stand-in worker that takes the job and then announces a Job_finished of 300 MiB (over the 256 MiB cap); the body is never needed.
    const socket = net.connect({ port: roburPort, host: '127.0.0.1' });
    socket.on('error', () => {});
    const reader = new FrameReader(1024 * 1024);
    const scheduled = new Promise<void>((resolve) => socket.on('data', (chunk) => {
      if (reader.push(chunk).map((body) => decodeCmd(body)).some((cmd) => cmd.type === 'job-schedule')) resolve();
    }));
    const closed = new Promise((resolve) => socket.once('close', resolve));
    await new Promise((resolve) => socket.once('connect', resolve));
    socket.write(Buffer.concat([
      frameOf(encodeCmd({ type: 'client-hello', peer: 'worker', version: 5 })), frameOf(encodeCmd({ type: 'job-requested', platform: 'robur-i' })),
    ]));
    const runId = await execute(server, 'huge');
    await scheduled;
    const header = Buffer.alloc(8);
    header.writeBigUInt64BE(300n * 1024n * 1024n);
    socket.write(header);
    const { run } = await followRun(server, runId);
    assert.equal(run.status, 'failed');
    assert.match(run.resultText ?? '', /Job_finished frame is 314572800 bytes, over the robur port's limit of 268435456 bytes/);
    assert.equal(JSON.parse((await kiln(server, ['show', runId, '--json'])).stdout).run.attempt, 1, 'not lost and retried');
    await closed;
  });

  await t.test('kiln info shows the port; a stop closes the connections of waiting workers', async () => {
    const info = await kiln(server, ['info']);
    assert.match(info.stdout, new RegExp(`robur builder protocol on 127\\.0\\.0\\.1:${roburPort} \\(no authentication`));
    const since = server.stderr.length;
    const waiting = roburWorker(roburPort, 'robur-idle');
    await server.waitFor(/robur worker waiting for a job/, since);
    await server.kill('SIGTERM');
    assert.equal(server.child.exitCode, 0);
    await assert.rejects(waiting.scheduled, /expected Job_schedule, got a close/);
  });
});

test('the config file\'s robur.listen opens the port; bound beyond loopback it is warned about', async (t) => {
  const roburPort = await freePort();
  const dir = tempDir(t);
  const config = path.join(dir, 'kiln.yaml');
  writeFileSync(config, `robur:\n  listen: 0.0.0.0:${roburPort}\n`);
  const server = await startServer(t, { args: ['--config', config] });
  await server.waitFor(/the robur port has no authentication/);
  await server.waitFor(new RegExp(`robur builder protocol on 0\\.0\\.0\\.0:${roburPort}`));
  const replies = await roburClient(roburPort, { type: 'info' });
  assert.deepEqual(replies.map((r) => r.type), ['info-reply', 'success']);
});

test('a robur port already in use stops the server with one line', async (t) => {
  const taken = net.createServer();
  await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve));
  t.after(() => taken.close());
  const { port } = taken.address() as net.AddressInfo;
  const server = spawnKiln(t, ['server', '--listen', `127.0.0.1:${await freePort()}`, '--data', tempDir(t), '--robur-listen', `127.0.0.1:${port}`]);
  const { code } = await server.exited;
  assert.notEqual(code, 0);
  assert.ok(server.stderr.some((line) => line.includes(`cannot listen on 127.0.0.1:${port} (--robur-listen): the address is already in use`)), server.stderr.join('\n'));
});
