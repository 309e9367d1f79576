/** What a job asks of the sandbox its runs execute in: resource limits and network. */
import { formatSize } from './size.js';

export const NETWORKS = ['none', 'host'] as const;
/** `none`: no network but a private loopback; `host`: the host's network. */
export type Network = (typeof NETWORKS)[number];

/** A job's sandbox settings; each one absent means "the worker's default". */
export interface JobSandbox {
  /** Most memory the job's processes may use together (bytes). */
  memoryBytes?: number;
  /** Most processes (and threads) the job may have at once. */
  pids?: number;
  /** Most CPU time each of the job's processes may use (seconds). */
  cpuSeconds?: number;
  network?: Network;
}

/** The settings in words, for console headers: `memory 256MB, pids 64, network none`. */
export function describeJobSandbox(sandbox: JobSandbox): string {
  const parts = [
    sandbox.memoryBytes === undefined ? '' : `memory ${formatSize(sandbox.memoryBytes)}`,
    sandbox.pids === undefined ? '' : `pids ${sandbox.pids}`,
    sandbox.cpuSeconds === undefined ? '' : `cpu time ${sandbox.cpuSeconds}s per process`,
    sandbox.network === undefined ? '' : `network ${sandbox.network}`,
  ].filter(Boolean);
  return parts.join(', ');
}
