import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Memory } from '../src/memory.js';
import { Access, Mmu } from '../src/space/mmu.js';
import { MiB, PAGE_SIZE, type Frame } from '../src/units.js';
import { freeFrames, takeAll } from './helpers.js';

const code = (c: string) => (e: unknown) => (e as { code?: string }).code === c;

/** The frames behind [addr, addr + pages * 4 KiB), as translate() sees them. */
function framesOf(mmu: Mmu, addr: number, pages: number): number[] {
  return Array.from({ length: pages }, (_, i) => mmu.translate(addr + i * PAGE_SIZE, Access.Read));
}

test('view: a contiguous range is the region itself; a Float32Array lives inside the morsel', () => {
  const m = Memory.volatile(32 * MiB);
  const space = m.createSpace({ levels: 4 });
  const mmu = new Mmu(space);
  const id = m.morsels.create(1);
  m.morsels.populate(id, 0, 64 * PAGE_SIZE); // one batch: consecutive frames of this thread's tree
  const base = space.map(id);
  const frames = framesOf(mmu, base, 64);
  assert.ok(frames.every((f, i) => f === frames[0] + i), 'batch population got consecutive frames');
  mmu.enter();
  try {
    const v = mmu.view(base + 8, 64 * PAGE_SIZE - 8, Access.Write);
    const f32 = new Float32Array(v.buffer, v.byteOffset, (64 * PAGE_SIZE - 8) / 4);
    f32[0] = 1.5;
    f32[f32.length - 1] = -2.25;
  } finally {
    mmu.exit();
  }
  const out = new Uint8Array(4);
  mmu.read(base + 8, out);
  assert.equal(new Float32Array(out.buffer)[0], 1.5, 'written in place: the MMU reads it back');
  mmu.read(base + 64 * PAGE_SIZE - 4, out);
  assert.equal(new Float32Array(out.buffer)[0], -2.25);
});

test('view: never spans a non-contiguous boundary, never hands out the zero frame', () => {
  const m = Memory.volatile(32 * MiB);
  const space = m.createSpace({ levels: 4 });
  const mmu = new Mmu(space);
  const id = m.morsels.create(1);
  const base = space.map(id);
  mmu.write8(base, 1); // page 0
  const other = m.morsels.create(0); // takes the next frame
  mmu.write8(base + PAGE_SIZE, 2); // page 1: not page 0's neighbour
  const [f0, f1] = framesOf(mmu, base, 2);
  assert.notEqual(f1, f0 + 1);
  assert.throws(() => mmu.view(base + PAGE_SIZE - 4, 8), code('EFRAGMENT'));
  assert.equal(mmu.view(base + 4, PAGE_SIZE - 4)[0], 0, 'one page is always contiguous');
  const free = m.alloc.freeFrames();
  assert.throws(() => mmu.view(base + 5 * PAGE_SIZE, 16), code('EFRAGMENT'), 'a read view of a hole');
  assert.equal(m.alloc.freeFrames(), free, 'a read view allocates nothing');
  assert.equal(mmu.view(base + 5 * PAGE_SIZE, 16, Access.Write).length, 16, 'a write view populates the page');
  assert.throws(() => mmu.view(base, 0), code('EINVAL'));
  m.morsels.destroy(other);
});

test('view: a write view of a shared (cloned) page copies it first; the clone keeps its bytes', () => {
  const m = Memory.volatile(32 * MiB);
  const space = m.createSpace({ levels: 4 });
  const mmu = new Mmu(space);
  const src = m.morsels.create(1);
  m.morsels.write(src, 0, Uint8Array.of(7));
  const copy = m.morsels.clone(src);
  const a = space.map(src);
  mmu.enter();
  try {
    mmu.view(a, 1, Access.Write)[0] = 9;
  } finally {
    mmu.exit();
  }
  const out = new Uint8Array(1);
  m.morsels.read(copy, 0, out);
  assert.equal(out[0], 7, 'the clone still has the old byte');
  m.morsels.read(src, 0, out);
  assert.equal(out[0], 9);
});

