/** The domain: pure types and rules, no I/O. */
export * from './duration.js';
export * from './schedule.js';
export * from './run.js';
export * from './job.js';
export * from './template.js';
export * from './artifact.js';
export * from './size.js';
export * from './sandbox.js';
export * from './worker-identity.js';
export * from './backoff.js';
export * from './overlap.js';
export * from './retry.js';
export * from './claim.js';
export * from './pool-plan.js';
export * from './reattach.js';
export * from './roles.js';
export * from './tls-failure.js';
