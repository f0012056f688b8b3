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
