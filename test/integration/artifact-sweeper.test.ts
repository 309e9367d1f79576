/**
 * The artifact sweeper on a real SQLite store and a real blob directory: the grace counts from the
 * store's `blobs` table (every server's uploads touch it), not from file times; a re-use racing a
 * sweep wins; blobs stored before the table get their row; the periodic sweep runs only under the
 * retention lease, while a sweep asked for by hand runs anyway. On SQLite, and on PostgreSQL when
 * it is there.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, utimesSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { Readable } from 'node:stream';
import { describe, test, type TestContext } from 'node:test';
import pino from 'pino';
import { DEFAULT_ARTIFACT_LIMITS, DirBlobStore, openBlobStore } from '../../src/server/artifact-store.js';
import { ArtifactSweeper } from '../../src/server/artifact-sweeper.js';
import type { Lease } from '../../src/server/cluster/types.js';
import { openStore, type JobStore } from '../../src/store/index.js';
import { freshSchema } from '../helpers/postgres.js';
import { tempDir } from '../helpers/processes.js';
import { needs } from '../helpers/requirements.js';

const HOUR = 3_600_000;
const log = pino({ level: process.env.KILN_TEST_LOG ?? 'silent' });
const sha = (text: string) => createHash('sha256').update(text).digest('hex');

for (const kind of ['sqlite', 'postgres'] as const) {
  describe(`artifact sweeper on ${kind}`, { skip: kind === 'postgres' ? needs('postgres') : false }, () => {
    /** A store, a blob dir and a clock the test moves (real time plus `offset`, since file times are real). */
    async function setup(t: TestContext, wrap: (store: JobStore) => JobStore = (s) => s) {
      const dataDir = tempDir(t);
      const inner = await openStore(dataDir, kind === 'postgres' ? (await freshSchema(t)).url : undefined);
      t.after(() => inner.close());
      const clock = { offset: 0 };
      const now = () => Date.now() + clock.offset;
      const store = wrap(inner);
      const blobs = (await openBlobStore(undefined, { dataDir, limits: DEFAULT_ARTIFACT_LIMITS, store, now })) as DirBlobStore;
      const put = (content: string) => blobs.put(Readable.from([Buffer.from(content)]), { size: Buffer.byteLength(content), sha256: sha(content) });
      const sweeper = (lease?: Lease) => {
        const made = new ArtifactSweeper(store, blobs, log, { now, settings: { sweepEveryMs: HOUR, graceMs: HOUR }, lease });
        t.after(() => made.stop());
        return made;
      };
      return { dataDir, inner, store, blobs, clock, put, sweeper };
    }

    test('the grace counts from the last upload of a blob on any server, not from its file time', async (t) => {
      const { blobs, clock, put, sweeper } = await setup(t);
      clock.offset = -3 * HOUR;
      await put('old');
      clock.offset = 0;
      await put('reused');
      // Its file says three hours (as a blob stored by another server whose upload only touched the table).
      const past = new Date(Date.now() - 3 * HOUR);
      utimesSync(blobs.blobPath(sha('reused')), past, past);
      clock.offset = HOUR / 2;

      const report = await sweeper().sweep(false);

      assert.deepEqual(report.blobs.map((b) => b.sha256), [sha('old')]);
      assert.ok(!existsSync(blobs.blobPath(sha('old'))));
      assert.ok(existsSync(blobs.blobPath(sha('reused'))), 'a blob used within the grace is kept');
    });

    test('a blob re-used while the sweep deletes it is kept: its row is forgotten before the file goes', async (t) => {
      let reuse = (_sha256s: string[]): Promise<void> => Promise.resolve();
      const { blobs, clock, put, sweeper } = await setup(t, (store) => Object.assign(Object.create(store) as JobStore, {
        // An upload of the same content ends on another server just after this sweep found the blob stale.
        unreferencedBlobs: async (sha256s: string[], ignoring?: string[]) => {
          await reuse(sha256s);
          return store.unreferencedBlobs(sha256s, ignoring);
        },
      }));
      clock.offset = -3 * HOUR;
      await put('popular');
      await put('forgotten');
      clock.offset = 0;
      reuse = async (sha256s) => {
        if (sha256s.includes(sha('popular'))) await put('popular');
      };

      const report = await sweeper().sweep(false);

      assert.deepEqual(report.blobs.map((b) => b.sha256), [sha('forgotten')]);
      assert.ok(existsSync(blobs.blobPath(sha('popular'))), 'the re-use won');
      assert.ok(!existsSync(blobs.blobPath(sha('forgotten'))));
    });

    test('blobs stored before the blobs table get their row at the first sweep, dated by their file', async (t) => {
      const { dataDir, inner, sweeper } = await setup(t);
      const file = (content: string, at: Date) => {
        const where = path.join(dataDir, 'artifacts', sha(content).slice(0, 2), sha(content));
        mkdirSync(path.dirname(where), { recursive: true });
        writeFileSync(where, content);
        utimesSync(where, at, at);
        return where;
      };
      const old = file('from an old server, long unused', new Date(Date.now() - 3 * HOUR));
      const recent = file('from an old server, just used', new Date());

      const report = await sweeper().sweep(false);

      assert.deepEqual(report.blobs, [{ sha256: sha('from an old server, long unused'), bytes: 31 }]);
      assert.ok(!existsSync(old));
      assert.ok(existsSync(recent));
      assert.deepEqual(await inner.staleBlobs(Number.MAX_SAFE_INTEGER, 10), [sha('from an old server, just used')], 'the kept one has its row');
    });

    test('blobs without a row get theirs at the first sweep even when uploads filled the table first, and after a sweep that failed', async (t) => {
      let failing = true;
      const { dataDir, inner, put, sweeper } = await setup(t, (store) => Object.assign(Object.create(store) as JobStore, {
        // The first sweep of this server's life fails (the store unreachable) before its blobs step.
        expiredArtifacts: async (policy: Parameters<JobStore['expiredArtifacts']>[0]) => {
          if (failing) throw new Error('store unreachable');
          return store.expiredArtifacts(policy);
        },
      }));
      // Stored by the server before its upgrade: a file, no row.
      const where = path.join(dataDir, 'artifacts', sha('from before the upgrade').slice(0, 2), sha('from before the upgrade'));
      mkdirSync(path.dirname(where), { recursive: true });
      writeFileSync(where, 'from before the upgrade');
      const past = new Date(Date.now() - 3 * HOUR);
      utimesSync(where, past, past);
      // A run ending right after the restart uploads before any sweep: the table is not empty.
      await put('uploaded since');
      const made = sweeper();
      await assert.rejects(made.sweep(false), /store unreachable/);
      failing = false;

      const report = await made.sweep(false);

      assert.deepEqual(report.blobs, [{ sha256: sha('from before the upgrade'), bytes: 23 }]);
      assert.ok(!existsSync(where));
      assert.deepEqual(await inner.staleBlobs(Number.MAX_SAFE_INTEGER, 10), [sha('uploaded since')]);
    });

    test('a blob stored again by an upload between the sweep forgetting its row and deleting it is kept', async (t) => {
      let reuse = (_sha256: string): Promise<void> => Promise.resolve();
      const { blobs, inner, clock, put, sweeper } = await setup(t, (store) => Object.assign(Object.create(store) as JobStore, {
        // An upload of the same content (on another server) touches the blob just after this sweep forgot its row.
        forgetBlob: async (sha256: string, before: number) => {
          const forgotten = await store.forgetBlob(sha256, before);
          if (forgotten) await reuse(sha256);
          return forgotten;
        },
      }));
      clock.offset = -3 * HOUR;
      await put('popular');
      await put('forgotten');
      clock.offset = 0;
      reuse = async (sha256) => {
        if (sha256 === sha('popular')) await put('popular');
      };

      const report = await sweeper().sweep(false);

      assert.deepEqual(report.blobs.map((b) => b.sha256), [sha('forgotten')]);
      assert.ok(existsSync(blobs.blobPath(sha('popular'))), 'the file the upload renamed in is still there');
      assert.ok(!existsSync(blobs.blobPath(sha('forgotten'))));
      assert.deepEqual(await inner.staleBlobs(Number.MAX_SAFE_INTEGER, 10), [sha('popular')], 'with the row the upload made');
    });

    test('the periodic sweep runs only while the retention lease is held; a sweep by hand runs anyway', async (t) => {
      const { clock, put, sweeper } = await setup(t);
      clock.offset = -3 * HOUR;
      await put('unused');
      clock.offset = 0;
      const listeners: ((held: boolean) => void)[] = [];
      const lease = { name: 'retention', held: false, epoch: 0, onChange: (fn: (held: boolean) => void) => (listeners.push(fn), () => undefined) };
      const retention = sweeper(lease);

      retention.start();
      assert.equal(retention.sweepsStarted, 0, 'no periodic sweep without the lease');
      const byHand = await retention.sweep(true);
      assert.equal(retention.sweepsStarted, 1);
      assert.deepEqual(byHand.blobs.map((b) => b.sha256), [sha('unused')]);

      lease.held = true;
      for (const fn of listeners) fn(true);
      assert.equal(retention.sweepsStarted, 2, 'the lease gained: the periodic sweep runs at once');
    });
  });
}
