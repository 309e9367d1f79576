/**
 * Constants the servers of one PostgreSQL database agree on (notes/issue16-plan.md §2). They are
 * built into SQL text (statements.ts), so every server of a farm must run the same values.
 */

/**
 * How long a server counts as alive after its last heartbeat (ms, on the database's clock). A
 * server heartbeats every 2 s; a server that also lost its presence lock is dead at once.
 */
export const SERVER_TTL_MS = 8000;

/** The first key of a server's presence advisory lock: 'KPRS' (the second is hashtext(server id)). */
export const PRESENCE_LOCK_KEY = 0x4b505253;
