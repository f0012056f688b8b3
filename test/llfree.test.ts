/**
 * Unit and property tests of the LLFree-style frame allocator
 * (src/alloc/llfree.ts) and the locked free-list baseline (src/alloc/locked.ts).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { join } from 'node:path';
import fc from 'fast-check';
import { AllocatorView, FrameAllocator, CHILD_HUGE, childIsHuge, treeFree, treeWord, type Order } from '../src/alloc/llfree.js';
import { LockedAllocator } from '../src/alloc/locked.js';
import { isMorselError } from '../src/errors.js';
import { CHILD_FRAMES, firstAllocatableFrame, metaLayout } from '../src/physical/layout.js';
import { Region } from '../src/physical/region.js';
import { MiB, PAGE_SIZE, type Frame } from '../src/units.js';
import { tempDir } from './helpers.js';

const F = (n: number): Frame => n as Frame;

function fresh(bytes: number): { region: Region; a: FrameAllocator } {
  const region = Region.createVolatile(bytes);
  FrameAllocator.format(region);
  return { region, a: new FrameAllocator(region) };
}

/** Bytes of the allocator metadata (bitfields + counters), for "changed nothing" checks. */
function metaSnapshot(region: Region): Uint8Array {
  const l = metaLayout(region.frameCount);
  return new Uint8Array(region.sab, l.bitfieldsByte, l.treeCountersByte + l.trees * 4 - l.bitfieldsByte).slice();
}

function counters(region: Region): { child: Int32Array; tree: Int32Array } {
  const l = metaLayout(region.frameCount);
  return { child: new Int32Array(region.sab, l.childCountersByte, l.children), tree: new Int32Array(region.sab, l.treeCountersByte, l.trees) };
}

/** Free frames by the shared counters plus every instance's local count: exact whenever no operation is in flight. */
function globalFree(region: Region, instances: FrameAllocator[]): number {
  let sum = 0;
  for (const word of counters(region).tree) sum += treeFree(word);
  for (const a of instances) sum += a.localFree;
  return sum;
}

const throwsCode = (fn: () => unknown, code: string): void => {
  assert.throws(fn, (e: unknown) => isMorselError(e) && e.code === code);
};

/** Children that consist of allocatable frames only (candidates for order 9). */
function wholeChildren(frameCount: number): number[] {
  const first = firstAllocatableFrame(frameCount);
  const out: number[] = [];
  for (let c = Math.ceil(first / CHILD_FRAMES); (c + 1) * CHILD_FRAMES <= frameCount; c++) out.push(c);
  return out;
}

test('format accounts reserved, metadata and tail frames', () => {
  // 8 MiB + 3 frames: the last child has 3 real frames and 509 tail frames.
  const { region, a } = fresh(8 * MiB + 3 * PAGE_SIZE);
  const first = firstAllocatableFrame(region.frameCount);
  assert.equal(a.totalAllocatable(), region.frameCount - first);
  assert.equal(a.freeFrames(), a.totalAllocatable());
  for (const f of [0, 1, 0xa0, 0xff, 0x100, first - 1]) assert.equal(a.isAllocated(F(f)), true, `frame ${f}`);
  assert.equal(a.isAllocated(F(first)), false);
  assert.equal(a.isAllocated(F(region.frameCount - 1)), false);
  assert.deepEqual(FrameAllocator.verify(region), []);
  const { child } = counters(region);
  assert.equal(child[0], CHILD_FRAMES - first);
  assert.equal(child[child.length - 1], 3);
});

test('order-0 alloc and free', () => {
  const { region, a } = fresh(8 * MiB);
  const total = a.totalAllocatable();
  const got = new Set<number>();
  for (let i = 0; i < 1000; i++) {
    const f = a.alloc(0);
    assert.ok(f >= firstAllocatableFrame(region.frameCount) && f < region.frameCount);
    assert.ok(!got.has(f), 'fresh frame');
    assert.equal(a.isAllocated(f), true);
    got.add(f);
  }
  assert.equal(a.freeFrames(), total - 1000);
  for (const f of got) a.free(F(f));
  assert.equal(a.freeFrames(), total);
  for (const f of got) assert.equal(a.isAllocated(F(f)), false);
  a.release();
  assert.deepEqual(FrameAllocator.verify(region), []);
});

