import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import * as E from '../src/paging/entry.js';
import { MIN_HUGE_ORDER, decodeIdBits, encodeId, parseId } from '../src/morsel/id.js';
import type { Frame } from '../src/units.js';
import type { Order } from '../src/morsel/order.js';

test('entry bit positions are the x86-64 ones', () => {
  const bits: [number, number][] = [[E.P, 0], [E.RW, 1], [E.US, 2], [E.PWT, 3], [E.PCD, 4], [E.A, 5], [E.D, 6], [E.PS, 7], [E.G, 8]];
  for (const [mask, bit] of bits) assert.equal(mask, 1 << bit);
  assert.equal(E.entryToBigInt(0, E.HI_NX), 1n << 63n);
  assert.equal(E.entryToBigInt(0, E.HI_META), 1n << 52n);
  assert.equal(E.entryToBigInt(0, E.HI_MORSEL_TOP), 1n << 53n);
});

test('fast-check: PFN and flags round-trip through the split halves exactly like a 64-bit reference', () => {
  fc.assert(
    fc.property(fc.integer({ min: 0, max: E.MAX_PFN }), fc.integer({ min: 0, max: 0xfff }), fc.boolean(), (pfn, flags, nx) => {
      const lo = E.makeLo(pfn, flags);
      const hi = E.makeHi(pfn, nx ? E.HI_NX : 0);
      const ref = (BigInt(pfn) << 12n) | BigInt(flags) | (nx ? 1n << 63n : 0n);
      assert.equal(E.entryToBigInt(lo, hi), ref);
      assert.equal(E.pfnOf(lo, hi), pfn);
      const back = E.entryFromBigInt(ref);
      assert.equal(back.lo, lo);
      assert.equal(back.hi, hi);
    }),
  );
});

test('fast-check: morsel IDs encode and decode, and any other flag bit is rejected', () => {
  fc.assert(
    fc.property(fc.integer({ min: 1, max: E.MAX_PFN }), fc.constantFrom<Order>(0, 1, 2, 3, 4), fc.boolean(), fc.boolean(), fc.integer({ min: 0, max: 63 }), (pfn, order, meta, hugeWanted, bit) => {
      const huge = hugeWanted && !meta && order >= MIN_HUGE_ORDER; // the huge policy exists only there
      const id = encodeId(pfn as Frame, order, meta, huge);
      const d = decodeIdBits(id);
      assert.deepEqual([d.rootFrame, d.order, d.meta, d.huge], [pfn, order, meta, huge]);
      assert.equal(parseId('0x' + id.toString(16)), id);
      const flipped = id ^ (1n << BigInt(bit));
      const isPfnBit = bit >= 12 && bit <= 51;
      if (!isPfnBit && bit !== 52) {
        // flipping a flag, the tag or a reserved bit must never yield a valid ID of the same meaning
        let ok = false;
        try {
          const f = decodeIdBits(flipped);
          ok = f.order !== order || f.huge !== huge; // a tag change decodes as another order, bit 54 as another policy
        } catch (e) {
          ok = (e as { code: string }).code === 'EINVAL';
        }
        assert.ok(ok, `bit ${bit}`);
      }
    }),
  );
});
