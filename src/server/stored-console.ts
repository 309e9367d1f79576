/** A run's whole console read back from the store, page by page (what an upload or an export sends). */
import type { JobStore, StoredLine } from '../store/index.js';

/** Lines read from the store at a time: the memory one reader costs. */
const PAGE = 5000;

/** Every stored line of the run, oldest first, read a page at a time as it is consumed. */
export async function* storedConsole(store: Pick<JobStore, 'readConsole'>, runId: string, pageSize = PAGE): AsyncGenerator<StoredLine> {
  for (let after = -1; ;) {
    const page = await store.readConsole(runId, after, pageSize);
    yield* page;
    if (page.length < pageSize) return;
    after = page.at(-1)!.seq;
  }
}