test('a damaged child counter is ECORRUPT when order-0 units are taken from it, and is not changed', () => {
  const { region, a } = fresh(8 * MiB);
  const c = a.alloc(0) >>> 9; // the hinted child: the next order-0 allocation tries it first
  const child = counters(region).child;
  a.release(); // gives the held units back: the next allocation takes units by reading the counter
  const good = child[c];
  // Stray bits, a free count above CHILD_FRAMES, and a huge flag with a free count: none may pass as a count.
  for (const bad of [good | 0x1000, CHILD_FRAMES + 1, CHILD_HUGE | 1]) {
    a.release();
    child[c] = bad;
    throwsCode(() => a.alloc(0), 'ECORRUPT');
    assert.equal(child[c], bad, `word 0x${bad.toString(16)} left as it was`);
  }
  child[c] = good;
  assert.ok(a.alloc(0) >>> 9 === c, 'the repaired child serves the next allocation');
});

test('order-9 alloc and free', () => {
  const { region, a } = fresh(24 * MiB);
  const total = a.totalAllocatable();
  const h = a.alloc(9);
  assert.equal(h % CHILD_FRAMES, 0);
  for (let i = 0; i < CHILD_FRAMES; i++) assert.equal(a.isAllocated(F(h + i)), true);
  assert.equal(a.freeFrames(), total - CHILD_FRAMES);
  const small = a.alloc(0);
  assert.ok(small < h || small >= h + CHILD_FRAMES, 'order-0 frame outside the huge block');
  throwsCode(() => a.free(F(h + 1), 0), 'EINVAL'); // part of an order-9 frame
  a.free(h, 9);
  a.free(small);
  assert.equal(a.freeFrames(), total);
  a.release();
  assert.deepEqual(FrameAllocator.verify(region), []);
});

test('ENOSPC on exhaustion leaves a consistent state; frees bring it back', () => {
  const { region, a } = fresh(8 * MiB + 5 * PAGE_SIZE);
  const total = a.totalAllocatable();
  const frames: Frame[] = [];
  for (;;) {
    try {
      frames.push(a.alloc(0));
    } catch (e) {
      assert.ok(isMorselError(e, 'ENOSPC'));
      break;
    }
    assert.ok(frames.length <= total);
  }
  assert.equal(frames.length, total);
  assert.equal(a.freeFrames(), 0);
  throwsCode(() => a.alloc(0), 'ENOSPC');
  throwsCode(() => a.alloc(9), 'ENOSPC');
  assert.equal(a.freeFrames(), 0);
  for (const f of frames) a.free(f);
  assert.equal(a.freeFrames(), total);

  // Order 9 exhaustion: exactly the wholly allocatable children.
  const huge: Frame[] = [];
  for (;;) {
    try {
      huge.push(a.alloc(9));
    } catch (e) {
      assert.ok(isMorselError(e, 'ENOSPC'));
      break;
    }
  }
  assert.deepEqual(huge.map((h) => h / CHILD_FRAMES).sort((x, y) => x - y), wholeChildren(region.frameCount));
  assert.equal(a.freeFrames(), total - huge.length * CHILD_FRAMES);
  for (const h of huge) a.free(h, 9);
  assert.equal(a.freeFrames(), total);
  a.release();
  assert.deepEqual(FrameAllocator.verify(region), []);
});

