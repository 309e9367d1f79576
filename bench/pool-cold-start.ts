/**
 * Cold start of latent workers: time from `execute` to the job's first own console line when no
 * worker is running and the server must start one (`idle_timeout: 0`, so every run is cold), for a
 * `process`, a `bwrap` and (when a Docker engine answers) a `docker` pool. Peers in the same
 * command: the same job on an already connected worker, a bare `node` process spawned to print a
 * line (the floor under any worker written in Node), and a bare `docker run` of the same image.
 * Usage: npm run bench:pools [-- --runs 10]
 */
import { execFile, spawn } from 'node:child_process';
import { promisify } from 'node:util';
import { dockerAvailable, kilnWorkerImage } from '../test/helpers/docker-image.js';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { freePort, median, numberArg, startKiln } from './support.js';

const RUNS = numberArg('--runs', 10);
const noDocker = dockerAvailable();
const image = noDocker ? '' : await kilnWorkerImage();

const dataDir = mkdtempSync(path.join(os.tmpdir(), 'kiln-bench-pools-'));
const config = path.join(dataDir, 'kiln.yaml');
writeFileSync(config, [
  'pools:',
  '  - {name: cold-process, provider: process, platform: cold-process, max: 1, idle_timeout: 0, check_interval: 1s}',
  '  - {name: cold-bwrap, provider: bwrap, platform: cold-bwrap, max: 1, idle_timeout: 0, check_interval: 1s}',
  ...(noDocker ? [] : [`  - {name: cold-docker, provider: docker, platform: cold-docker, max: 1, idle_timeout: 0, check_interval: 1s, options: {image: "${image}", hostconfig: {network_mode: host}}}`]),
  '',
].join('\n'));
const port = await freePort();
const url = `http://127.0.0.1:${port}`;
const server = startKiln(['server', '--listen', `127.0.0.1:${port}`, '--data', dataDir, '--config', config], {}, /kiln server listening/);
const children = [server.child];
try {
  await server.started;
  const admin = readFileSync(path.join(dataDir, 'admin.token'), 'utf8').trim();
  const warm = startKiln(['worker', '--server', url, '--platform', 'warm'], { KILN_WORKER_TOKEN: readFileSync(path.join(dataDir, 'worker.token'), 'utf8').trim() }, /connected to the server/);
  children.push(warm.child);
  await warm.started;
  const headers = { authorization: `Bearer ${admin}`, 'content-type': 'application/json' };
  const kinds: [string, string][] = [['warm', 'connected worker (peer)'], ['cold-process', 'cold process pool'], ['cold-bwrap', 'cold bwrap pool']];
  if (!noDocker) kinds.push(['cold-docker', 'cold docker pool']);
  for (const [platform] of kinds) {
    await fetch(`${url}/api/jobs`, { method: 'POST', headers, body: JSON.stringify({ name: platform, platform, script: 'echo first line\n', period: 'never' }) });
  }
  const firstLine = async (job: string) => {
    const t0 = Date.now();
    const reply = (await (await fetch(`${url}/api/jobs/${job}/execute`, { method: 'POST', headers, body: '{}' })).json()) as { run: { id: string } };
    const events = (await (await fetch(`${url}/api/runs/${reply.run.id}/console?follow=true`, { headers })).text()).split('\n').filter(Boolean).map((l) => JSON.parse(l));
    const line = events.find((e) => e.type === 'line' && !e.text.startsWith('kiln:'));
    if (!line) throw new Error(`${job}: no line: ${JSON.stringify(events.at(-1))}`);
    return line.ts - t0;
  };
  /** Peer: spawn of a bare node that prints a line -> that line read. */
  const bareNode = async () => {
    const t0 = performance.now();
    const child = spawn(process.execPath, ['-e', "console.log('first line')"], { stdio: ['ignore', 'pipe', 'ignore'] });
    await new Promise((resolve) => child.stdout!.once('data', resolve));
    const ms = performance.now() - t0;
    await new Promise((resolve) => child.once('exit', resolve));
    return ms;
  };
  const results = new Map<string, number[]>();
  for (let i = 0; i < RUNS; i += 1) {
    for (const [job] of kinds) results.set(job, [...(results.get(job) ?? []), await firstLine(job)]);
    results.set('bare-node', [...(results.get('bare-node') ?? []), await bareNode()]);
    if (!noDocker) {
      // Peer: the engine alone starting a container of the same image that prints a line.
      const t0 = Date.now();
      await promisify(execFile)('docker', ['run', '--rm', '--network', 'host', image, 'echo', 'first line']);
      results.set('docker-run', [...(results.get('docker-run') ?? []), Date.now() - t0]);
    }
    console.log(`round ${i + 1}: ${[...results].map(([job, values]) => `${job} ${values.at(-1)!.toFixed(0)} ms`).join(', ')}`);
    // Let the --once instances exit and be stopped before the next cold start.
    await new Promise((resolve) => setTimeout(resolve, 1500));
  }
  console.log(`execute -> job's first line, ${RUNS} runs each (${os.cpus().length} cores)`);
  kinds.push(['bare-node', 'bare node spawn -> line (peer)']);
  if (!noDocker) kinds.push(['docker-run', 'bare docker run (peer)']);
  else console.log(`docker pool not measured: ${noDocker}`);
  const floor = median(results.get('bare-node')!);
  for (const [job, label] of kinds) {
    const values = results.get(job)!;
    console.log(`${label.padEnd(31)} median ${median(values).toFixed(0).padStart(5)} ms   min ${Math.min(...values).toFixed(0)}   max ${Math.max(...values).toFixed(0)}   / bare node ${(median(values) / floor).toFixed(1)}`);
  }
  const cold = median(results.get('cold-process')!);
  console.log(`target: cold process pool, execute -> first line <= 300 ms: ${cold.toFixed(0)} ms (bare node spawn -> line ${floor.toFixed(0)} ms, ${(cold / floor).toFixed(1)}x): ${cold <= 300 ? 'met' : 'not met'}`);
} finally {
  for (const child of children) child.kill('SIGTERM');
  await new Promise((resolve) => setTimeout(resolve, 1000));
  for (const child of children) child.kill('SIGKILL');
  rmSync(dataDir, { recursive: true, force: true });
}
