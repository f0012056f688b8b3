/**
 * 2 MiB leaves inside morsels (PS entries of level-2 tables, order-9
 * frames): a model test mixing 4 KiB and 2 MiB leaves, the 4 KiB fallback,
 * two threads racing for one leaf, copy-on-write of leaves, the scanner's
 * view of bad PS entries, and crashes with live and half-linked leaves.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import fc from 'fast-check';
import { Memory } from '../src/memory.js';
import { decodeIdBits } from '../src/morsel/id.js';
import { orderBytes, type Order } from '../src/morsel/order.js';
import { Mmu } from '../src/space/mmu.js';
import { checkRegion } from '../src/recovery/check.js';
import { HUGE_ALLOC_ORDER, HUGE_FRAMES } from '../src/paging/walk.js';
import { HUGE_LEAF_FLAGS, PS, isHugeLeaf, isPresent, makeHi, makeLo, pfnOf } from '../src/paging/entry.js';
import { ROOT_SLOT_LIVE_TABLE } from '../src/physical/superblock.js';
import { isMorselError } from '../src/errors.js';
import { MiB, PAGE_SIZE, type Frame } from '../src/units.js';
import { freeFrames, takeAll, tempDir } from './helpers.js';

const LEAF_BYTES = HUGE_FRAMES * PAGE_SIZE;
const dir = tempDir('morsel-huge-');
let seq = 0;
const fresh = (): string => path.join(dir, `h${seq++}.region`);
const code = (c: string) => (e: unknown) => isMorselError(e) && e.code === c;
const codes = (m: Memory): string[] => checkRegion(m).problems.map((p) => p.code);
const bytesAt = (m: Memory, id: bigint, off: number, n: number): Uint8Array => {
  const out = new Uint8Array(n);
  m.morsels.read(id, off, out);
  return out;
};

/**
 * The model: per morsel, its bytes (sparse) and, per 2 MiB range ever
 * populated, whether it holds a leaf ('leaf') or a level-1 table ('table').
 * Offsets fall in a few 2 MiB ranges per morsel (SLOTS, spread over its
 * size), sometimes crossing into the next range.
 */
const SLOTS = 3;
type Kind = 'leaf' | 'table';
interface Modelled {
  id: bigint;
  order: Order;
  huge: boolean;
  base: number;
  bytes: Map<number, number>;
  ranges: Map<number, Kind>;
}

/** A byte offset in slot `slot` of a morsel of `order`, `inner` bytes into it (clipped to the morsel). */
function offsetIn(order: Order, slot: number, inner: number): number {
  const stride = Math.floor(orderBytes(order) / SLOTS / LEAF_BYTES) * LEAF_BYTES;
  return Math.min((slot % SLOTS) * stride + inner, orderBytes(order) - 1);
}

/** Records that [off, off + len) was populated: a range's kind is fixed by the first population. */
function touched(m: Modelled, off: number, len: number, kind: Kind): void {
  for (let r = Math.floor(off / LEAF_BYTES); r <= Math.floor((off + len - 1) / LEAF_BYTES); r++) if (!m.ranges.has(r)) m.ranges.set(r, kind);
}