test('double free and bad frees are EINVAL and change nothing', () => {
  const { region, a } = fresh(8 * MiB);
  const f = a.alloc(0);
  const h = a.alloc(9);
  a.free(f);
  const before = metaSnapshot(region);
  const freeBefore = a.freeFrames();
  throwsCode(() => a.free(f), 'EINVAL'); // double free
  throwsCode(() => a.free(F(0)), 'EINVAL'); // superblock
  throwsCode(() => a.free(F(firstAllocatableFrame(region.frameCount) - 1)), 'EINVAL'); // metadata
  throwsCode(() => a.free(F(region.frameCount)), 'EINVAL'); // past the end
  throwsCode(() => a.free(F(1.5)), 'EINVAL');
  throwsCode(() => a.free(F(h + 7), 0), 'EINVAL'); // inside the order-9 frame
  throwsCode(() => a.free(F(h + 1), 9), 'EINVAL'); // misaligned order 9
  throwsCode(() => a.free(F(h + CHILD_FRAMES), 9), 'EINVAL'); // aligned but not huge
  throwsCode(() => a.free(h, 3 as Order), 'EINVAL'); // bad order
  assert.deepEqual(metaSnapshot(region), before);
  assert.equal(a.freeFrames(), freeBefore);
  a.free(h, 9);
  const after = metaSnapshot(region);
  throwsCode(() => a.free(h, 9), 'EINVAL'); // double free of order 9
  assert.deepEqual(metaSnapshot(region), after);
});

test('a huge child blocks order-0 allocations from it', () => {
  // 8 MiB: child 0 holds the reserved frames, children 1..3 are whole.
  const { region, a } = fresh(8 * MiB);
  const huge = [a.alloc(9), a.alloc(9), a.alloc(9)];
  assert.deepEqual(huge.map((h) => h / CHILD_FRAMES).sort(), [1, 2, 3]);
  throwsCode(() => a.alloc(9), 'ENOSPC');
  const first = firstAllocatableFrame(region.frameCount);
  let n = 0;
  for (;;) {
    let f: Frame;
    try {
      f = a.alloc(0);
    } catch (e) {
      assert.ok(isMorselError(e, 'ENOSPC'));
      break;
    }
    assert.ok(f >= first && f < CHILD_FRAMES, `frame ${f} from child 0`);
    n++;
  }
  assert.equal(n, CHILD_FRAMES - first);
  assert.equal(a.freeFrames(), 0);
});

test('several instances on one region: steals keep the accounting exact', () => {
  // One tree only: B and C can never reserve while A holds it, so they steal.
  const { region, a } = fresh(24 * MiB);
  const b = new FrameAllocator(region);
  const c = new FrameAllocator(region);
  const all = [a, b, c];
  const total = a.totalAllocatable();
  const x = a.alloc(0); // A reserves the only tree
  assert.equal(a.reservedTree, 0);
  const y = b.alloc(0); // B steals an order-0 frame
  assert.equal(b.reservedTree, -1);
  const hs = [b.alloc(9), c.alloc(9), b.alloc(9)]; // order-9 steals from A's tree
  assert.equal(globalFree(region, all), total - 2 - 3 * CHILD_FRAMES);
  // A's local count now overstates its tree; A must still find every real frame and then stop.
  const got: Frame[] = [];
  for (;;) {
    try {
      got.push(a.alloc(0));
    } catch (e) {
      assert.ok(isMorselError(e, 'ENOSPC'));
      break;
    }
  }
  assert.equal(got.length, total - 2 - 3 * CHILD_FRAMES);
  for (const inst of all) assert.ok(inst.freeFrames() >= 0);
  assert.equal(globalFree(region, all), 0);
  for (const f of [x, y, ...got]) c.free(f);
  for (const h of hs) a.free(h, 9);
  for (const inst of all) inst.release();
  assert.equal(a.freeFrames(), total);
  assert.deepEqual(FrameAllocator.verify(region), []);
});

type Op = { kind: 'a0' | 'a9' | 'free' | 'bad'; pick: number; who: number };

