import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { Memory } from '../src/memory.js';
import { ConventionalSpace, ShmObject } from '../src/conventional/index.js';
import { Access, Mmu, type PagedSpace } from '../src/space/mmu.js';
import { MiB, type Frame } from '../src/units.js';

const code = (c: string) => (e: unknown) => (e as { code?: string }).code === c;
/** The window of the morsel the model covers: crosses 2 MiB tables and leaves level-2 holes. */
const SPAN = 6 * MiB + 8192;

/** Per-page reference read: one translate per page (what bulk access did before run-level translation). */
function referenceRead(m: Memory, mmu: Mmu, vaddr: number, length: number): Uint8Array {
  const out = new Uint8Array(length);
  mmu.enter();
  try {
    for (let done = 0; done < length; ) {
      const va = vaddr + done;
      const n = Math.min(4096 - (va & 4095), length - done);
      const frame = mmu.translate(va, Access.Read);
      out.set(m.region.frame(frame as Frame).subarray(va & 4095, (va & 4095) + n), done);
      done += n;
    }
  } finally {
    mmu.exit();
  }
  return out;
}

const range = fc.record({ off: fc.integer({ min: 0, max: SPAN - 1 }), len: fc.integer({ min: 0, max: 3 * MiB }) }).map(({ off, len }) => ({ off, len: Math.min(len, SPAN - off) }));
const op = fc.oneof(
  fc.record({ kind: fc.constant('write' as const), r: range, seed: fc.integer({ min: 1, max: 255 }) }),
  fc.record({ kind: fc.constant('fill' as const), r: range, seed: fc.integer({ min: 0, max: 255 }) }),
  fc.record({ kind: fc.constant('read' as const), r: range, seed: fc.constant(0) }),
  fc.record({ kind: fc.constant('roWrite' as const), r: range, seed: fc.constant(7) }),
  // batch population and a frame-consuming neighbour morsel make frames non-contiguous
  fc.record({ kind: fc.constant('populate' as const), r: range, seed: fc.constant(0) }),
  fc.record({ kind: fc.constant('interleave' as const), r: range, seed: fc.integer({ min: 1, max: 40 }) }),
);

test('run-level bulk read/write/fill agree with a byte model and a per-page reference across holes, tables and rights', () => {
  fc.assert(
    fc.property(fc.array(op, { minLength: 1, maxLength: 12 }), (ops) => {
      const m = Memory.volatile(96 * MiB);
      const space = m.createSpace({ levels: 4 });
      const id = m.morsels.create(2); // 1 GiB: level-2 holes between populated tables
      const other = m.morsels.create(2);
      const rw = space.map(id);
      const ro = space.map(id, { rights: { write: false } });
      const mmu = new Mmu(space);
      const model = new Uint8Array(SPAN);
      for (const { kind, r, seed } of ops) {
        if (kind === 'write') {
          const src = new Uint8Array(r.len).map((_, i) => (i * seed + seed) & 0xff);
          mmu.write(rw + r.off, src);
          model.set(src, r.off);
        } else if (kind === 'fill') {
          mmu.fill(rw + r.off, r.len, seed);
          model.fill(seed, r.off, r.off + r.len);
        } else if (kind === 'roWrite') {
          const free = m.alloc.freeFrames();
          if (r.len > 0) assert.throws(() => mmu.write(ro + r.off, new Uint8Array(r.len).fill(seed)), code('EACCES'));
          if (r.len > 0) assert.throws(() => mmu.fill(ro + r.off, r.len, seed), code('EACCES'));
          assert.equal(m.alloc.freeFrames(), free, 'a refused write allocates nothing');
        } else if (kind === 'populate') {
          m.morsels.populate(id, r.off, r.len);
        } else if (kind === 'interleave') {
          for (let i = 0; i < seed; i++) m.morsels.write(other, i * 4096 * 3, new Uint8Array([1]));
        } else {
          const free = m.alloc.freeFrames();
          const out = new Uint8Array(r.len).fill(0xee);
          mmu.read(ro + r.off, out);
          assert.deepEqual(out, model.subarray(r.off, r.off + r.len));
          assert.equal(m.alloc.freeFrames(), free, 'reads of holes allocate nothing');
        }
      }
      // Whole window: bulk read through both mappings = per-page reference = model.
      const all = new Uint8Array(SPAN);
      mmu.read(rw, all);
      assert.deepEqual(all, model);
      assert.deepEqual(referenceRead(m, mmu, ro, SPAN), model);
      mmu.close();
      m.close();
    }),
    { numRuns: 40 },
  );
});