test('fast-check: mixed 4 KiB / 2 MiB leaves agree with a model; everything comes back after destroy', () => {
  const slot = fc.record({ slot: fc.nat(SLOTS - 1), inner: fc.integer({ min: 0, max: LEAF_BYTES + 8192 }) });
  const op = fc.oneof(
    fc.record({ k: fc.constant('create' as const), order: fc.constantFrom<Order>(2, 3), huge: fc.boolean() }),
    fc.record({ k: fc.constant('write8' as const), m: fc.nat(), at: slot, v: fc.integer({ min: 0, max: 255 }) }),
    fc.record({ k: fc.constant('write32' as const), m: fc.nat(), at: slot, v: fc.integer() }),
    fc.record({ k: fc.constant('write' as const), m: fc.nat(), at: slot, data: fc.uint8Array({ minLength: 1, maxLength: 9000 }) }),
    fc.record({ k: fc.constant('pwrite' as const), m: fc.nat(), at: slot, data: fc.uint8Array({ minLength: 1, maxLength: 9000 }) }),
    fc.record({ k: fc.constant('populate' as const), m: fc.nat(), at: slot, len: fc.integer({ min: 1, max: LEAF_BYTES + 4096 }) }),
    // One 4 KiB page through the fault handler without the policy: a level-1 table in a huge morsel's level-2 entry.
    fc.record({ k: fc.constant('small' as const), m: fc.nat(), at: slot }),
    fc.record({ k: fc.constant('read' as const), m: fc.nat(), at: slot, len: fc.integer({ min: 1, max: 9000 }) }),
    fc.record({ k: fc.constant('clone' as const), m: fc.nat() }),
    fc.record({ k: fc.constant('destroy' as const), m: fc.nat() }),
  );
  let leavesSeen = 0;
  let mixedSeen = 0; // huge morsels holding leaves and 4 KiB tables at once
  fc.assert(
    fc.property(fc.array(op, { maxLength: 40 }), (ops) => {
      // 4 morsels x 3 ranges x 2 leaves (a crossing write) x 2 MiB fit with room for tables.
      const mem = Memory.volatile(128 * MiB);
      const start = freeFrames(mem);
      const space = mem.createSpace({ levels: 4 });
      const mmu = new Mmu(space);
      const live: Modelled[] = [];
      const adopt = (id: bigint, order: Order, huge: boolean, bytes = new Map<number, number>(), ranges = new Map<number, Kind>()): void => {
        live.push({ id, order, huge, base: space.map(id), bytes, ranges });
      };
      // Every run starts with a huge morsel whose first range already holds a 4 KiB table (as the
      // fallback leaves one) and a 4 KiB morsel, so most runs mix both kinds of leaves.
      adopt(mem.morsels.create(2, { huge: true }), 2, true);
      mem.morsels.populateFrom(decodeIdBits(live[0].id).rootFrame, 2, 0, false);
      touched(live[0], 0, 1, 'table');
      adopt(mem.morsels.create(3), 3, false);
      for (const o of ops) {
        if (o.k === 'create') {
          if (live.length < 4) adopt(mem.morsels.create(o.order, { huge: o.huge }), o.order, o.huge);
          continue;
        }
        if (live.length === 0) continue;
        const m = live[o.m % live.length];
        const size = orderBytes(m.order);
        const off = 'at' in o ? offsetIn(m.order, o.at.slot, o.at.inner) : 0;
        const kind: Kind = m.huge ? 'leaf' : 'table';
        const put = (data: Uint8Array): void => {
          data.forEach((b, i) => m.bytes.set(off + i, b));
          touched(m, off, data.length, kind);
        };
        switch (o.k) {
          case 'write8':
            mmu.write8(m.base + off, o.v);
            put(Uint8Array.of(o.v));
            break;
          case 'write32': {
            const at = off - (off % 4); // (not & ~3: offsets pass 2^32)
            mmu.write32(m.base + at, o.v);
            new Uint8Array(Int32Array.of(o.v).buffer).forEach((x, i) => m.bytes.set(at + i, x)); // little-endian, as x86
            touched(m, at, 4, kind);
            break;
          }
          case 'write':
          case 'pwrite': {
            const data = o.data.subarray(0, Math.min(o.data.length, size - off));
            if (o.k === 'write') mmu.write(m.base + off, data);
            else mem.morsels.write(m.id, off, data);
            put(data);
            break;
          }
          case 'populate': {
            const len = Math.min(o.len, size - off);
            mem.morsels.populate(m.id, off, len);
            touched(m, off, len, kind);
            break;
          }
          case 'small': {
            const root = decodeIdBits(m.id).rootFrame;
            mem.morsels.populateFrom(root, m.order, off, false);
            touched(m, off, 1, 'table');
            break;
          }
          case 'read': {
            const len = Math.min(o.len, size - off);
            const got = new Uint8Array(len);
            mmu.read(m.base + off, got);
            for (let i = 0; i < len; i++) assert.equal(got[i], m.bytes.get(off + i) ?? 0, `byte ${off + i}`);
            assert.deepEqual(bytesAt(mem, m.id, off, len), got, 'pread agrees with the MMU');
            break;
          }
          case 'clone':
            if (live.length < 4) adopt(mem.morsels.clone(m.id), m.order, m.huge, new Map(m.bytes), new Map(m.ranges));
            break;
          case 'destroy':
            space.unmap(m.base);
            mem.morsels.destroy(m.id);
            live.splice(live.indexOf(m), 1);
            break;
        }
      }
      for (const m of live) {
        const s = mem.morsels.stats(m.id);
        const leaves = [...m.ranges.values()].filter((k) => k === 'leaf').length;
        assert.equal(s.hugeLeaves, leaves, 'one leaf per 2 MiB range first populated under the huge policy');
        leavesSeen += leaves;
        if (leaves > 0 && leaves < m.ranges.size) mixedSeen++;
        assert.ok(s.dataPages >= leaves * HUGE_FRAMES);
        for (const [off, b] of m.bytes) assert.equal(mmu.read8(m.base + off), b);
      }
      const report = checkRegion(mem);
      assert.ok(report.ok, JSON.stringify(report.problems.slice(0, 3)));
      for (const m of live) {
        space.unmap(m.base);
        mem.morsels.destroy(m.id);
      }
      space.destroy();
      assert.equal(freeFrames(mem), start, 'every frame came back');
      assert.equal(checkRegion(mem).ok, true);
    }),
    { numRuns: 100 },
  );
  assert.ok(leavesSeen > 0 && mixedSeen > 0, `the runs built leaves (${leavesSeen}) and mixed morsels (${mixedSeen})`);
});

