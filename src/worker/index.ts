/** The worker's public surface. */
export { defaultSpoolDir, WorkerAgent, WorkerExit, type WorkerOptions } from './agent.js';
export { ProcessSandboxLauncher } from './sandbox/process-sandbox.js';
