/** The worker <-> server protocol, shared by both sides. */
export * from './messages.js';