const opArb: fc.Arbitrary<Op> = fc.record({
  kind: fc.constantFrom<Op['kind']>('a0', 'a0', 'a0', 'a9', 'free', 'free', 'free', 'bad'),
  pick: fc.nat(),
  who: fc.nat({ max: 2 }),
});

test('property: random alloc/free of both orders match a reference model', () => {
  // Sizes: one small tree, one tree with a tail child, three trees (last partial).
  const sizeArb = fc.constantFrom(8 * MiB, 9 * MiB + 4 * PAGE_SIZE, 24 * MiB, 136 * MiB + 8 * PAGE_SIZE);
  fc.assert(
    fc.property(sizeArb, fc.integer({ min: 1, max: 3 }), fc.array(opArb, { minLength: 1, maxLength: 500 }), (bytes, nInst, ops) => {
      const region = Region.createVolatile(bytes);
      FrameAllocator.format(region);
      const inst = Array.from({ length: nInst }, () => new FrameAllocator(region));
      const frameCount = region.frameCount;
      const first = firstAllocatableFrame(frameCount);
      const total = frameCount - first;
      const small = new Set<number>(); // model: order-0 frames
      const huge = new Set<number>(); // model: order-9 heads
      const live: Array<[number, Order]> = [];
      const modelFree = (): number => total - small.size - huge.size * CHILD_FRAMES;
      const childWhollyFree = (c: number): boolean => {
        if (huge.has(c * CHILD_FRAMES)) return false;
        for (let i = 0; i < CHILD_FRAMES; i++) if (small.has(c * CHILD_FRAMES + i)) return false;
        return true;
      };
      const used = (f: number): boolean => f < first || small.has(f) || huge.has(f - (f % CHILD_FRAMES));

      for (const op of ops) {
        const a = inst[op.who % nInst];
        if (op.kind === 'a0') {
          let f: number;
          try {
            f = a.alloc(0);
          } catch (e) {
            assert.ok(isMorselError(e, 'ENOSPC'), String(e));
            assert.equal(modelFree(), 0, 'ENOSPC only when nothing is free');
            continue;
          }
          assert.ok(f >= first && f < frameCount, `frame ${f} allocatable`);
          assert.ok(!used(f), `frame ${f} handed out twice`);
          small.add(f);
          live.push([f, 0]);
        } else if (op.kind === 'a9') {
          let h: number;
          try {
            h = a.alloc(9);
          } catch (e) {
            assert.ok(isMorselError(e, 'ENOSPC'), String(e));
            assert.ok(!wholeChildren(frameCount).some(childWhollyFree), 'order-9 ENOSPC only when no whole child is free');
            continue;
          }
          assert.equal(h % CHILD_FRAMES, 0, 'order-9 frame aligned');
          assert.ok(h >= first && h + CHILD_FRAMES <= frameCount);
          assert.ok(childWhollyFree(h / CHILD_FRAMES), `order-9 frame ${h} overlaps live frames`);
          huge.add(h);
          live.push([h, 9]);
        } else if (op.kind === 'free') {
          if (live.length === 0) continue;
          const i = op.pick % live.length;
          const [f, order] = live[i];
          live[i] = live[live.length - 1];
          live.pop();
          a.free(F(f), order);
          (order === 0 ? small : huge).delete(f);
        } else {
          // A free of a frame the model says is not allocated must be EINVAL and change nothing.
          const f = op.pick % frameCount;
          if (small.has(f)) continue;
          // Either order, also inside a live order-9 frame (order 0 there is EINVAL); only
          // an order-9 free of a live order-9 frame's first frame would be valid: skip that one.
          const order: Order = op.pick % 2 === 0 ? 0 : 9;
          if (order === 9 && huge.has(f)) continue;
          const before = metaSnapshot(region);
          throwsCode(() => a.free(F(f), order), 'EINVAL');
          assert.deepEqual(metaSnapshot(region), before);
        }
        assert.equal(globalFree(region, inst), modelFree(), 'counters + local reservations equal the model');
        if (nInst === 1) assert.equal(a.freeFrames(), modelFree());
        for (const x of inst) assert.ok(x.freeFrames() >= 0);
      }
      for (const [f] of live.slice(0, 50)) assert.equal(inst[0].isAllocated(F(f)), true);
      for (const x of inst) x.release();
      assert.equal(inst[0].freeFrames(), modelFree());
      assert.deepEqual(FrameAllocator.verify(region), []);
      for (let f = 0; f < frameCount; f++) assert.equal(inst[0].isAllocated(F(f)), used(f), `frame ${f}`);
    }),
    { numRuns: 150 },
  );
});

