/** A singleton's lease the test gives and takes away, telling its listeners as the lease keeper does. */
import type { Lease } from '../../src/server/cluster/types.js';

export function testLease(name: string): Lease & { set(held: boolean, epoch?: number): void } {
  const listeners = new Set<(held: boolean) => void>();
  const lease = {
    name, held: false, epoch: 0,
    onChange(listener: (held: boolean) => void) {
      listeners.add(listener);
      return () => void listeners.delete(listener);
    },
    set(held: boolean, epoch?: number) {
      lease.held = held;
      if (epoch !== undefined) lease.epoch = epoch;
      for (const listener of [...listeners]) listener(held);
    },
  };
  return lease;
}