test('a huge morsel whose level-2 entry already holds a 4 KiB table keeps using it; other ranges get leaves', () => {
  const m = Memory.volatile(32 * MiB);
  const start = freeFrames(m);
  const id = m.morsels.create(2, { huge: true });
  m.morsels.populateFrom(decodeIdBits(id).rootFrame, 2, 3 * PAGE_SIZE, false); // a table, as the fallback leaves one
  const space = m.createSpace({ levels: 4 });
  const mmu = new Mmu(space);
  const base = space.map(id);
  mmu.write8(base + 9 * PAGE_SIZE + 1, 11);
  m.morsels.write(id, 100 * PAGE_SIZE, Uint8Array.of(12));
  let s = m.morsels.stats(id);
  assert.deepEqual([s.hugeLeaves, s.dataPages, s.tableFrames], [0, 3, 2], 'range 0 stays a level-1 table with 4 KiB pages');
  mmu.write8(base + LEAF_BYTES + 5, 13);
  s = m.morsels.stats(id);
  assert.deepEqual([s.hugeLeaves, s.dataPages, s.tableFrames], [1, 3 + HUGE_FRAMES, 2], 'range 1 is a leaf');
  assert.deepEqual([mmu.read8(base + 9 * PAGE_SIZE + 1), mmu.read8(base + 100 * PAGE_SIZE), mmu.read8(base + LEAF_BYTES + 5)], [11, 12, 13]);
  space.unmap(base);
  space.destroy();
  m.morsels.destroy(id);
  assert.equal(freeFrames(m), start);
});

test('fallback: with no order-9 frame free a huge morsel populates 4 KiB pages; once one is free the next range is a leaf', () => {
  const m = Memory.volatile(64 * MiB);
  const start = freeFrames(m);
  const id = m.morsels.create(2, { huge: true });
  const held = takeAll(m.alloc, HUGE_ALLOC_ORDER, 64);
  assert.ok(held.length > 0 && held.length < 64, `took ${held.length} order-9 frames, then ENOSPC`);
  const data = Uint8Array.from({ length: 3 * PAGE_SIZE }, (_, i) => (i * 13) & 0xff);
  m.morsels.write(id, PAGE_SIZE + 7, data);
  let s = m.morsels.stats(id);
  assert.deepEqual([s.hugeLeaves, s.dataPages], [0, 4], '4 KiB pages, not a leaf');
  assert.deepEqual(bytesAt(m, id, PAGE_SIZE + 7, data.length), data);
  for (const f of held) m.alloc.free(f, HUGE_ALLOC_ORDER);
  m.morsels.write(id, 200 * PAGE_SIZE, Uint8Array.of(1)); // same range: its table stays
  assert.equal(m.morsels.stats(id).hugeLeaves, 0);
  m.morsels.write(id, 2 * LEAF_BYTES, Uint8Array.of(2));
  s = m.morsels.stats(id);
  assert.deepEqual([s.hugeLeaves, s.dataPages], [1, 5 + HUGE_FRAMES]);
  assert.deepEqual(bytesAt(m, id, PAGE_SIZE + 7, data.length), data);
  assert.equal(checkRegion(m).ok, true);
  m.morsels.destroy(id);
  assert.equal(freeFrames(m), start);
});