test('bulk access enforces the path rights once per table and the leaf rights per page', () => {
  const m = Memory.volatile(32 * MiB);
  const space = m.createSpace({ levels: 4 });
  const id = m.morsels.create(1);
  const kernelOnly = space.map(id, { rights: { write: true, user: false } });
  const user = new Mmu(space);
  const kernel = new Mmu(space, { user: false });
  assert.throws(() => user.read(kernelOnly, new Uint8Array(10)), code('EACCES'));
  assert.throws(() => user.fill(kernelOnly + 4096, 3 * 4096, 1), code('EACCES'));
  assert.equal(m.morsels.stats(id).dataPages, 0, 'a refused fill populated nothing');
  kernel.fill(kernelOnly + 100, 2 * 4096, 9);
  const out = new Uint8Array(2 * 4096);
  kernel.read(kernelOnly + 100, out);
  assert.ok(out.every((b) => b === 9));
  // Outside any mapping: EFAULT, also for a range that starts mapped and runs past it.
  assert.throws(() => kernel.read(kernelOnly + 2 * MiB - 10, new Uint8Array(20)), code('EFAULT'));
  assert.throws(() => kernel.read(-4096, new Uint8Array(1)), code('EFAULT'));
  assert.throws(() => kernel.read(1.5, new Uint8Array(1)), code('EFAULT'));
  // Order-0 morsels: the top entry is a level-1 leaf, so its rights are checked per entry.
  const a = m.morsels.create(0);
  const b = m.morsels.create(0);
  const pa = space.map(a, { address: 64 * MiB });
  space.map(b, { address: 64 * MiB + 4096, rights: { write: false } });
  kernel.write(pa + 4000, new Uint8Array(96).fill(3));
  assert.throws(() => kernel.write(pa + 4000, new Uint8Array(200).fill(4)), code('EACCES'));
  m.close();
});

test('a shootdown in the middle of a bulk write is honoured at the next table: EFAULT, nothing written past it', () => {
  const m = Memory.volatile(64 * MiB);
  const real = m.createSpace({ levels: 4 });
  const id = m.morsels.create(2);
  const base = real.map(id);
  let populates = 0;
  // The same space seen through a private reader table (so the unmap below does not wait for
  // this thread), whose fault handler unmaps the morsel in the middle of the write.
  const racing: PagedSpace = {
    region: real.region,
    rootFrame: real.rootFrame,
    levels: real.levels,
    limit: real.limit,
    control: real.control,
    get epoch() {
      return real.epoch;
    },
    populateFrom(table, level, vaddr) {
      const frame = real.populateFrom(table, level, vaddr);
      if (++populates === 10) real.unmap(base);
      return frame;
    },
  };
  const mmu = new Mmu(racing);
  assert.throws(() => mmu.fill(base, 8 * MiB, 0x5a), code('EFAULT'));
  const pages = m.morsels.stats(id).dataPages;
  assert.ok(pages >= 10 && pages <= 512, `population stopped inside the first table (${pages} pages)`);
  const second = new Uint8Array(4096);
  m.morsels.read(id, 2 * MiB, second);
  assert.ok(second.every((b) => b === 0), 'nothing written past the shootdown table');
  mmu.close();
  m.close();
});

test('the conventional baseline still faults page by page through the same bulk path', () => {
  const m = Memory.volatile(64 * MiB);
  const mem = { region: m.region, alloc: m.alloc };
  const obj = ShmObject.create(mem, 1100); // crosses two level-1 tables
  const conv = ConventionalSpace.create(mem);
  const base = conv.mmap(obj);
  const mmu = new Mmu(conv);
  const src = new Uint8Array(1100 * 4096 - 100).map((_, i) => (i * 7) & 0xff);
  mmu.write(base + 50, src);
  const out = new Uint8Array(src.length);
  mmu.read(base + 50, out);
  assert.deepEqual(out, src);
  assert.deepEqual(referenceRead(m, mmu, base + 50, src.length), src);
  assert.ok(conv.counters.faults > 0, 'pages came through handleFault');
  assert.throws(() => mmu.read(base + 1100 * 4096 - 10, new Uint8Array(20)), code('EFAULT'));
  // Rights live in the leaf entries here: a read-only mapping refuses a bulk write once its pages are mapped.
  const ro = conv.mmap(obj, { rights: { write: false } });
  mmu.read(ro, new Uint8Array(3 * 4096));
  assert.throws(() => mmu.write(ro + 4096, new Uint8Array(10)), code('EACCES'));
  assert.throws(() => mmu.fill(ro, 3 * 4096, 1), code('EACCES'));
  mmu.close();
  m.close();
});
