import { test } from 'node:test';
import { Worker } from 'node:worker_threads';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { Memory } from '../src/memory.js';
import { checkRegion } from '../src/recovery/check.js';
import { orderBytes, type Order } from '../src/morsel/order.js';
import { Mmu } from '../src/space/mmu.js';
import { MiB, PAGE_SIZE } from '../src/units.js';
import { freeFrames } from './helpers.js';

const code = (c: string) => (e: unknown) => (e as { code?: string }).code === c;

function bytesAt(m: Memory, id: bigint, offset: number, n: number): Uint8Array {
  const out = new Uint8Array(n);
  m.morsels.read(id, offset, out);
  return out;
}

test('clone shares the subtree; a write to either copy is never seen by the other', () => {
  const m = Memory.volatile(64 * MiB);
  const src = m.morsels.create(2);
  const pages = [0, 1, 511, 512, 100_000];
  for (const p of pages) m.morsels.write(src, p * PAGE_SIZE, Uint8Array.of(p & 0xff, 1));
  const before = m.morsels.stats(src);
  const free = freeFrames(m); // counts the reference-count table's storage as it grows
  const dst = m.morsels.clone(src);
  assert.equal(free - freeFrames(m), 1, 'a clone costs one root frame, whatever the size');
  const c = m.morsels.stats(dst);
  assert.equal(c.dataPages, before.dataPages);
  assert.equal(c.sharedFrames, before.tableFrames - 1 + before.dataPages, 'everything below the root is shared');
  // Write through the source: the clone keeps the old bytes, and vice versa.
  m.morsels.write(src, 0, Uint8Array.of(9, 9));
  m.morsels.write(dst, 512 * PAGE_SIZE, Uint8Array.of(7, 7));
  assert.deepEqual(bytesAt(m, dst, 0, 2), Uint8Array.of(0, 1));
  assert.deepEqual(bytesAt(m, src, 0, 2), Uint8Array.of(9, 9));
  assert.deepEqual(bytesAt(m, src, 512 * PAGE_SIZE, 2), Uint8Array.of(0, 1));
  assert.deepEqual(bytesAt(m, dst, 512 * PAGE_SIZE, 2), Uint8Array.of(7, 7));
  // Unwritten pages are still shared (same bytes, no copy).
  assert.deepEqual(bytesAt(m, dst, 100_000 * PAGE_SIZE, 2), Uint8Array.of(100_000 & 0xff, 1));
  assert.ok(checkRegion(m).ok, JSON.stringify(checkRegion(m).problems));
});

test('destroying one copy frees only what it alone holds; the last owner frees everything', () => {
  const m = Memory.volatile(64 * MiB);
  const start = freeFrames(m);
  const src = m.morsels.create(2);
  m.morsels.populate(src, 0, 4 * MiB);
  const withSrc = freeFrames(m);
  const dst = m.morsels.clone(src);
  m.morsels.write(dst, 0, Uint8Array.of(1)); // copies the path: one level-1 table and one page
  assert.equal(withSrc - freeFrames(m), 3, 'clone root + copied table + copied page');
  m.morsels.destroy(src);
  assert.equal(m.morsels.stats(dst).sharedFrames, 0, 'the survivor holds everything alone');
  assert.deepEqual(bytesAt(m, dst, 0, 1), Uint8Array.of(1));
  m.morsels.destroy(dst);
  assert.equal(freeFrames(m), start);
  assert.equal(m.morsels.cow.refs.stats().entries, 0, 'no count left behind');
  assert.ok(checkRegion(m).ok);
});

test('a page whose count dropped to 1 is reused in place, not copied', () => {
  const m = Memory.volatile(32 * MiB);
  const src = m.morsels.create(1);
  m.morsels.write(src, 0, Uint8Array.of(5));
  const dst = m.morsels.clone(src);
  m.morsels.destroy(dst);
  const free = m.alloc.freeFrames();
  m.morsels.write(src, 0, Uint8Array.of(6));
  assert.equal(m.alloc.freeFrames(), free, 'no frame allocated: the page was reused');
  assert.equal(m.morsels.stats(src).sharedFrames, 0);
  assert.deepEqual(bytesAt(m, src, 0, 1), Uint8Array.of(6));
});

