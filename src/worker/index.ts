/** The worker's public surface. */
export { defaultSpoolDir, WorkerAgent, WorkerExit, type WorkerOptions } from './agent.js';
export { ProcessSandboxLauncher } from './sandbox/process-sandbox.js';
export { BwrapSandboxLauncher, checkBwrap, parseBind } from './sandbox/bwrap-sandbox.js';
export { detectLimits } from './sandbox/resource-limits.js';
