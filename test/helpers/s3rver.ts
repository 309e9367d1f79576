/** A real S3-compatible server for tests: s3rver (from npm) as a child process on loopback. */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

const S3RVER_BIN = fileURLToPath(new URL('../../node_modules/s3rver/bin/s3rver.js', import.meta.url));

/** s3rver's fixed credentials. */
export const S3RVER_KEY = 'S3RVER';

export interface S3rver {
  /** `http://127.0.0.1:PORT` */
  endpoint: string;
  /** Kills it (by pid) and removes its data. */
  stop(): void;
}

/** Starts s3rver with `bucket` created; resolves once it listens. */
export async function startS3rver(bucket: string): Promise<S3rver> {
  const dataDir = mkdtempSync(path.join(os.tmpdir(), 'kiln-s3rver-'));
  // Port 0: s3rver prints the port it got, so there is no window for another process to take it.
  const child = spawn(process.execPath, [S3RVER_BIN, '-d', dataDir, '-a', '127.0.0.1', '-p', '0', '--silent', '--configure-bucket', bucket], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const stop = () => {
    if (child.pid && child.exitCode === null && child.signalCode === null) process.kill(child.pid, 'SIGKILL');
    rmSync(dataDir, { recursive: true, force: true });
  };
  const output: string[] = [];
  createInterface({ input: child.stderr! }).on('line', (line) => output.push(line));
  const listening = new Promise<string>((resolve) =>
    createInterface({ input: child.stdout! }).on('line', (line) => {
      output.push(line);
      const match = /S3rver listening on (\S+:\d+)/.exec(line);
      if (match) resolve(match[1]!);
    }),
  );
  const exited = once(child, 'exit').then(([code]) => {
    throw new Error(`s3rver exited (${code}) before listening:\n${output.join('\n')}`);
  });
  try {
    return { endpoint: `http://${await Promise.race([listening, exited])}`, stop };
  } catch (raw) {
    stop();
    throw raw;
  }
}
