/** The worker's public surface. */
export { WorkerAgent, WorkerExit, type WorkerOptions } from './agent.js';
export { ProcessSandboxLauncher } from './sandbox/process-sandbox.js';
