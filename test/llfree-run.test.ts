/** FrameAllocator.allocRun: one order-9 frame split into 512 order-0 frames, each freed alone. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FrameAllocator, AllocatorView, CHILD_HUGE } from '../src/alloc/llfree.js';
import { isMorselError } from '../src/errors.js';
import { BITFIELD_WORDS, CHILD_FRAMES, metaLayout } from '../src/physical/layout.js';
import { Region } from '../src/physical/region.js';
import { MiB, type Frame } from '../src/units.js';

function fresh(bytes: number): { region: Region; a: FrameAllocator } {
  const region = Region.createVolatile(bytes);
  FrameAllocator.format(region);
  return { region, a: new FrameAllocator(region) };
}

const throwsCode = (fn: () => unknown, code: string): void => assert.throws(fn, (e: unknown) => isMorselError(e) && e.code === code);

test('allocRun hands out 512 contiguous order-0 frames, each freed on its own; the child is whole again afterwards', () => {
  const { region, a } = fresh(16 * MiB);
  const view = new AllocatorView(region);
  const total = a.freeFrames();
  const base = a.allocRun();
  assert.equal(base % CHILD_FRAMES, 0, '2 MiB aligned');
  assert.equal(a.freeFrames(), total - CHILD_FRAMES);
  for (let i = 0; i < CHILD_FRAMES; i++) assert.ok(view.isSmallAllocated(base + i), `frame ${i} is an order-0 frame (walkers trust it)`);
  throwsCode(() => a.free(base, 9), 'EINVAL'); // no longer an order-9 frame
  for (let i = CHILD_FRAMES - 1; i >= 0; i -= 2) a.free((base + i) as Frame);
  throwsCode(() => a.free((base + 511) as Frame), 'EINVAL'); // double free
  for (let i = CHILD_FRAMES - 2; i >= 0; i -= 2) a.free((base + i) as Frame);
  assert.equal(a.freeFrames(), total);
  a.release();
  assert.deepEqual(FrameAllocator.verify(region), []);
  // The child is wholly free again: an order-9 allocation can take it.
  const b = new FrameAllocator(region);
  const huge: number[] = [];
  for (let i = 0; i < 16 * MiB / (2 * MiB); i++) {
    try {
      huge.push(b.alloc(9));
    } catch (e) {
      assert.ok(isMorselError(e, 'ENOSPC'));
      break;
    }
  }
  assert.ok(huge.includes(base), 'the split child came back whole');
  throwsCode(() => b.allocRun(), 'ENOSPC');
  b.release();
});

test('a crash between the two steps of allocRun leaves free frames; after them, allocated ones (for recovery)', () => {
  const { region, a } = fresh(16 * MiB);
  const l = metaLayout(region.frameCount);
  const childCounters = new Int32Array(region.sab, l.childCountersByte, l.children);
  const bits = new Int32Array(region.sab, l.bitfieldsByte, l.children * BITFIELD_WORDS);
  const base = a.allocRun();
  const c = base / CHILD_FRAMES;
  // Step 1 only: the huge flag gone, no bit set yet (undo step 2).
  for (let w = 0; w < BITFIELD_WORDS; w++) bits[c * BITFIELD_WORDS + w] = 0;
  assert.equal(childCounters[c], 0);
  FrameAllocator.rebuildCounters(region);
  assert.deepEqual(FrameAllocator.verify(region), []);
  const view = new AllocatorView(region);
  for (let i = 0; i < CHILD_FRAMES; i++) assert.equal(view.isAllocated(base + i), false, 'nothing referenced them: free');
  // Before step 1 (still huge) the frame is an allocated order-9 frame, as after alloc(9).
  const b = new FrameAllocator(region);
  const again = b.allocRun();
  childCounters[again / CHILD_FRAMES] = CHILD_HUGE;
  for (let w = 0; w < BITFIELD_WORDS; w++) bits[(again / CHILD_FRAMES) * BITFIELD_WORDS + w] = 0;
  FrameAllocator.rebuildCounters(region);
  assert.deepEqual(FrameAllocator.verify(region), []);
  assert.ok(view.hugeChildren().includes(again / CHILD_FRAMES));
});
