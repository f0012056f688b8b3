import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import fc from 'fast-check';
import { Memory } from '../src/memory.js';
import { decodeIdBits } from '../src/morsel/id.js';
import { orderBytes, type Order } from '../src/morsel/order.js';
import { Mmu } from '../src/space/mmu.js';
import { MiB } from '../src/units.js';
import { freeFrames, tempDir } from './helpers.js';

/**
 * Random create/map/write/read/unmap/destroy sequences against a plain model:
 * a Map from morsel to its bytes (sparse: offset -> byte) and its mapping.
 */
test('fast-check: morsel operations agree with an in-memory model', () => {
  const op = fc.oneof(
    fc.record({ k: fc.constant('create' as const), order: fc.constantFrom<Order>(0, 1, 2) }),
    fc.record({ k: fc.constant('map' as const), m: fc.nat(), write: fc.boolean() }),
    fc.record({ k: fc.constant('write' as const), m: fc.nat(), off: fc.nat(), data: fc.uint8Array({ minLength: 1, maxLength: 6000 }) }),
    fc.record({ k: fc.constant('read' as const), m: fc.nat(), off: fc.nat(), len: fc.integer({ min: 1, max: 6000 }) }),
    fc.record({ k: fc.constant('unmap' as const), m: fc.nat() }),
    fc.record({ k: fc.constant('destroy' as const), m: fc.nat() }),
  );
  fc.assert(
    fc.property(fc.array(op, { maxLength: 40 }), (ops) => {
      const mem = Memory.volatile(32 * MiB);
      const start = freeFrames(mem);
      const space = mem.createSpace({ levels: 4 });
      const mmu = new Mmu(space);
      type M = { id: bigint; order: Order; bytes: Map<number, number>; at: number | null; writable: boolean };
      const live: M[] = [];
      for (const o of ops) {
        if (o.k === 'create') {
          live.push({ id: mem.morsels.create(o.order), order: o.order, bytes: new Map(), at: null, writable: false });
          continue;
        }
        if (live.length === 0) continue;
        const m = live[(o as { m: number }).m % live.length];
        const size = orderBytes(m.order);
        switch (o.k) {
          case 'map':
            if (m.at !== null) break;
            m.at = space.map(m.id, { rights: { write: o.write } });
            m.writable = o.write;
            break;
          case 'unmap':
            if (m.at === null) break;
            space.unmap(m.at);
            m.at = null;
            break;
          case 'write': {
            if (m.at === null) break;
            const off = o.off % size;
            const data = o.data.subarray(0, Math.min(o.data.length, size - off));
            if (!m.writable) {
              assert.throws(() => mmu.write(m.at! + off, data), (e: unknown) => (e as { code: string }).code === 'EACCES');
              break;
            }
            mmu.write(m.at + off, data);
            data.forEach((b, i) => m.bytes.set(off + i, b));
            break;
          }
          case 'read': {
            if (m.at === null) break;
            const off = o.off % size;
            const len = Math.min(o.len, size - off);
            const got = new Uint8Array(len);
            mmu.read(m.at + off, got);
            for (let i = 0; i < len; i++) assert.equal(got[i], m.bytes.get(off + i) ?? 0);
            break;
          }
          case 'destroy':
            if (m.at !== null) {
              assert.throws(() => mem.morsels.destroy(m.id), (e: unknown) => (e as { code: string }).code === 'EBUSY');
              break;
            }
            mem.morsels.destroy(m.id);
            live.splice(live.indexOf(m), 1);
            break;
        }
      }
      for (const m of live) {
        if (m.at !== null) space.unmap(m.at);
        mem.morsels.destroy(m.id);
      }
      space.destroy();
      assert.equal(freeFrames(mem), start, 'no frame leaked');
    }),
    { numRuns: 60 },
  );
});

/**
 * An independent reader of the x86-64 format: BigInt entries from the region
 * file read with plain I/O, no project code on the path.
 */
function walkFile(file: Buffer, entry: bigint, level: number, offset: number): number {
  const pfn = (e: bigint) => Number((e >> 12n) & ((1n << 40n) - 1n));
  let frame = pfn(entry);
  for (let l = level; l >= 1; l--) {
    const idx = Math.floor(offset / 2 ** (12 + 9 * (l - 1))) % 512;
    const e = file.readBigUInt64LE(frame * 4096 + idx * 8);
    assert.equal(e & 1n, 1n, `present at level ${l}`);
    assert.equal((e >> 7n) & 1n, 0n, 'no PS leaves');
    frame = pfn(e);
  }
  return frame * 4096 + (offset % 4096);
}

test('an independent x86-64 walker finds the written bytes where the ID says', () => {
  const dir = tempDir('morsel-walk-');
  const file = path.join(dir, 'r.region');
  try {
    const mem = Memory.create(file, 16 * MiB);
    const space = mem.createSpace({ levels: 4 });
    const mmu = new Mmu(space);
    const cases: { id: bigint; order: Order; off: number; text: string }[] = [];
    for (const order of [0, 1, 2, 3] as Order[]) {
      const id = mem.morsels.create(order);
      const off = order === 0 ? 123 : orderBytes(order) - 4096 * 3 + 17;
      const text = `morsel order ${order} says hello`;
      mmu.write(space.map(id) + off, new TextEncoder().encode(text));
      cases.push({ id, order, off, text });
    }
    mem.close();
    const bytes = fs.readFileSync(file);
    for (const c of cases) {
      const tag = Number((c.id >> 9n) & 7n);
      assert.equal(tag, c.order + 1);
      const at = walkFile(bytes, c.id, c.order, c.off);
      assert.equal(bytes.subarray(at, at + c.text.length).toString(), c.text);
      assert.equal(decodeIdBits(c.id).rootFrame, Number((c.id >> 12n) & ((1n << 40n) - 1n)));
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
