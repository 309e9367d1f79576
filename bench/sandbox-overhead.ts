/**
 * What the bubblewrap sandbox costs per job: the time from `execute` to the job's first own console
 * line on a worker with `--sandbox none`, with `--sandbox bwrap`, and with bwrap plus a cgroup
 * memory limit (real server and workers, N runs each, worker-stamped times). Peer in the same
 * command: bare `bwrap ... /bin/true` against `/bin/sh -c true`, without Kiln.
 * Usage: npm run bench:sandbox [-- --runs 20]
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { freePort, median, numberArg, startKiln } from './support.js';

const RUNS = numberArg('--runs', 20);


const dataDir = mkdtempSync(path.join(os.tmpdir(), 'kiln-bench-sandbox-'));
const port = await freePort();
const url = `http://127.0.0.1:${port}`;
const server = startKiln(['server', '--listen', `127.0.0.1:${port}`, '--data', dataDir], {}, /listening/);
const children = [server.child];
try {
  await server.started;
  const admin = readFileSync(path.join(dataDir, 'admin.token'), 'utf8').trim();
  const env = { KILN_WORKER_TOKEN: readFileSync(path.join(dataDir, 'worker.token'), 'utf8').trim() };
  for (const [platform, sandbox] of [['plain', 'none'], ['boxed', 'bwrap']]) {
    const worker = startKiln(['worker', '--server', url, '--platform', platform!, '--sandbox', sandbox!], env, /connected to the server/);
    children.push(worker.child);
    await worker.started;
  }
  const headers = { authorization: `Bearer ${admin}`, 'content-type': 'application/json' };
  const jobs = [
    ['plain', { platform: 'plain' }, '--sandbox none'],
    ['boxed', { platform: 'boxed' }, '--sandbox bwrap'],
    ['limited', { platform: 'boxed', sandbox: { memoryBytes: 256 * 1024 ** 2, pids: 100 } }, '--sandbox bwrap, --memory 256mb --pids 100 (cgroup)'],
  ] as const;
  for (const [name, fields] of jobs) {
    await fetch(`${url}/api/jobs`, { method: 'POST', headers, body: JSON.stringify({ name, ...fields, script: 'echo first line\n', period: 'never' }) });
  }

  /** Execute -> the job's own first line, as stamped by the worker. */
  const startTime = async (job: string) => {
    const t0 = Date.now();
    const reply = (await (await fetch(`${url}/api/jobs/${job}/execute`, { method: 'POST', headers, body: '{}' })).json()) as { run: { id: string } };
    const events = (await (await fetch(`${url}/api/runs/${reply.run.id}/console?follow=true`, { headers })).text()).split('\n').filter(Boolean).map((l) => JSON.parse(l));
    const line = events.find((e) => e.type === 'line' && !e.text.startsWith('kiln:'));
    if (!line) throw new Error(`${job}: no line from the job: ${JSON.stringify(events.at(-1))}`);
    return line.ts - t0;
  };
  const results = new Map<string, number[]>();
  // Interleaved, so that drift on the machine affects each kind alike.
  for (let i = 0; i < RUNS; i += 1) for (const [name] of jobs) results.set(name, [...(results.get(name) ?? []), await startTime(name)]);

  const bare = (command: string[]) => {
    const times: number[] = [];
    for (let i = 0; i < RUNS; i += 1) {
      const t0 = performance.now();
      spawnSync(command[0]!, command.slice(1));
      times.push(performance.now() - t0);
    }
    return times;
  };
  const sh = bare(['/bin/sh', '-c', 'true']);
  const bw = bare(['bwrap', '--ro-bind', '/', '/', '--dev', '/dev', '--proc', '/proc', '--tmpfs', '/tmp', '--unshare-user', '--unshare-pid', '--unshare-ipc', '--unshare-uts', '--unshare-net', '--die-with-parent', '--cap-drop', 'ALL', '--', '/bin/true']);

  const show = (label: string, values: number[]) =>
    console.log(`${label.padEnd(58)} median ${median(values).toFixed(1).padStart(6)} ms   min ${Math.min(...values).toFixed(1)}   max ${Math.max(...values).toFixed(1)}`);
  console.log(`execute -> job's first line, ${RUNS} runs each, interleaved (${os.cpus().length} cores)`);
  for (const [name, , label] of jobs) show(label, results.get(name)!);
  console.log(`sandbox cost per job: ${(median(results.get('boxed')!) - median(results.get('plain')!)).toFixed(1)} ms (bwrap), ${(median(results.get('limited')!) - median(results.get('plain')!)).toFixed(1)} ms (bwrap + cgroup)`);
  console.log('peer, without Kiln:');
  show('/bin/sh -c true', sh);
  show('bwrap (same namespaces and mounts) /bin/true', bw);
} finally {
  for (const child of children) child.kill('SIGKILL');
  rmSync(dataDir, { recursive: true, force: true });
}
