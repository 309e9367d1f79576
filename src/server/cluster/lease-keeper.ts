/**
 * The lease keeper of a server on a PostgreSQL schema that several servers share
 * (notes/issue16-plan.md §2.3). A lease is a row (`leases`) with a holder, an epoch (the fencing
 * token: it grows at each change of holder) and a deadline on the database's clock. The presence
 * tick (store/postgres/presence.ts) renews the leases held every 2 s for the TTL (8 s); the keeper
 * tries for the leases wanted and not held after each tick, and at once when another server lets
 * one go (`lease.released`) or leaves (`server.left`).
 *
 * A lease is lost when the renewal does not return it, when presence is lost, or when the local
 * deadline passes (the last renewal sent + TTL - 2 s, on the monotonic clock) with no renewal
 * since: the keeper then says so first, synchronously, so the singleton stops before another server
 * can have it. At a clean stop the leases are let go in the database and announced on the feed, so
 * another server takes them at once instead of after the TTL.
 */
import { performance } from 'node:perf_hooks';
import type { Logger } from 'pino';
import { coerceError } from '../../errors.js';
// Types only: the PostgreSQL driver is loaded only for a PostgreSQL store.
import type { LeaseTicker, Presence } from '../../store/postgres/presence.js';
import type { EventBus } from '../events.js';
import type { Lease, LeaseKeeper } from './types.js';

/** What the keeper needs of the presence. */
export type LeasePresence = Pick<Presence, 'held' | 'leaseTtlMs' | 'leaseMarginMs' | 'acquireLease' | 'releaseLeases' | 'attach'>;

/** Options of the PostgreSQL lease keeper. */
export interface PgLeaseKeeperOptions {
  presence: LeasePresence;
  log: Pick<Logger, 'info' | 'warn'>;
  /** The bus: remote `lease.released` and `server.left` make the keeper try at once. */
  events?: EventBus;
}

class HeldLease implements Lease {
  held = false;
  epoch = 0;
  /** performance.now() when the statement that last took or renewed it was sent. */
  renewedAt = 0;
  trying = false;
  private readonly listeners = new Set<(held: boolean) => void>();

  constructor(readonly name: string, private readonly log: PgLeaseKeeperOptions['log']) {}

  onChange(listener: (held: boolean) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Sets `held` and tells every listener, synchronously; a listener's throw is logged. */
  change(held: boolean): void {
    if (this.held === held) return;
    this.held = held;
    for (const listener of [...this.listeners]) {
      try {
        listener(held);
      } catch (raw) {
        this.log.warn({ err: coerceError(raw).message, lease: this.name }, 'a lease listener failed');
      }
    }
  }
}

/** The lease keeper on PostgreSQL; plugs itself into the presence tick. */
export class PgLeaseKeeper implements LeaseKeeper, LeaseTicker {
  private readonly leases = new Map<string, HeldLease>();
  private readonly presence: LeasePresence;
  private readonly ttlMs: number;
  private readonly marginMs: number;
  private deadline: NodeJS.Timeout | undefined;
  private stopped = false;
  private readonly unsubscribe: (() => void)[] = [];

  constructor(private readonly options: PgLeaseKeeperOptions) {
    this.presence = options.presence;
    this.ttlMs = options.presence.leaseTtlMs;
    this.marginMs = options.presence.leaseMarginMs;
    this.presence.attach(this);
    const { events } = options;
    if (events) {
      this.unsubscribe.push(events.on('lease.released', ({ name, remote }) => {
        const lease = this.leases.get(name);
        if (remote && lease) void this.tryOne(lease);
      }));
      this.unsubscribe.push(events.on('server.left', ({ remote }) => remote && this.afterTick()));
    }
  }

  want(name: string): Lease {
    let lease = this.leases.get(name);
    if (!lease) {
      this.leases.set(name, (lease = new HeldLease(name, this.options.log)));
      void this.tryOne(lease);
    }
    return lease;
  }

  held(): string[] {
    return [...this.leases.values()].filter((lease) => lease.held).map((lease) => lease.name);
  }

  renewing(): string[] {
    return this.held();
  }

  renewed(sent: string[], rows: { name: string; epoch: number }[], sentAt: number): void {
    const back = new Map(rows.map((row) => [row.name, row.epoch]));
    for (const name of sent) {
      const lease = this.leases.get(name);
      // Lost meanwhile (and maybe taken again since, under a new epoch): this answer says nothing of it.
      if (!lease?.held || lease.renewedAt > sentAt) continue;
      // Not renewed, or renewed under another epoch (taken over and back meanwhile): lost, told at once.
      if (back.get(lease.name) !== lease.epoch) this.lose(lease, 'its renewal did not return it');
      else lease.renewedAt = Math.max(lease.renewedAt, sentAt);
    }
    this.arm();
  }

  loseAll(): void {
    for (const lease of this.leases.values()) if (lease.held) this.lose(lease, "this server's presence was lost");
    clearTimeout(this.deadline);
  }

  afterTick(): void {
    for (const lease of this.leases.values()) if (!lease.held) void this.tryOne(lease);
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    for (const off of this.unsubscribe) off();
    clearTimeout(this.deadline);
    const names = this.held();
    // Told first: the singletons stop before another server can take their leases.
    for (const name of names) this.leases.get(name)!.change(false);
    // Each let go is announced on the feed (`lease.released`) by its own statement, at its commit.
    try {
      await this.presence.releaseLeases(names);
    } catch (raw) {
      this.options.log.warn({ err: coerceError(raw).message, leases: names }, 'could not let the leases go at stop; they expire after their TTL');
    }
  }

  /** One try for a lease not held. */
  private async tryOne(lease: HeldLease): Promise<void> {
    if (this.stopped || lease.held || lease.trying || !this.presence.held) return;
    lease.trying = true;
    const sentAt = performance.now();
    try {
      const epoch = await this.presence.acquireLease(lease.name);
      if (epoch === undefined || this.stopped || !this.presence.held || lease.held) return;
      lease.epoch = epoch;
      lease.renewedAt = sentAt;
      this.options.log.info({ lease: lease.name, epoch }, 'lease taken');
      lease.change(true);
      this.arm();
    } catch (raw) {
      this.options.log.warn({ err: coerceError(raw).message, lease: lease.name }, 'could not try for a lease; trying again at the next tick');
    } finally {
      lease.trying = false;
    }
  }

  private lose(lease: HeldLease, why: string): void {
    this.options.log.warn({ lease: lease.name, epoch: lease.epoch, why }, 'lease lost');
    lease.change(false);
  }

  /** Arms the local deadline of the lease renewed longest ago. */
  private arm(): void {
    clearTimeout(this.deadline);
    const held = [...this.leases.values()].filter((lease) => lease.held);
    if (held.length === 0 || this.stopped) return;
    const oldest = Math.min(...held.map((lease) => lease.renewedAt));
    const wait = Math.max(0, oldest + this.ttlMs - this.marginMs - performance.now());
    this.deadline = setTimeout(() => {
      const now = performance.now();
      for (const lease of held) if (lease.held && lease.renewedAt + this.ttlMs - this.marginMs <= now) this.lose(lease, 'not renewed in time');
      this.arm();
    }, wait);
    this.deadline.unref();
  }
}
