/**
 * Singletons on several servers (notes/issue16-plan.md §2.3): each of the scheduler, the reaper,
 * the outbox, artifact retention and each pool's manager acts on one server at a time, the holder
 * of its lease. A component asks the keeper for its lease once, and starts and stops on its
 * changes; it never polls the lease. On SQLite (one server) every lease is held from the start.
 */

/** The singletons' lease names (a pool's is `pool:NAME`). */
export const LEASE = {
  scheduler: 'scheduler',
  reaper: 'reaper',
  outbox: 'outbox',
  retention: 'retention',
  gc: 'gc',
  pool: (name: string) => `pool:${name}`,
} as const;

/** One singleton's lease, as this server sees it. */
export interface Lease {
  readonly name: string;
  /** True while this server holds it (renewed in time). */
  readonly held: boolean;
  /** The fencing token of the current holding: grows at each change of holder (0 on SQLite). */
  readonly epoch: number;
  /**
   * Told on each change, synchronously: a loss is told before this server starts anything more
   * under it. Returns how to stop listening.
   */
  onChange(listener: (held: boolean) => void): () => void;
}

/** Keeps this server's leases: tries for the wanted ones, renews the held ones, lets them go at a clean stop. */
export interface LeaseKeeper {
  /** The lease of `name`, wanted from now on (the same object for the same name). */
  want(name: string): Lease;
  /** The names of the leases held now. */
  held(): string[];
  /** Lets every held lease go (a clean stop): another server takes them at once. */
  stop(): Promise<void>;
}

/** The keeper of a server alone on its store (SQLite): every lease held from the start, epoch 0, never lost. */
export function soloLeases(): LeaseKeeper {
  const leases = new Map<string, Lease>();
  return {
    want(name) {
      let lease = leases.get(name);
      if (!lease) leases.set(name, (lease = { name, held: true, epoch: 0, onChange: () => () => undefined }));
      return lease;
    },
    held: () => [...leases.keys()],
    stop: async () => undefined,
  };
}
