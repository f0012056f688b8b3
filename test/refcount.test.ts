import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { Memory } from '../src/memory.js';
import { openRefCounts, type RefCountTable, type RefTableKind } from '../src/cow/refcount/index.js';
import { isMorselError } from '../src/errors.js';
import { MiB, type Frame } from '../src/units.js';

const KINDS: RefTableKind[] = ['chained', 'rosebush'];

/** A fresh volatile memory and a zeroed anchor frame. */
function fresh(sizeBytes = 64 * MiB): { m: Memory; anchor: Frame } {
  const m = Memory.volatile(sizeBytes);
  const anchor = m.alloc.alloc(0);
  m.region.zeroFrame(anchor);
  return { m, anchor };
}

/** The table's entries as a Map (asserting no frame is listed twice). */
function entries(t: RefCountTable): Map<number, number> {
  const out = new Map<number, number>();
  t.forEach((f, c) => {
    assert.ok(!out.has(f), `frame ${f} listed once`);
    out.set(f, c);
  });
  return out;
}

for (const kind of KINDS) {
  test(`${kind}: counts follow a Map model across resizes (fast-check)`, () => {
    let resized = 0;
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.constantFrom('inc', 'inc', 'dec', 'get'), fc.integer({ min: 0, max: 1500 })), { minLength: 1, maxLength: 3000, size: 'max' }), (ops) => {
        const { m, anchor } = fresh();
        const free0 = m.alloc.freeFrames();
        const t = openRefCounts(m.region, m.alloc, anchor, { kind });
        const model = new Map<number, number>();
        for (const [op, x] of ops) {
          const f = 300 + x * 7;
          const have = model.get(f) ?? 1;
          if (op === 'inc') {
            assert.equal(t.increment(f), have + 1);
            model.set(f, have + 1);
          } else if (op === 'dec') {
            const want = have - 1;
            assert.equal(t.decrement(f), want);
            if (want >= 2) model.set(f, want);
            else model.delete(f);
          } else assert.equal(t.get(f), have);
        }
        for (const [f, c] of model) assert.equal(t.get(f), c);
        assert.deepEqual(entries(t), model);
        assert.equal(t.stats().entries, model.size);
        if ((t as unknown as { resizes: number }).resizes > 0) resized++;
        t.reset();
        assert.equal(m.alloc.freeFrames(), free0, 'reset frees every storage frame');
        assert.equal(t.get(300), 1);
      }),
      { numRuns: 25 },
    );
    assert.ok(resized > 0, 'some runs crossed a resize');
  });

  test(`${kind}: many entries grow the table through several resizes; storage is listed`, () => {
    const { m, anchor } = fresh(128 * MiB);
    const t = openRefCounts(m.region, m.alloc, anchor, { kind });
    const n = 20_000;
    for (let i = 0; i < n; i++) t.increment(1000 + i);
    for (let i = 0; i < n; i += 2) t.increment(1000 + i);
    for (let i = 0; i < n; i++) assert.equal(t.get(1000 + i), i % 2 === 0 ? 3 : 2);
    const s = t.stats();
    assert.equal(s.entries, n);
    let frames = 0;
    t.forEachStorageFrame((f) => {
      assert.ok(m.alloc.isAllocated(f as Frame));
      frames++;
    });
    assert.ok(frames * 4096 >= s.storageBytes && frames > 0);
    for (let i = 0; i < n; i++) assert.equal(t.decrement(1000 + i), i % 2 === 0 ? 2 : 1);
    assert.equal(t.stats().entries, n / 2);
    const again = openRefCounts(m.region, m.alloc, anchor);
    assert.equal(again.kind, kind, 'the kind is recorded in the anchor');
    assert.equal(again.get(1000), 2);
    assert.throws(() => openRefCounts(m.region, m.alloc, anchor, { kind: kind === 'chained' ? 'rosebush' : 'chained' }), (e) => isMorselError(e, 'EINVAL'));
  });
}