test('rebuildCounters restores scrambled counters and drops reservations', () => {
  fc.assert(
    fc.property(fc.array(fc.constantFrom<Order>(0, 0, 0, 9), { maxLength: 300 }), fc.array(fc.nat(), { minLength: 8, maxLength: 8 }), (orders, noise) => {
      const { region, a } = fresh(136 * MiB);
      for (const o of orders) a.alloc(o);
      const expectFree = a.freeFrames();
      a.release();
      const { child, tree } = counters(region);
      const goodChild = child.slice();
      const goodTree = tree.slice();
      // A "crash": another instance holds a reservation that no one will give back.
      const b = new FrameAllocator(region);
      b.alloc(0);
      // Scramble: random free fields (the huge flag is persistent state and stays), random tree words incl. reserved bits.
      for (let c = 0; c < child.length; c++) child[c] = (child[c] & CHILD_HUGE) | (childIsHuge(child[c]) ? 0 : (noise[c % 8] + c) % 513);
      for (let t = 0; t < tree.length; t++) tree[t] = treeWord((noise[t % 8] % 9000) - 100, (noise[(t + 3) % 8] & 1) === 1);
      FrameAllocator.rebuildCounters(region);
      // b's frame is still allocated in the bitfield, so one fewer than before.
      assert.deepEqual(Array.from(tree).map(treeFree).reduce((x, y) => x + y, 0), expectFree - 1);
      assert.deepEqual(FrameAllocator.verify(region), []);
      const c2 = new FrameAllocator(region);
      assert.equal(c2.freeFrames(), expectFree - 1);
      // Apart from b's one frame the counters are what they were.
      let diffs = 0;
      for (let c = 0; c < child.length; c++) diffs += Math.abs(child[c] - goodChild[c]);
      for (let t = 0; t < tree.length; t++) diffs += Math.abs(treeFree(tree[t]) - treeFree(goodTree[t]));
      assert.equal(diffs, 2);
    }),
    { numRuns: 25 },
  );
});

test('release() after a rebuild forgets the stale reservation instead of double counting', () => {
  const { region, a } = fresh(24 * MiB);
  const held = [a.alloc(0), a.alloc(0)];
  assert.ok(a.reservedTree >= 0 && a.localFree > 0);
  FrameAllocator.rebuildFrom(region, (f) => held.includes(F(f)));
  a.release();
  assert.equal(a.reservedTree, -1);
  assert.deepEqual(FrameAllocator.verify(region), []);
  assert.equal(a.freeFrames(), a.totalAllocatable() - 2);
});

test('rebuildCounters refuses a huge child with bits set (ECORRUPT)', () => {
  const { region, a } = fresh(24 * MiB);
  const h = a.alloc(9);
  a.release();
  const l = metaLayout(region.frameCount);
  const bits = new Int32Array(region.sab, l.bitfieldsByte, l.children * 16);
  const before = metaSnapshot(region);
  bits[(h / CHILD_FRAMES) * 16 + 3] = 1;
  const corrupted = metaSnapshot(region);
  throwsCode(() => FrameAllocator.rebuildCounters(region), 'ECORRUPT');
  assert.deepEqual(metaSnapshot(region), corrupted, 'nothing changed');
  assert.notDeepEqual(corrupted, before);
});

