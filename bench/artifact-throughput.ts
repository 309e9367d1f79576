/**
 * Artifact throughput over loopback, with peak memory: a real server and worker; a job writes a
 * SIZE MiB file and prints a line; the upload time is from that line to the run's end (the worker
 * hashes the file, streams it, the server hashes and stores it). Peer in the same command:
 * `sha256sum` of the same file (one hash pass; the upload makes two plus the transfer).
 * Then the server forwards the run to an HTTP sink in this process (`--upload`): delivery time is
 * from the run's end to the sink's last byte; peer: `curl` POSTing the same file to the same sink.
 * Usage: node --import tsx bench/artifact-throughput.ts [--mib 512]
 */
import { execFile, execFileSync, spawn } from 'node:child_process';
import { promisify } from 'node:util';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { once } from 'node:events';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { createInterface } from 'node:readline';
import { freePort, KILN, numberArg } from './support.js';

const MIB = numberArg('--mib', 512);
const dataDir = mkdtempSync(path.join(os.tmpdir(), 'kiln-bench-art-'));
const port = await freePort();
const url = `http://127.0.0.1:${port}`;
const children: ReturnType<typeof spawn>[] = [];
const start = (args: string[], env: Record<string, string>, ready: RegExp) => {
  const child = spawn(process.execPath, [KILN, ...args], { env: { ...process.env, KILN_LOG_LEVEL: 'info', ...env }, stdio: ['ignore', 'ignore', 'pipe'] });
  children.push(child);
  return new Promise<number>((resolve) => createInterface({ input: child.stderr! }).on('line', (line) => ready.test(line) && resolve(child.pid!)));
};
const peak = (pid: number) => Number(/^VmHWM:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) / 1024;

// The upload sink: counts bytes, keeps none, and notes when each POST's body has been read.
const bodies: { bytes: number; endedAt: number }[] = [];
const sink = http.createServer((request, response) => {
  let bytes = 0;
  request.on('data', (chunk: Buffer) => (bytes += chunk.length));
  request.on('end', () => {
    bodies.push({ bytes, endedAt: Date.now() });
    response.writeHead(200).end('ok');
    sink.emit('body');
  });
});
sink.listen(0, '127.0.0.1');
await once(sink, 'listening');
const sinkUrl = `http://127.0.0.1:${(sink.address() as AddressInfo).port}/`;

try {
  const serverPid = await start(['server', '--listen', `127.0.0.1:${port}`, '--data', dataDir, '--upload', sinkUrl], {}, /listening/);
  const token = readFileSync(path.join(dataDir, 'admin.token'), 'utf8').trim();
  const workRoot = mkdtempSync(path.join(os.tmpdir(), 'kiln-bench-work-'));
  const workerPid = await start(['worker', '--server', url, '--platform', 'bench', '--work-dir', workRoot],
    { KILN_WORKER_TOKEN: readFileSync(path.join(dataDir, 'worker.token'), 'utf8').trim() }, /connected to the server/);
  const headers = { authorization: `Bearer ${token}`, 'content-type': 'application/json' };
  const base = { server: peak(serverPid), worker: peak(workerPid) };
  await fetch(`${url}/api/jobs`, { method: 'POST', headers, body: JSON.stringify({ name: 'big', platform: 'bench', period: 'never', script: `head -c ${MIB}M /dev/urandom > big.bin\ncp big.bin /tmp/kiln-bench-peer.bin\necho made\n` }) });
  const { run } = (await (await fetch(`${url}/api/jobs/big/execute`, { method: 'POST', headers, body: '{}' })).json()) as { run: { id: string } };
  const events = (await (await fetch(`${url}/api/runs/${run.id}/console?follow=true`, { headers })).text()).split('\n').filter(Boolean).map((l) => JSON.parse(l));
  const made = events.find((e) => e.text === 'made');
  const end = events.at(-1);
  const seconds = (Date.parse(end.run.finishedAt) - made.ts) / 1000;
  const t0 = performance.now();
  execFileSync('sha256sum', ['/tmp/kiln-bench-peer.bin']);
  const peerSeconds = (performance.now() - t0) / 1000;
  console.log(`artifact of ${MIB} MiB over loopback (${os.cpus().length} cores): ${(MIB / seconds).toFixed(0)} MiB/s (${seconds.toFixed(2)} s)`);
  console.log(`peer: sha256sum of the same file ${(MIB / peerSeconds).toFixed(0)} MiB/s; ratio upload/sha256sum ${(seconds / peerSeconds).toFixed(2)}`);
  console.log(`peak RSS growth: server ${(peak(serverPid) - base.server).toFixed(1)} MiB, worker ${(peak(workerPid) - base.worker).toFixed(1)} MiB`);

  if (bodies.length === 0) await once(sink, 'body');
  const delivery = (bodies[0]!.endedAt - Date.parse(end.run.finishedAt)) / 1000;
  const c0 = performance.now();
  // Not execFileSync: the sink runs in this process and must go on answering.
  await promisify(execFile)('curl', ['-s', '-o', '/dev/null', '--data-binary', '@/tmp/kiln-bench-peer.bin', '-H', 'content-type: application/octet-stream', sinkUrl]);
  const curlSeconds = (performance.now() - c0) / 1000;
  console.log(`--upload delivery to an HTTP sink: ${(MIB / delivery).toFixed(0)} MiB/s (${delivery.toFixed(2)} s from run end to last byte)`);
  console.log(`peer: curl POSTing the same file to the same sink ${(MIB / curlSeconds).toFixed(0)} MiB/s; ratio delivery/curl ${(delivery / curlSeconds).toFixed(2)}`);
  console.log(`peak RSS growth of the server after the delivery: ${(peak(serverPid) - base.server).toFixed(1)} MiB`);
  rmSync(workRoot, { recursive: true, force: true });
} finally {
  sink.close();
  for (const child of children) child.kill('SIGKILL');
  rmSync(dataDir, { recursive: true, force: true });
  rmSync('/tmp/kiln-bench-peer.bin', { force: true });
}
