/** Storage: the JobStore interface and how to open one. */
export * from './job-store.js';
export * from './feed.js';
export { isPostgresUrl, openStore, sqliteStoreFile, type StoreClusterOptions, type StoreLockOptions } from './open-store.js';