test('rebuildFrom reproduces a given set', () => {
  const bytes = 72 * MiB + 12 * PAGE_SIZE;
  const frameCount = bytes / PAGE_SIZE;
  const first = firstAllocatableFrame(frameCount);
  const whole = wholeChildren(frameCount);
  fc.assert(
    fc.property(
      fc.uniqueArray(fc.integer({ min: first, max: frameCount - 1 }), { maxLength: 2000 }),
      fc.uniqueArray(fc.constantFrom(...whole), { maxLength: 6 }),
      (frames, hugeChildren) => {
        const { region, a } = fresh(bytes);
        for (let i = 0; i < 700; i++) a.alloc(i % 50 === 0 ? 9 : 0); // some state to replace
        a.release();
        const hugeSet = new Set(hugeChildren);
        const used = new Set(frames.filter((f) => !hugeSet.has(Math.floor(f / CHILD_FRAMES))));
        const asked = new Set<number>();
        FrameAllocator.rebuildFrom(region, (f) => {
          asked.add(f);
          return used.has(f);
        }, hugeChildren);
        assert.equal(asked.size, frameCount - first - hugeSet.size * CHILD_FRAMES, 'asked about every allocatable frame outside huge children');
        const b = new FrameAllocator(region);
        for (let f = 0; f < frameCount; f++) {
          const expect = f < first || used.has(f) || hugeSet.has(Math.floor(f / CHILD_FRAMES));
          if (b.isAllocated(F(f)) !== expect) assert.fail(`frame ${f}: allocated=${!expect}`);
        }
        assert.equal(b.freeFrames(), frameCount - first - used.size - hugeSet.size * CHILD_FRAMES);
        assert.deepEqual(FrameAllocator.verify(region), []);
        for (const c of hugeSet) b.free(F(c * CHILD_FRAMES), 9);
        for (const f of used) b.free(F(f));
        b.release();
        assert.equal(b.freeFrames(), b.totalAllocatable());
      },
    ),
    { numRuns: 20 },
  );
  const { region } = fresh(bytes);
  throwsCode(() => FrameAllocator.rebuildFrom(region, () => false, [0]), 'EINVAL'); // child 0 holds reserved frames
  throwsCode(() => FrameAllocator.rebuildFrom(region, () => false, [metaLayout(frameCount).children - 1]), 'EINVAL'); // tail child
});

