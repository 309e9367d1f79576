/** The worker's public surface. */
export { WorkerAgent, WorkerExit, type WorkerOptions } from './agent.js';
export { closeInheritedDescriptors } from './inherited-descriptors.js';
export { makeSpoolDir } from './output-spool.js';
export { ProcessSandboxLauncher } from './sandbox/process-sandbox.js';
export { BwrapSandboxLauncher, checkBwrap, parseBind } from './sandbox/bwrap-sandbox.js';
export { detectLimits } from './sandbox/resource-limits.js';
