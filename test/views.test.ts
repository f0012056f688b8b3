import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { Memory } from '../src/memory.js';
import { Access, Mmu } from '../src/space/mmu.js';
import { MiB, type Frame } from '../src/units.js';

const code = (c: string) => (e: unknown) => (e as { code?: string }).code === c;

test('a Float32Array lives inside a morsel: writes through it are the morsel bytes, no copy', () => {
  const m = Memory.volatile(32 * MiB);
  const space = m.createSpace({ levels: 4 });
  const id = m.morsels.create(1);
  const base = space.map(id);
  const mmu = new Mmu(space);
  const n = 3000; // 12000 bytes: three pages
  m.morsels.populate(id, 0, 2 * MiB); // batch population hands out frames in order
  mmu.enter();
  try {
    const v = mmu.view(base + 64, n * 4, Access.Write);
    const f = new Float32Array(v.buffer, v.byteOffset, n);
    for (let i = 0; i < n; i++) f[i] = i * 0.5;
    assert.equal(mmu.read32(base + 64 + 4 * 1234), new Int32Array(new Float32Array([617]).buffer)[0]);
  } finally {
    mmu.exit();
  }
  const out = new Float32Array(n);
  mmu.read(base + 64, new Uint8Array(out.buffer));
  assert.deepEqual(Array.from(out.subarray(0, 5)), [0, 0.5, 1, 1.5, 2]);
  assert.equal(out[n - 1], (n - 1) * 0.5);
  mmu.close();
  m.close();
});

test('views never span a non-contiguous boundary; holes are EFRAGMENT for reading; bad sizes EINVAL', () => {
  const m = Memory.volatile(32 * MiB);
  const space = m.createSpace({ levels: 4 });
  const id = m.morsels.create(1);
  const base = space.map(id);
  const mmu = new Mmu(space);
  assert.throws(() => mmu.view(base, 4096), code('EFRAGMENT'), 'a never-populated page has no frame to view');
  assert.throws(() => mmu.view(base, 0), code('EINVAL'));
  assert.throws(() => mmu.view(base, -1), code('EINVAL'));
  assert.throws(() => mmu.view(base + 2 * MiB - 4, 8), code('EFAULT'));
  assert.equal(m.morsels.stats(id).dataPages, 0, 'refused read views allocate nothing');
  fc.assert(
    fc.property(fc.array(fc.integer({ min: 0, max: 511 }), { minLength: 1, maxLength: 60 }), fc.integer({ min: 0, max: 2 * MiB - 1 }), fc.integer({ min: 1, max: 64 * 1024 }), (pages, off, len) => {
      // Populate pages in a random order: frames land out of page order, breaking contiguity.
      for (const p of pages) m.morsels.write(id, p * 4096, new Uint8Array([p & 0xff]));
      const bytes = Math.min(len, 2 * MiB - off);
      mmu.enter();
      try {
        const frames: number[] = [];
        for (let p = Math.floor(off / 4096); p <= Math.floor((off + bytes - 1) / 4096); p++) frames.push(mmu.translate(base + p * 4096, Access.Read));
        const contiguous = frames.every((f, i) => f === frames[0] + i && f !== 0x9f && f >>> 18 === frames[0] >>> 18);
        let v: Uint8Array | null = null;
        try {
          v = mmu.view(base + off, bytes);
        } catch (e) {
          assert.ok(code('EFRAGMENT')(e), String(e));
        }
        assert.equal(v !== null, contiguous, `view exists iff frames ${frames.slice(0, 4)}... are contiguous`);
        if (v !== null) {
          const expected = new Uint8Array(bytes);
          mmu.read(base + off, expected);
          assert.deepEqual(v, expected);
          assert.equal(v.byteOffset, m.region.byteOffsetInWindow(frames[0] as Frame) + (off & 4095) + (m.region.bytesOf(frames[0] as Frame).byteOffset));
        }
      } finally {
        mmu.exit();
      }
    }),
    { numRuns: 60 },
  );
  mmu.close();
  m.close();
});

/** Creates and destroys one morsel, so the registries' own tables exist before frames are counted. */
function warmRegistries(m: Memory): void {
  const warm = m.morsels.create(2);
  m.morsels.write(warm, 0, new Uint8Array(1));
  m.morsels.destroy(warm);
}

test('batch population of a whole 2 MiB table takes one run of contiguous frames: one view covers it', () => {
  const m = Memory.volatile(32 * MiB);
  warmRegistries(m);
  m.createSpace().destroy(); // the spaces registry's tables, too
  const free = m.alloc.freeFrames();
  const space = m.createSpace({ levels: 4 });
  const id = m.morsels.create(2); // 1 GiB morsel: tables below its root
  const base = space.map(id);
  assert.equal(m.morsels.populate(id, 2 * MiB, 4 * MiB), 2 * 512 + 2, 'two runs of 512 pages and their two tables');
  const mmu = new Mmu(space);
  mmu.enter();
  try {
    const v = mmu.view(base + 2 * MiB, 2 * MiB, Access.Write);
    const f = new Float32Array(v.buffer, v.byteOffset, v.length / 4);
    f.fill(1.25);
    // Two runs are two allocations: one view spans them only if the allocator placed them side by side.
    const adjacent = mmu.translate(base + 4 * MiB - 4096, Access.Read) + 1 === mmu.translate(base + 4 * MiB, Access.Read);
    if (adjacent) assert.equal(mmu.view(base + 4 * MiB - 4096, 8192).length, 8192);
    else assert.throws(() => mmu.view(base + 4 * MiB - 4096, 8192), code('EFRAGMENT'));
  } finally {
    mmu.exit();
  }
  const check = new Float32Array(512 * 1024);
  mmu.read(base + 2 * MiB, new Uint8Array(check.buffer));
  assert.ok(check.every((x) => x === 1.25));
  mmu.close();
  space.destroy();
  m.morsels.destroy(id);
  assert.equal(m.alloc.freeFrames(), free, 'destroy frees every frame of the runs one by one');
  m.close();
});

test('a table run that loses an entry to a racing populate frees exactly that frame', () => {
  const m = Memory.volatile(32 * MiB);
  warmRegistries(m);
  const before = m.alloc.freeFrames();
  const id = m.morsels.create(1);
  const free = m.alloc.freeFrames();
  const region = m.region;
  const racer = m.alloc.alloc(0);
  region.zeroFrame(racer);
  const realCas = region.casEntry.bind(region);
  let calls = 0;
  // The 8th CAS of the run finds the entry taken by another thread's page.
  region.casEntry = (table, index, eLo, eHi, nLo, nHi) => {
    if (++calls === 8) realCas(table, index, 0, 0, (racer * 4096) | 7, 0);
    return realCas(table, index, eLo, eHi, nLo, nHi);
  };
  try {
    assert.equal(m.morsels.populate(id, 0, 2 * MiB), 511);
  } finally {
    region.casEntry = realCas;
  }
  assert.equal(m.morsels.stats(id).dataPages, 512);
  assert.equal(m.alloc.freeFrames(), free - 512, '511 run frames + the racer: the lost run frame is free again');
  m.morsels.destroy(id);
  assert.equal(m.alloc.freeFrames(), before, 'nothing leaked');
  m.close();
});