test('runs: a range starting mid-page continues its first run past the partial first page (natively scanned or not): runs are the maximal spans of consecutive frames', () => {
  const m = Memory.volatile(64 * MiB);
  const space = m.createSpace({ levels: 4 });
  const mmu = new Mmu(space);
  const id = m.morsels.create(1);
  m.morsels.populate(id, 0, 2 * MiB); // one batch: mostly consecutive frames
  const base = space.map(id);
  const frames = framesOf(mmu, base, 512);
  let joined = 0; // ranges whose first (partial) page and the next lie on consecutive frames
  for (const [start, pages] of [[100, 3], [4095, 40], [1, 511], [4096 * 7 + 9, 300]] as const) {
    const firstPage = Math.floor(start / PAGE_SIZE);
    const length = pages * PAGE_SIZE;
    // The expected runs: split where the next page's frame is not the previous one + 1.
    const want: [number, number, number, number][] = [];
    for (let done = 0; done < length; ) {
      const page = firstPage + Math.floor((start % PAGE_SIZE + done) / PAGE_SIZE);
      const off = (start + done) % PAGE_SIZE;
      let n = Math.min(PAGE_SIZE - off, length - done);
      for (let p = page + 1; done + n < length && frames[p] === frames[p - 1] + 1; p++) n += Math.min(PAGE_SIZE, length - done - n);
      want.push([frames[page], off, done, n]);
      done += n;
    }
    if (frames[firstPage + 1] === frames[firstPage] + 1) joined++;
    const got: [number, number, number, number][] = [];
    mmu.runs(base + start, length, Access.Read, (frame, off, done, n) => got.push([frame, off, done, n]));
    assert.deepEqual(got, want, `start ${start}, ${pages} pages`);
  }
  assert.ok(joined > 0, 'some range starts on consecutive frames (else this test checks nothing new)');
  space.unmap(base);
  m.morsels.destroy(id);
  space.destroy();
});

test('a bulk write that faults populates its extent in the page table at once (fault-ahead); with too few frames it still writes page by page up to ENOSPC', () => {
  const m = Memory.volatile(64 * MiB);
  const free0 = freeFrames(m);
  const space = m.createSpace({ levels: 4 });
  const mmu = new Mmu(space);
  const id = m.morsels.create(1);
  const base = space.map(id);
  const data = new Uint8Array(300 * PAGE_SIZE).map((_, i) => (i * 13) >>> 4);
  const faultsBefore = mmu.counters.faults;
  mmu.write(base + 100, data);
  assert.equal(mmu.counters.faults - faultsBefore, 1, 'one fault for 301 pages of one level-1 table');
  assert.equal(m.morsels.stats(id).dataPages, 301, 'exactly the pages the write reached');
  const back = new Uint8Array(data.length);
  mmu.read(base + 100, back);
  assert.deepEqual(back, data);
  // Few frames left: the batch cannot be had, the write goes page by page and stops at ENOSPC.
  const held = takeAll(m.alloc, 0);
  for (let i = 0; i < 5; i++) m.alloc.free(held.pop()! as Frame);
  assert.throws(() => mmu.fill(base + 400 * PAGE_SIZE, 20 * PAGE_SIZE, 7), (e: unknown) => (e as { code?: string }).code === 'ENOSPC');
  assert.equal(m.morsels.stats(id).dataPages, 306, 'the five free frames were used, page by page');
  assert.equal(mmu.read8(base + 400 * PAGE_SIZE), 7, 'what was populated was written');
  for (const f of held) m.alloc.free(f as Frame);
  space.unmap(base);
  m.morsels.destroy(id);
  space.destroy();
  assert.equal(freeFrames(m), free0, 'every frame back: pages, tables, the space');
});