test('two workers racing to populate the same 2 MiB leaves: one leaf each, both writes seen, no frame leaked', async () => {
  const m = Memory.volatile(64 * MiB);
  const before = freeFrames(m);
  const id = m.morsels.create(2, { huge: true });
  const space = m.createSpace({ levels: 4 });
  const base = space.map(id);
  const start = freeFrames(m);
  const leaves = 6;
  const barrier = new SharedArrayBuffer(4);
  const workers = [0, 1].map(
    (worker) => new Worker(new URL('./workers/huge-racer.js', import.meta.url), { workerData: { region: m.share(), space: space.share(), id, base, leaves, barrier, worker } }),
  );
  await Promise.all(workers.map((w) => new Promise((res, rej) => w.once('message', res).once('error', rej))));
  const s = m.morsels.stats(id);
  assert.deepEqual([s.hugeLeaves, s.dataPages, s.tableFrames], [leaves, leaves * HUGE_FRAMES, 1], 'exactly one leaf per range, no table');
  assert.equal(start - freeFrames(m), leaves * HUGE_FRAMES, 'the losers gave their order-9 frames back');
  for (let leaf = 0; leaf < leaves; leaf++) {
    for (let p = 0; p < HUGE_FRAMES; p++) {
      assert.deepEqual([...bytesAt(m, id, leaf * LEAF_BYTES + p * PAGE_SIZE, 2)], [1, 2], `leaf ${leaf} page ${p}: both writes in one leaf`);
    }
  }
  assert.equal(checkRegion(m).ok, true);
  space.unmap(base);
  space.destroy();
  m.morsels.destroy(id);
  assert.equal(freeFrames(m), before, 'every frame back');
});

test('copy-on-write of leaves: each copy sees its own bytes, a leaf with count 1 is reused in place, all frames come back', () => {
  const m = Memory.volatile(64 * MiB);
  const start = freeFrames(m);
  const src = m.morsels.create(2, { huge: true });
  m.morsels.write(src, 10, Uint8Array.of(1));
  m.morsels.write(src, LEAF_BYTES + 10, Uint8Array.of(2));
  const c = m.morsels.clone(src);
  assert.equal(m.morsels.stats(c).hugeLeaves, 2);
  assert.equal(m.morsels.stats(c).sharedFrames, 2 * HUGE_FRAMES, 'both leaves shared');
  const s1 = m.createSpace({ levels: 4 });
  const s2 = m.createSpace({ levels: 4 });
  const a = s1.map(src);
  const b = s2.map(c);
  const mmuA = new Mmu(s1);
  const mmuB = new Mmu(s2);
  const shared = freeFrames(m);
  mmuB.write8(b + 10, 9); // the clone copies leaf 0
  assert.equal(shared - freeFrames(m), HUGE_FRAMES, 'one order-9 copy');
  mmuA.write8(a + 11, 8); // the source's leaf 0 now has count 1: reused in place
  assert.equal(shared - freeFrames(m), HUGE_FRAMES, 'no second copy');
  assert.deepEqual([mmuA.read8(a + 10), mmuA.read8(a + 11), mmuB.read8(b + 10), mmuB.read8(b + 11)], [1, 8, 9, 0]);
  assert.deepEqual([mmuA.read8(a + LEAF_BYTES + 10), mmuB.read8(b + LEAF_BYTES + 10)], [2, 2]);
  s2.unmap(b);
  m.morsels.destroy(c);
  const alone = freeFrames(m);
  mmuA.write8(a + LEAF_BYTES + 11, 7); // leaf 1's clone reference is gone: reused, not copied
  assert.equal(freeFrames(m), alone, 'no copy after the clone is destroyed');
  assert.equal(m.morsels.stats(src).sharedFrames, 0);
  assert.deepEqual([mmuA.read8(a + LEAF_BYTES + 10), mmuA.read8(a + LEAF_BYTES + 11)], [2, 7]);
  assert.equal(checkRegion(m).ok, true);
  s1.unmap(a);
  s1.destroy();
  s2.destroy();
  m.morsels.destroy(src);
  assert.equal(freeFrames(m), start);
  assert.equal(m.morsels.cow.refs.stats().entries, 0);
});

