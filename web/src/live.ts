/**
 * The page's one subscription to the farm's events (`GET /api/events`), shared by every view, and
 * `useLive`: data that is read once, then read again when an event says it changed. No polling.
 */
import { useEffect, useRef, useState } from 'preact/hooks';
import { followFarm } from './api.js';

/** An event of the farm's stream. */
export type FarmEvent = { type: string } & Record<string, any>;

const listeners = new Set<(event: FarmEvent) => void>();
let controller: AbortController | undefined;

/** Starts following the farm (after sign-in). */
export function startLive(): void {
  stopLive();
  controller = new AbortController();
  followFarm((event) => {
    for (const listener of [...listeners]) listener(event);
  }, controller.signal);
}

/** Stops following (at sign-out). */
export function stopLive(): void {
  controller?.abort();
  controller = undefined;
}

/** Calls `listener` with each farm event while the component is mounted. */
export function useFarmEvents(listener: (event: FarmEvent) => void): void {
  const latest = useRef(listener);
  latest.current = listener;
  useEffect(() => {
    const forward = (event: FarmEvent) => latest.current(event);
    listeners.add(forward);
    return () => void listeners.delete(forward);
  }, []);
}

/** What useLive holds. */
export interface Live<T> {
  data: T | undefined;
  error: string | undefined;
  /** Reads again now (after an action). */
  reload: () => void;
}

/**
 * `load()`'s result, read at mount and when `deps` change, and again after each farm event that
 * `affects` (default: every one; `hello` and `resync` always: the stream was (re)connected or missed
 * events). Events close together cause one read: a read in flight is followed by one more at most.
 */
export function useLive<T>(load: () => Promise<T>, deps: unknown[], affects: (event: FarmEvent) => boolean = () => true): Live<T> {
  const [data, setData] = useState<T | undefined>(undefined);
  const [error, setError] = useState<string | undefined>(undefined);
  const state = useRef({ loading: false, again: false, alive: true, generation: 0 });
  const loader = useRef(load);
  loader.current = load;

  const read = () => {
    const s = state.current;
    if (s.loading) {
      s.again = true;
      return;
    }
    s.loading = true;
    const generation = s.generation;
    loader.current().then(
      (value) => {
        if (s.alive && generation === s.generation) {
          setData(value);
          setError(undefined);
        }
      },
      (raw: Error) => s.alive && generation === s.generation && setError(raw.message),
    ).finally(() => {
      s.loading = false;
      if (s.again && s.alive) {
        s.again = false;
        read();
      }
    });
  };

  useEffect(() => {
    state.current.alive = true;
    state.current.generation += 1;
    state.current.loading = false;
    read();
    return () => {
      state.current.alive = false;
    };
  }, deps);

  useFarmEvents((event) => {
    if (event.type === 'keepalive') return;
    if (event.type === 'hello' || event.type === 'resync' || affects(event)) read();
  });
  return { data, error, reload: read };
}