test('MMU: a mapped clone reads shared pages and copies on write; the TLB never serves the old copy', () => {
  const m = Memory.volatile(64 * MiB);
  const space = m.createSpace({ levels: 4 });
  const mmu = new Mmu(space);
  const src = m.morsels.create(1);
  const a = space.map(src);
  mmu.write(a, Uint8Array.of(1, 2, 3));
  assert.equal(mmu.read8(a), 1); // cached writable in the TLB
  const dst = m.morsels.clone(src);
  const b = space.map(dst);
  assert.equal(mmu.read8(b + 1), 2, 'the clone reads through shared tables');
  mmu.write8(a, 42); // must fault (the cached translation lost its write right) and copy
  assert.equal(mmu.counters.cowFaults, 1);
  assert.equal(mmu.read8(a), 42);
  assert.equal(mmu.read8(b), 1, 'the clone keeps its bytes');
  mmu.write8(b + 2, 99);
  assert.equal(mmu.read8(a + 2), 3);
  assert.equal(mmu.read8(b + 2), 99);
  mmu.close();
  space.destroy();
  m.morsels.destroy(src);
  m.morsels.destroy(dst);
  assert.ok(checkRegion(m).ok);
});

test('clone of a read-only mapping target: write faults stay EACCES, nothing copied', () => {
  const m = Memory.volatile(32 * MiB);
  const space = m.createSpace({ levels: 4 });
  const mmu = new Mmu(space);
  const src = m.morsels.create(1);
  m.morsels.write(src, 0, Uint8Array.of(1));
  const dst = m.morsels.clone(src);
  const b = space.map(dst, { rights: { write: false, execute: false } });
  const free = m.alloc.freeFrames();
  assert.throws(() => mmu.write8(b, 1), code('EACCES'));
  assert.equal(m.alloc.freeFrames(), free);
  mmu.close();
});

test('names.clone: rights are the caller\'s, EEXIST / ESTALE / EACCES, and ENOSPC leaks nothing', () => {
  const m = Memory.volatile(16 * MiB);
  const h = m.names.create('/src', { sizeBytes: 3 * MiB });
  m.names.write(h, 0, Uint8Array.of(8));
  const c = m.names.clone('/src', '/copy', { mode: 0o644 });
  assert.equal(m.names.stat('/copy').mode & 0o777, 0o644);
  assert.equal(m.names.stat('/copy').sizeBytes, 3 * MiB);
  assert.deepEqual(m.names.read(c, 0, 1), Uint8Array.of(8));
  assert.throws(() => m.names.clone('/src', '/copy'), code('EEXIST'));
  const ro = m.names.open('/src');
  const roNoRead = Object.assign(Object.create(Object.getPrototypeOf(ro)), ro, { rights: { read: false, write: false, execute: false } });
  assert.throws(() => m.names.clone(roNoRead, '/x'), code('EACCES'));
  m.names.close(ro);
  m.names.close(c);
  m.names.unlink('/copy');
  // Fill the region, then a clone needs one root frame it cannot get.
  const hogs: bigint[] = [];
  try {
    for (;;) hogs.push(m.morsels.create(0));
  } catch (e) {
    assert.ok(code('ENOSPC')(e));
  }
  const free = m.alloc.freeFrames();
  const entries = m.morsels.cow.refs.stats().entries;
  assert.throws(() => m.names.clone(h, '/full'), code('ENOSPC'));
  assert.equal(m.alloc.freeFrames(), free);
  assert.equal(m.morsels.cow.refs.stats().entries, entries, 'counts unchanged');
  assert.throws(() => m.names.stat('/full'), code('ENOENT'));
  for (const id of hogs) m.morsels.destroy(id);
  const gen = h.generation;
  m.names.close(h);
  m.names.unlink('/src');
  assert.throws(() => m.names.clone({ id: h.id, generation: gen }, '/y'), code('ESTALE'));
  assert.throws(() => m.names.clone(h, '/y'), code('EBADF'));
});

