/**
 * The plain sandbox (`--sandbox none`): the job runs as a child process in its own process group,
 * so signals reach its whole tree, within the resource limits the host allows. No isolation of
 * files or network: a job that asks for `--network none` is refused here rather than run open.
 */
import { startJobProcess } from './job-process.js';
import type { LimitSupport } from './resource-limits.js';
import type { Sandbox, SandboxLauncher, SandboxSpec } from './sandbox.js';

/** Runs jobs as plain child processes. */
export class ProcessSandboxLauncher implements SandboxLauncher {
  readonly kind = 'none';

  constructor(private readonly limits: LimitSupport) {}

  describe(): string {
    return `sandbox none (plain process group; network host), ${this.limits.describe()}`;
  }

  async start(spec: SandboxSpec): Promise<Sandbox> {
    if (spec.settings.network === 'none') {
      throw new Error('the job asks for --network none, but this worker runs jobs without a sandbox (--sandbox none); run it on a worker with --sandbox bwrap');
    }
    return startJobProcess(spec.argv, spec, this.limits, { signalFromStatus: false });
  }
}
