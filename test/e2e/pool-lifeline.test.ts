/**
 * Pool instances die with their server, however it dies: a busy instance of a SIGKILLed server
 * kills its job's process tree and exits at once (its lifeline, the stdin pipe only the server
 * holds, ended), rather than draining towards a server that is gone.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { test, type TestContext } from 'node:test';
import { instanceProcesses, isAlive, kiln, startServer, tempDir, type ServerProcess } from '../helpers/processes.js';

/** Pids of processes started as instances of the pools of the server on `dataDir` (by its exact owner id). */

/** Every process below `pid` (the job's shell, its children, a sandbox's processes), by parent links. */
function descendants(pid: number): number[] {
  const parents = new Map<number, number[]>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      parents.set(ppid, [...(parents.get(ppid) ?? []), Number(entry)]);
    } catch {
      // Gone meanwhile.
    }
  }
  const found: number[] = [];
  for (let queue = [pid]; queue.length > 0;) {
    const children = parents.get(queue.shift()!) ?? [];
    found.push(...children);
    queue.push(...children);
  }
  return found;
}

/** The NUL-separated command line of `pid`, or '' once it is gone. */
function commandLine(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8');
  } catch {
    return '';
  }
}

/** Waits until none of `pids` runs, up to a deadline (another process's end gives no event to await). */
async function allGone(pids: number[], withinMs: number): Promise<void> {
  const deadline = Date.now() + withinMs;
  while (pids.some(isAlive)) {
    if (Date.now() > deadline) assert.fail(`still running ${withinMs} ms after the server died: ${pids.filter(isAlive).join(', ')}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** Resolves once the run's console shows a line matching `pattern` (read from the live stream, no polling). */
async function lineOf(server: ServerProcess, runId: string, pattern: RegExp): Promise<string> {
  const response = await fetch(`${server.url}/api/runs/${runId}/console?follow=true`, { headers: { authorization: `Bearer ${server.adminToken}` } });
  let buffered = '';
  for await (const chunk of response.body as unknown as AsyncIterable<Uint8Array>) {
    buffered += Buffer.from(chunk).toString('utf8');
    for (const text of buffered.split('\n').slice(0, -1)) {
      const event = JSON.parse(text) as { type: string; text?: string };
      // Returning from the loop cancels the stream.
      if (event.type === 'line' && pattern.test(event.text!)) return event.text!;
      if (event.type === 'end') throw new Error(`run ${runId} ended before printing ${pattern}`);
    }
    buffered = buffered.slice(buffered.lastIndexOf('\n') + 1);
  }
  throw new Error(`the console of ${runId} closed before printing ${pattern}`);
}

async function busyInstanceDiesWithItsServer(t: TestContext, provider: 'process' | 'bwrap'): Promise<void> {
  const dataDir = tempDir(t);
  const config = path.join(dataDir, 'kiln.yaml');
  writeFileSync(config, ['pools:', '  - name: lifeline', `    provider: ${provider}`, '    platform: pooled', '    max: 1', '    idle_timeout: 10m', ''].join('\n'));
  const server = await startServer(t, { dataDir, args: ['--config', config] });
  // Whatever happens to the test, nothing it started outlives it (killed by pid).
  let tree: number[] = [];
  t.after(() => {
    for (const pid of tree) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // Gone, as it should be.
      }
    }
  });
  assert.equal((await kiln(server, ['schedule', 'long', '--command', 'sleep 600 & echo "sleeping $!"; wait', '--platform', 'pooled', '--period', 'never'])).code, 0);
  const runId = (await kiln(server, ['execute', 'long'])).stdout.trim();
  await lineOf(server, runId, /^sleeping \d+$/);
  const instances = instanceProcesses(readFileSync(path.join(dataDir, 'pool-owner.id'), 'utf8').trim());
  assert.equal(instances.length, 1, 'one busy instance');
  // The line can come before the job's fork has exec'd sleep (no event for that): look again until it has.
  let sleepers: number[] = [];
  for (const deadline = Date.now() + 5000; ; await new Promise((resolve) => setTimeout(resolve, 50))) {
    tree = [instances[0]!, ...descendants(instances[0]!)];
    sleepers = tree.filter((pid) => commandLine(pid) === 'sleep\x00600\x00');
    if (sleepers.length > 0 || Date.now() > deadline) break;
  }
  assert.equal(sleepers.length, 1, `the job's sleep is among the instance's processes: ${tree.join(', ')}`);

  const killedAt = Date.now();
  await server.kill('SIGKILL');
  // The instance drained for 10 s and then waited 60 s more for a server that was gone; now it goes at once.
  await allGone(tree, 8000);
  t.diagnostic(`${tree.length} processes gone ${Date.now() - killedAt} ms after the server's SIGKILL`);
}

test('a busy process-pool instance and its job die with a SIGKILLed server', { timeout: 60_000 }, async (t) => {
  await busyInstanceDiesWithItsServer(t, 'process');
});

test('a busy bwrap-pool instance and its sandboxed job die with a SIGKILLed server', { timeout: 60_000 }, async (t) => {
  try {
    execFileSync('bwrap', ['--ro-bind', '/', '/', '--unshare-pid', '--unshare-user', 'true'], { stdio: 'pipe' });
  } catch (raw) {
    const why = `bubblewrap cannot run here (${(raw as Error).message.split('\n')[0]})`;
    if (process.env.KILN_TEST_REQUIRE_ALL === '1') throw new Error(`${why}; KILN_TEST_REQUIRE_ALL forbids skipping`);
    t.skip(why);
    return;
  }
  await busyInstanceDiesWithItsServer(t, 'bwrap');
});