test('scanner: a misaligned PS leaf, PS in a level-1 table and PS in a registry table are reported, never followed as leaves', () => {
  const m = Memory.volatile(32 * MiB);
  const region = m.region;
  const hugeId = m.morsels.create(2, { huge: true });
  m.morsels.populate(hugeId, 0, LEAF_BYTES); // a zero leaf at root[0]
  const root = decodeIdBits(hugeId).rootFrame;
  const lo = region.loadLo(root, 0);
  const hi = region.loadHi(root, 0);
  assert.ok(isHugeLeaf(lo));
  const leaf = pfnOf(lo, hi);
  assert.equal(leaf % HUGE_FRAMES, 0);
  assert.equal(checkRegion(m).ok, true);
  // Misaligned: one frame past the block.
  region.storeEntry(root, 0, makeLo(leaf + 1, HUGE_LEAF_FLAGS), makeHi(leaf + 1, 0));
  let r = checkRegion(m);
  assert.ok(r.problems.some((p) => p.code === 'ENTRY_PS'), JSON.stringify(r.problems));
  assert.equal(r.lostFrames, HUGE_FRAMES - 1, 'only the one frame is followed, not a 2 MiB leaf');
  const space = m.createSpace({ levels: 4 });
  const base = space.map(hugeId);
  assert.throws(() => new Mmu(space).read8(base), code('ECORRUPT'), 'the MMU refuses it too');
  space.unmap(base);
  region.storeEntry(root, 0, lo, hi);
  assert.equal(checkRegion(m).ok, true);

  // PS in a level-1 table (a 4 KiB morsel page's entry).
  const small = m.morsels.create(2);
  m.morsels.write(small, 0, Uint8Array.of(1));
  const table = pfnOf(region.loadLo(decodeIdBits(small).rootFrame, 0), region.loadHi(decodeIdBits(small).rootFrame, 0)) as Frame;
  const plo = region.loadLo(table, 0);
  region.storeEntry(table, 0, plo | PS, region.loadHi(table, 0));
  r = checkRegion(m);
  assert.deepEqual(r.problems.map((p) => p.code), ['ENTRY_PS']);
  assert.equal(r.lostFrames, 0, 'its one page is still followed');
  region.storeEntry(table, 0, plo, region.loadHi(table, 0));

  // PS in the live-morsel registry's top table.
  const top = Number(region.loadRoot(ROOT_SLOT_LIVE_TABLE)) as Frame;
  let idx = 0;
  while (!isPresent(region.loadLo(top, idx))) idx++;
  const rlo = region.loadLo(top, idx);
  region.storeEntry(top, idx, rlo | PS, region.loadHi(top, idx));
  assert.ok(codes(m).some((c) => c === 'ENTRY_PS' || c === 'ENTRY_FLAGS'), JSON.stringify(checkRegion(m).problems));
  assert.equal(checkRegion(m).lostFrames, 0);
  region.storeEntry(top, idx, rlo, region.loadHi(top, idx));
  assert.equal(checkRegion(m).ok, true);
});

/** Runs an ESM snippet in a fresh process with `Memory` imported, a crash point armed. */
function child(body: string, crashAt: string) {
  const dist = (rel: string): string => fileURLToPath(new URL(rel, import.meta.url));
  const src = `import { Memory } from ${JSON.stringify(dist('../src/memory.js'))};\n${body}`;
  return spawnSync(process.execPath, ['--input-type=module', '-e', src], { encoding: 'utf8', env: { ...process.env, MORSEL_CRASH_AT: crashAt } });
}