/** Model: each copy is a Map page -> byte; writes go to one copy only. */
test('fast-check: clone / write / read / destroy on several copies against a model', () => {
  fc.assert(
    fc.property(
      fc.array(
        fc.oneof(
          fc.record({ op: fc.constant('write' as const), copy: fc.nat(7), page: fc.nat(1023), value: fc.integer({ min: 1, max: 255 }) }),
          fc.record({ op: fc.constant('clone' as const), copy: fc.nat(7) }),
          fc.record({ op: fc.constant('destroy' as const), copy: fc.nat(7) }),
          fc.record({ op: fc.constant('read' as const), copy: fc.nat(7), page: fc.nat(1023) }),
        ),
        { maxLength: 40 },
      ),
      (ops) => {
        const m = Memory.volatile(32 * MiB);
        const start = freeFrames(m);
        const order: Order = 2;
        const live: { id: bigint; model: Map<number, number> }[] = [{ id: m.morsels.create(order), model: new Map() }];
        const pick = (i: number) => live[i % live.length];
        for (const o of ops) {
          if (live.length === 0) live.push({ id: m.morsels.create(order), model: new Map() });
          const c = pick(o.copy);
          const offset = (p: number) => p * 2 * PAGE_SIZE + (p % 7) * 3; // spans several level-1 tables
          if (o.op === 'write') {
            m.morsels.write(c.id, offset(o.page), Uint8Array.of(o.value));
            c.model.set(o.page, o.value);
          } else if (o.op === 'clone') {
            live.push({ id: m.morsels.clone(c.id), model: new Map(c.model) });
          } else if (o.op === 'destroy') {
            m.morsels.destroy(c.id);
            live.splice(live.indexOf(c), 1);
          } else {
            assert.equal(bytesAt(m, c.id, offset(o.page), 1)[0], c.model.get(o.page) ?? 0);
          }
        }
        for (const c of live) for (const [p, v] of c.model) assert.equal(bytesAt(m, c.id, p * 2 * PAGE_SIZE + (p % 7) * 3, 1)[0], v);
        const report = checkRegion(m);
        assert.ok(report.ok, JSON.stringify(report.problems.slice(0, 3)));
        for (const c of live) m.morsels.destroy(c.id);
        assert.equal(freeFrames(m), start, 'every frame back');
        assert.equal(m.morsels.cow.refs.stats().entries, 0);
      },
    ),
    { numRuns: 60 },
  );
  assert.ok(orderBytes(2) > 1023 * 2 * PAGE_SIZE);
});

test('two workers write-faulting the same shared pages at once: one copy wins per table and page, no frame leaked', async () => {
  const m = Memory.volatile(64 * MiB);
  const start = freeFrames(m);
  const pages = 2048; // 4 level-1 tables
  const src = m.morsels.create(2);
  for (let p = 0; p < pages; p++) m.morsels.write(src, p * PAGE_SIZE + 100, Uint8Array.of(p & 0xff));
  const c = m.morsels.clone(src);
  const space = m.createSpace({ levels: 4 });
  const base = space.map(c);
  const barrier = new SharedArrayBuffer(8);
  const workers = [0, 1].map(
    (worker) => new Worker(new URL('./workers/cow-writer.js', import.meta.url), { workerData: { region: m.share(), space: space.share(), base, pages, barrier, worker } }),
  );
  const gate = new Int32Array(barrier);
  while (Atomics.load(gate, 0) < workers.length) await new Promise((r) => setTimeout(r, 1));
  Atomics.store(gate, 1, 1);
  Atomics.notify(gate, 1);
  const results = await Promise.all(workers.map((w) => new Promise<{ cowFaults: number }>((res, rej) => w.once('message', res).once('error', rej))));
  assert.ok(results.reduce((n, r) => n + r.cowFaults, 0) >= pages / 512, 'the writes took copy-on-write faults');
  for (let p = 0; p < pages; p++) {
    const got = bytesAt(m, c, p * PAGE_SIZE, 101);
    assert.deepEqual([got[0], got[1], got[100]], [1, 2, p & 0xff], `page ${p}: both writes and the old byte, in one copy`);
    assert.deepEqual(bytesAt(m, src, p * PAGE_SIZE, 2), Uint8Array.of(0, 0), `page ${p}: the source never sees them`);
  }
  const s = m.morsels.stats(c);
  assert.equal(s.dataPages, pages);
  assert.equal(s.sharedFrames, 0, 'every table and page of the clone is private now');
  assert.equal(m.morsels.stats(src).sharedFrames, 0);
  const report = checkRegion(m);
  assert.ok(report.ok, JSON.stringify(report.problems.slice(0, 3)));
  space.unmap(base);
  space.destroy();
  m.morsels.destroy(c);
  m.morsels.destroy(src);
  assert.equal(freeFrames(m), start, 'losing copies were freed');
});