test('file-backed region: allocation state persists; reopen after a "crash" rebuilds the counters', () => {
  const dir = tempDir('morsel-llfree-');
  const path = join(dir, 'region.img');
  try {
    const region = Region.createFile(path, 24 * MiB);
    FrameAllocator.format(region);
    const a = new FrameAllocator(region);
    const small = Array.from({ length: 300 }, () => a.alloc(0));
    const huge = a.alloc(9);
    const expectFree = a.totalAllocatable() - 300 - CHILD_FRAMES;
    // No release(), no close(): the process "dies" holding a reservation.
    region.abandon();
    const { region: again, crashed } = Region.openFile(path);
    assert.equal(crashed, true);
    FrameAllocator.rebuildCounters(again);
    assert.deepEqual(FrameAllocator.verify(again), []);
    const b = new FrameAllocator(again);
    assert.equal(b.freeFrames(), expectFree);
    for (const f of small) assert.equal(b.isAllocated(f), true);
    assert.equal(b.isAllocated(F(huge + 100)), true);
    const fresh = b.alloc(0);
    assert.ok(!small.includes(fresh) && (fresh < huge || fresh >= huge + CHILD_FRAMES), 'no frame handed out twice across the reopen');
    b.free(fresh);
    for (const f of small) b.free(f);
    b.free(huge, 9);
    b.release();
    assert.equal(b.freeFrames(), b.totalAllocatable());
    again.close();
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('locked baseline: same API, order split, double free', () => {
  const region = Region.createVolatile(16 * MiB);
  const l = LockedAllocator.create(region);
  const total = l.totalAllocatable();
  assert.equal(l.freeFrames(), total);
  const f = l.alloc(0);
  const h = l.alloc(9);
  assert.equal(h % CHILD_FRAMES, 0);
  assert.ok(f < h || f >= h + CHILD_FRAMES);
  assert.equal(l.isAllocated(f), true);
  assert.equal(l.isAllocated(F(h + 5)), true);
  assert.equal(l.freeFrames(), total - 1 - CHILD_FRAMES);
  const shared = LockedAllocator.fromShare(l.share());
  shared.free(f);
  throwsCode(() => l.free(f), 'EINVAL');
  throwsCode(() => l.free(F(h + 1), 9), 'EINVAL');
  l.free(h, 9);
  throwsCode(() => shared.free(h, 9), 'EINVAL');
  assert.equal(l.freeFrames(), total);
  let n = 0;
  for (;;) {
    try {
      l.alloc(9);
      n++;
    } catch (e) {
      assert.ok(isMorselError(e, 'ENOSPC'));
      break;
    }
  }
  assert.equal(n, Math.floor(wholeChildren(region.frameCount).length / 2));
});

test('an owner freeing what thieves took pays the debt: the shared counter stays bounded', () => {
  // One tree: the owner reserves it, so the thief can only steal from it.
  const region = Region.createVolatile(32 * MiB);
  FrameAllocator.format(region);
  const owner = new FrameAllocator(region);
  const thief = new FrameAllocator(region);
  owner.free(owner.alloc(0)); // reserve the only tree
  const words = new Int32Array(region.sab, metaLayout(region.frameCount).treeCountersByte, 1);
  let lowest = 0;
  for (let i = 0; i < 100_000; i++) {
    const f = thief.alloc(0); // a steal: the tree is reserved by `owner`
    owner.free(f); // the owner frees into its own reserved tree
    lowest = Math.min(lowest, treeFree(Atomics.load(words, 0)));
  }
  assert.ok(lowest >= -2, `shared free count drifted to ${lowest}`);
  owner.release();
  thief.release();
  assert.deepEqual(FrameAllocator.verify(region), []);
  assert.equal(owner.freeFrames(), owner.totalAllocatable());
});

test('allocSmallBatch: whole free children by one counter CAS, the rest one by one; frames free alone; ENOSPC leaves what it took with the caller', () => {
  const { region, a } = fresh(16 * MiB);
  const before = a.freeFrames();
  const out: Frame[] = [];
  a.allocSmallBatch(2 * CHILD_FRAMES + 7, out);
  assert.equal(out.length, 2 * CHILD_FRAMES + 7);
  assert.equal(new Set(out).size, out.length, 'distinct frames');
  for (const f of out) assert.ok(a.isAllocated(f));
  const whole = [0, CHILD_FRAMES].map((i) => out[i]);
  for (const w of whole) {
    assert.equal(w % CHILD_FRAMES, 0, 'a batch child starts at a child boundary');
    assert.deepEqual(out.slice(out.indexOf(w), out.indexOf(w) + CHILD_FRAMES), Array.from({ length: CHILD_FRAMES }, (_, i) => F(w + i)), 'a whole child is 512 contiguous frames');
  }
  assert.equal(a.freeFrames(), before - out.length);
  a.release(); // verify wants no reservation held
  assert.deepEqual(FrameAllocator.verify(region), [], 'counters agree with the bitfields');
  for (const f of out) a.free(f); // each is an ordinary order-0 frame
  assert.equal(a.freeFrames(), before);
  a.release();
  assert.deepEqual(FrameAllocator.verify(region), []);
  // Exhaustion: everything free is taken, then ENOSPC with the frames in `out`.
  const all: Frame[] = [];
  throwsCode(() => a.allocSmallBatch(before + 1, all), 'ENOSPC');
  assert.equal(all.length, before, 'every free frame was handed out before ENOSPC');
  for (const f of all) a.free(f);
  assert.equal(a.freeFrames(), before);
  a.release();
  assert.deepEqual(FrameAllocator.verify(region), []);
});

test('freeSmallBatch frees what free() would and refuses, without changing anything for them, what free() would reject', () => {
  const { region, a } = fresh(8 * MiB);
  const first = firstAllocatableFrame(region.frameCount);
  const total = a.freeFrames();
  const held: Frame[] = [];
  a.allocSmallBatch(CHILD_FRAMES + 300, held);
  const huge = a.alloc(9);
  fc.assert(
    fc.property(fc.array(fc.oneof(fc.constantFrom(...held), fc.integer({ min: 0, max: region.frameCount + 10 }), fc.integer({ min: huge, max: huge + CHILD_FRAMES - 1 })), { maxLength: 700 }), (picked) => {
      // Model: one free() per frame in order; the batch in a neighbouring sort (frames grouped by child, as a table's pages are).
      const allocated = new Set<number>(held.filter((f) => a.isAllocated(f)));
      let refused = 0;
      const freedByModel = new Set<number>();
      for (const f of picked) {
        if (f >= first && f < region.frameCount && allocated.has(f) && !freedByModel.has(f)) freedByModel.add(f);
        else refused++;
      }
      const before = a.freeFrames();
      assert.equal(a.freeSmallBatch(Int32Array.from(picked), picked.length), refused);
      assert.equal(a.freeFrames(), before + freedByModel.size);
      for (const f of freedByModel) assert.equal(a.isAllocated(F(f)), false);
      assert.ok(a.isAllocated(huge), 'the order-9 frame is untouched');
      a.release();
      assert.deepEqual(FrameAllocator.verify(region), [], 'counters agree with the bitfields');
      // Take the freed frames back for the next case.
      for (let i = 0; i < freedByModel.size; i++) {
        const f = a.alloc(0);
        if (!held.includes(f)) held.push(f);
      }
    }),
    { numRuns: 60, seed: 12 },
  );
  a.free(huge, 9);
  const rest = held.filter((f) => a.isAllocated(f));
  assert.equal(a.freeSmallBatch(Int32Array.from(rest), rest.length), 0);
  a.release();
  assert.equal(a.freeFrames(), total);
  assert.deepEqual(FrameAllocator.verify(region), []);
});

test('held units: order-0 allocations take a child\'s counter units in batches, frees into that child are held again, release gives them back', () => {
  const { region, a } = fresh(8 * MiB);
  const child = counters(region).child;
  const before = child.slice();
  const f0 = a.alloc(0);
  const c = f0 >>> 9;
  const atFirst = child[c];
  const frames = [f0];
  for (let i = 0; i < 20; i++) frames.push(a.alloc(0));
  assert.ok(frames.every((f) => f >>> 9 === c), 'the allocations come from the held child');
  assert.equal(child[c], atFirst, 'no counter atomic while units are held');
  const b = new FrameAllocator(region); // another instance does not see the held frames as free in that child
  assert.ok(child[c] < before[c] - frames.length, 'the counter reads below the clear bits while units are held');
  const view = new AllocatorView(region);
  assert.deepEqual(view.problems().map((p) => p.code), ['TREE_RESERVED'], 'a held child is the reserved tree\'s owner\'s, not a counter problem');
  for (const f of frames.slice(0, 10)) b.free(f); // another instance's frees of them go to the shared counter
  assert.equal(child[c], atFirst + 10, 'a free by another instance raises the counter');
  for (const f of frames.slice(10)) a.free(f);
  assert.equal(child[c], atFirst + 10, 'the owner\'s frees into its held child are held, not counted');
  a.release();
  b.release();
  assert.equal(child[c], before[c], 'release gives every held unit back');
  assert.deepEqual(FrameAllocator.verify(region), []);
  assert.equal(a.freeFrames(), a.totalAllocatable());
});
