/** `kiln artifacts RUN [--download DIR] [--path P]`: list a run's artifacts, or fetch them, verified. */
import { createHash } from 'node:crypto';
import { chmodSync, createWriteStream, mkdirSync, renameSync, rmSync } from 'node:fs';
import path from 'node:path';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { Command } from 'commander';
import { normaliseArtifactPath } from '../../core/index.js';
import { UsageError } from '../../errors.js';
import { clientFor, globals } from '../context.js';
import { printJson, printTable } from '../output.js';

interface Listed {
  path: string;
  size: number;
  sha256: string;
  mode: number;
}

/** Registers `artifacts`. */
export function registerArtifactCommands(program: Command): void {
  program
    .command('artifacts')
    .description("list a run's artifacts (path, size, sha256), or download them with --download")
    .argument('<run>', 'run id or unique prefix')
    .option('--download <dir>', 'fetch them into DIR, recreating their tree and modes; each sha256 is checked')
    .option('--path <path>', 'with --download: only this file (repeatable)', (v: string, prev: string[] = []) => [...prev, v])
    .action(async (runArg: string, flags: { download?: string; path?: string[] }, command: Command) => {
      const client = clientFor(command);
      const reply = await client.request<{ run: string; artifacts: Listed[] }>('GET', `/api/runs/${encodeURIComponent(runArg)}/artifacts`);
      if (!flags.download) {
        if (globals(command).json) return printJson(reply);
        printTable(['PATH', 'SIZE', 'SHA256'], reply.artifacts.map((a) => [a.path, String(a.size), a.sha256]));
        return;
      }
      const wanted = flags.path?.map((p) => normaliseArtifactPath(p));
      const chosen = wanted ? reply.artifacts.filter((a) => wanted.includes(a.path)) : reply.artifacts;
      const missing = wanted?.filter((p) => !reply.artifacts.some((a) => a.path === p)) ?? [];
      if (missing.length > 0) throw new UsageError(`run ${reply.run} has no artifact ${missing.join(', ')}`);
      for (const artifact of chosen) await download(client, reply.run, artifact, path.resolve(flags.download));
      if (globals(command).json) return printJson({ run: reply.run, downloaded: chosen });
      process.stdout.write(`downloaded ${chosen.length} artifacts into ${path.resolve(flags.download)}\n`);
    });
}

/** Streams one artifact to DIR/path through a temp file, checking its sha256 before it takes its name. */
async function download(client: ReturnType<typeof clientFor>, runId: string, artifact: Listed, dir: string): Promise<void> {
  const target = path.join(dir, normaliseArtifactPath(artifact.path));
  mkdirSync(path.dirname(target), { recursive: true });
  const temp = `${target}.kiln-partial`;
  const response = await client.raw('GET', `/api/runs/${runId}/artifacts/${artifact.path.split('/').map(encodeURIComponent).join('/')}`);
  const hash = createHash('sha256');
  const hashing = new Transform({
    transform(chunk: Buffer, _encoding, done) {
      hash.update(chunk);
      done(null, chunk);
    },
  });
  try {
    await pipeline(Readable.fromWeb(response.body as never), hashing, createWriteStream(temp));
    const actual = hash.digest('hex');
    if (actual !== artifact.sha256) throw new Error(`${artifact.path}: downloaded content hashes to ${actual}, not ${artifact.sha256}`);
    chmodSync(temp, artifact.mode);
    renameSync(temp, target);
  } catch (raw) {
    rmSync(temp, { force: true });
    throw raw;
  }
}
