import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { Memory } from '../src/memory.js';
import { Access, Mmu } from '../src/space/mmu.js';
import { HUGE_ALLOC_ORDER } from '../src/paging/walk.js';
import { checkRegion } from '../src/recovery/check.js';
import { takeAll } from './helpers.js';
import { MiB, PAGE_SIZE, type Frame } from '../src/units.js';

const LEAF_BYTES = 2 * MiB;
const code = (c: string) => (e: unknown) => (e as { code?: string }).code === c;

/** A huge-policy order-2 morsel mapped in a fresh 4-level space, with its Mmu. */
function hugeMorsel(m: Memory) {
  const space = m.createSpace({ levels: 4 });
  const mmu = new Mmu(space);
  const id = m.morsels.create(2, { huge: true });
  return { space, mmu, id, base: space.map(id) };
}

test('view: any range inside one 2 MiB leaf is the region itself (a Float32Array lives in the leaf)', () => {
  const m = Memory.volatile(64 * MiB);
  const { mmu, id, base } = hugeMorsel(m);
  mmu.write8(base + LEAF_BYTES + 5, 1); // one fault populates the whole second leaf
  assert.equal(m.morsels.stats(id).hugeLeaves, 1);
  mmu.enter();
  try {
    const v = mmu.view(base + LEAF_BYTES, LEAF_BYTES, Access.Write);
    const f32 = new Float32Array(v.buffer, v.byteOffset, LEAF_BYTES / 4);
    f32[0] = 0.5;
    f32[f32.length - 1] = 7.25;
  } finally {
    mmu.exit();
  }
  const out = new Uint8Array(4);
  mmu.read(base + 2 * LEAF_BYTES - 4, out);
  assert.equal(new Float32Array(out.buffer)[0], 7.25, 'written in place, read back through the MMU');
  mmu.read(base + LEAF_BYTES, out);
  assert.equal(new Float32Array(out.buffer)[0], 0.5);
});

test('view: across two leaves only when their blocks are adjacent, else EFRAGMENT', () => {
  const m = Memory.volatile(64 * MiB);
  const { mmu, base } = hugeMorsel(m);
  mmu.write8(base, 1);
  const gap = m.alloc.alloc(HUGE_ALLOC_ORDER); // held: the next leaf cannot follow the first one's block
  mmu.write8(base + LEAF_BYTES, 2);
  const first = mmu.translate(base + LEAF_BYTES - PAGE_SIZE, Access.Read);
  const second = mmu.translate(base + LEAF_BYTES, Access.Read);
  mmu.enter();
  try {
    if (second === first + 1) assert.equal(mmu.view(base + LEAF_BYTES - 8, 16).length, 16);
    else assert.throws(() => mmu.view(base + LEAF_BYTES - 8, 16), code('EFRAGMENT'));
  } finally {
    mmu.exit();
  }
  m.alloc.free(gap as Frame, HUGE_ALLOC_ORDER);
});

test('bulk read/write/fill over 2 MiB leaves, 4 KiB pages and holes match a model (run-level translation)', () => {
  const SPAN = 6 * LEAF_BYTES;
  fc.assert(
    fc.property(
      fc.array(
        fc.record({ op: fc.constantFrom('write', 'fill', 'pwrite'), at: fc.integer({ min: 0, max: SPAN - 1 }), len: fc.integer({ min: 1, max: 3 * LEAF_BYTES }), byte: fc.integer({ min: 1, max: 255 }) }),
        { minLength: 1, maxLength: 6 },
      ),
      fc.boolean(),
      (ops, huge) => {
        const m = Memory.volatile(96 * MiB);
        const space = m.createSpace({ levels: 4 });
        const mmu = new Mmu(space);
        const id = m.morsels.create(2, { huge });
        const base = space.map(id);
        const model = new Uint8Array(SPAN);
        for (const { op, at, len, byte } of ops) {
          const n = Math.min(len, SPAN - at);
          if (op === 'fill') mmu.fill(base + at, n, byte);
          else if (op === 'write') mmu.write(base + at, new Uint8Array(n).fill(byte));
          else m.morsels.write(id, at, new Uint8Array(n).fill(byte));
          model.fill(byte, at, at + n);
        }
        const got = new Uint8Array(SPAN);
        mmu.read(base, got);
        assert.deepEqual(got, model);
        const pread = new Uint8Array(SPAN);
        m.morsels.read(id, 0, pread);
        assert.deepEqual(pread, model, 'pread walks the same leaves');
        assert.equal(m.morsels.stats(id).hugeLeaves > 0, huge, 'leaves exactly when the policy asks for them');
        space.unmap(base);
        m.morsels.destroy(id);
        space.destroy();
      },
    ),
    { numRuns: 25 },
  );
});

test('a write to a shared 2 MiB leaf with no 2 MiB block free splits the copy into 4 KiB pages; nothing leaks', () => {
  const m = Memory.volatile(64 * MiB);
  const { space, mmu, id, base } = hugeMorsel(m);
  mmu.write8(base + 100, 7);
  const clone = m.morsels.clone(id);
  const cloneBase = space.map(clone);
  const held: number[] = takeAll(m.alloc, HUGE_ALLOC_ORDER);
  // Give back one block as 4 KiB frames only: 4 KiB allocations until one lands in it (it can no longer be an order-9 frame).
  const block = held.pop()!;
  m.alloc.free(block as Frame, HUGE_ALLOC_ORDER);
  const small: number[] = [];
  let pin = -1;
  for (let i = 0; i < m.region.frameCount && pin < 0; i++) {
    const f = m.alloc.alloc(0);
    if (f >= block && f < block + LEAF_BYTES / PAGE_SIZE) pin = f;
    else small.push(f);
  }
  assert.ok(pin >= 0, 'a 4 KiB frame of the freed block');
  small.forEach((f) => m.alloc.free(f as Frame, 0));
  mmu.write8(cloneBase + 100, 9); // copy-on-write of the shared leaf: no order-9 frame for a whole copy
  assert.equal(mmu.read8(cloneBase + 100), 9);
  assert.equal(mmu.read8(base + 100), 7, 'the source keeps its bytes');
  assert.equal(m.morsels.stats(clone).hugeLeaves, 0, "the clone's copy is 4 KiB pages");
  assert.equal(m.morsels.stats(id).hugeLeaves, 1, 'the source keeps its leaf');
  const rest = new Uint8Array(LEAF_BYTES);
  mmu.read(cloneBase, rest);
  assert.equal(rest[100], 9);
  rest[100] = 7;
  const src = new Uint8Array(LEAF_BYTES);
  mmu.read(base, src);
  assert.deepEqual(rest, src, 'every other byte of the split copy equals the leaf');
  m.alloc.free(pin as Frame, 0);
  held.forEach((f) => m.alloc.free(f as Frame, HUGE_ALLOC_ORDER));
  space.unmap(cloneBase);
  m.morsels.destroy(clone);
  m.alloc.release();
  const report = checkRegion(m);
  assert.equal(report.lostFrames, 0, 'every frame of the clone and its split copy came back');
  assert.deepEqual(report.problems, []);
});