test('recovery after a crash with live leaves keeps them: data intact, nothing lost, check clean', () => {
  const file = fresh();
  const m = Memory.create(file, 64 * MiB);
  const id = m.morsels.create(3, { huge: true });
  m.morsels.populate(id, 0, 4 * LEAF_BYTES);
  m.morsels.write(id, 3 * LEAF_BYTES + 5, Uint8Array.of(7, 8, 9));
  const c = m.morsels.clone(id); // shared leaves too
  m.morsels.write(c, 5, Uint8Array.of(4));
  m.alloc.release(); // this thread's reserved tree back, as recovery.test does: a reserved tree counts as in transit
  let lazyTables = 0; // the lazy-clone registry goes with the counts (recovery rebuilds neither from it)
  m.morsels.cow.lazy.forEachTable(() => lazyTables++);
  const used = m.alloc.freeFrames() + lazyTables;
  m.abandon();
  const r = Memory.open(file);
  try {
    assert.equal(r.report?.crashed, true);
    assert.equal(r.report?.reclaimedFrames, 0);
    assert.equal(r.alloc.freeFrames(), used);
    assert.deepEqual([...bytesAt(r, id, 3 * LEAF_BYTES + 5, 3)], [7, 8, 9]);
    assert.deepEqual([bytesAt(r, id, 5, 1)[0], bytesAt(r, c, 5, 1)[0], bytesAt(r, c, 3 * LEAF_BYTES + 6, 1)[0]], [0, 4, 8]);
    assert.deepEqual([r.morsels.stats(id).hugeLeaves, r.morsels.stats(c).hugeLeaves], [4, 4]);
    const report = checkRegion(r);
    assert.ok(report.ok && report.lostFrames === 0, JSON.stringify(report.problems));
    r.morsels.destroy(c);
    r.morsels.destroy(id);
    assert.equal(checkRegion(r).ok, true);
    // The leaves' blocks are order-9 blocks again: they can be allocated as such.
    const f = r.alloc.alloc(HUGE_ALLOC_ORDER);
    r.alloc.free(f, HUGE_ALLOC_ORDER);
  } finally {
    r.close();
  }
});

test('a crash between the order-9 allocation and the leaf CAS (huge:before-link) is recovered: 0 lost frames, check clean', () => {
  const file = fresh();
  const out = child(
    `const m = Memory.create(${JSON.stringify(file)}, 64 * 1024 * 1024);
     const id = m.morsels.create(2, { huge: true });
     m.morsels.write(id, 4096, Uint8Array.of(1)); // first leaf: linked
     console.log(String(id));
     m.morsels.write(id, 3 * 2 * 1024 * 1024, Uint8Array.of(2)); // second leaf: dies before its CAS
     console.log('not reached');`,
    'huge:before-link:2',
  );
  assert.equal(out.signal, 'SIGKILL', out.stderr);
  assert.doesNotMatch(out.stdout, /not reached/);
  const id = BigInt(out.stdout.trim());
  const r = Memory.open(file);
  try {
    assert.equal(r.report?.crashed, true);
    assert.ok((r.report?.reclaimedFrames ?? 0) >= HUGE_FRAMES, `the unlinked block was reclaimed: ${JSON.stringify(r.report)}`);
    const report = checkRegion(r);
    assert.ok(report.ok && report.lostFrames === 0, JSON.stringify(report.problems));
    assert.deepEqual([r.morsels.stats(id).hugeLeaves, bytesAt(r, id, 4096, 1)[0], bytesAt(r, id, 3 * LEAF_BYTES, 1)[0]], [1, 1, 0]);
    r.morsels.write(id, 3 * LEAF_BYTES, Uint8Array.of(2)); // the range can be populated again
    assert.equal(r.morsels.stats(id).hugeLeaves, 2);
    r.morsels.destroy(id);
    assert.equal(checkRegion(r).ok, true);
  } finally {
    r.close();
  }
});

test('{ huge: true } needs order >= 2: EINVAL on orders 0 and 1, nothing allocated', () => {
  const m = Memory.volatile(8 * MiB);
  const start = freeFrames(m);
  for (const order of [0, 1] as const) {
    assert.throws(() => m.morsels.create(order, { huge: true }), code('EINVAL'));
    assert.throws(() => m.morsels.createMeta(order, { address: 2 ** 40, huge: true }), code('EINVAL'));
  }
  assert.equal(freeFrames(m), start);
  const id = m.morsels.create(2, { huge: true });
  assert.equal(decodeIdBits(id).huge, true);
  assert.equal(decodeIdBits(m.morsels.create(2)).huge, false);
});

test('createChild on an entry another writer linked after the caller saw it empty is a lost race (-1), not ECORRUPT', () => {
  const m = Memory.volatile(8 * MiB);
  const id = m.morsels.create(2, { huge: true });
  const root = decodeIdBits(id).rootFrame;
  m.morsels.populateFrom(root, 2, 0, false); // the "other writer": root[0] now holds a table
  const start = freeFrames(m);
  assert.equal(m.morsels.walker.createChild(root, 0, null), -1);
  assert.equal(freeFrames(m), start, 'nothing allocated');
  m.region.storeEntry(root, 1, 0, 0x1234); // not present, not zero: damage
  assert.throws(() => m.morsels.walker.createChild(root, 1, null), code('ECORRUPT'));
});
