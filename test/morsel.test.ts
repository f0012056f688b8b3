import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Memory } from '../src/memory.js';
import { decodeIdBits, hex } from '../src/morsel/id.js';
import { ORDERS, orderBytes, type Order } from '../src/morsel/order.js';
import { Access, Mmu } from '../src/space/mmu.js';
import { MiB } from '../src/units.js';
import { freeFrames } from './helpers.js';
import { startPeer } from './peer-thread.js';

const code = (c: string) => (e: unknown) => (e as { code?: string }).code === c;

test('create allocates exactly one 4 KiB root for every order', () => {
  const m = Memory.volatile(16 * MiB);
  for (const order of ORDERS) {
    const free = m.alloc.freeFrames();
    const id = m.morsels.create(order);
    // one root, plus at most the live table's own tables on first use
    const used = free - m.alloc.freeFrames();
    assert.ok(used >= 1 && used <= 1 + m.morsels.live.depth, `order ${order} used ${used}`);
    const s = m.morsels.stats(id);
    assert.equal(s.order, order);
    assert.equal(s.tableFrames, order === 0 ? 0 : 1);
    assert.equal(s.dataPages, order === 0 ? 1 : 0);
    assert.equal(decodeIdBits(id).rootFrame, s.rootFrame);
  }
});

test('map writes one entry at the order level; data round-trips across pages', () => {
  const m = Memory.volatile(32 * MiB);
  const space = m.createSpace({ levels: 5 });
  const mmu = new Mmu(space);
  for (const order of ORDERS) {
    const id = m.morsels.create(order);
    const base = space.map(id);
    assert.equal(base % orderBytes(order), 0, 'naturally aligned');
    const bytes = Uint8Array.from({ length: 10000 }, (_, i) => (i * 7 + order) & 0xff);
    const at = order === 0 ? base + 100 : base + orderBytes(order) - 20000;
    const len = order === 0 ? 3000 : bytes.length;
    mmu.write(at, bytes.subarray(0, len));
    const back = new Uint8Array(len);
    mmu.read(at, back);
    assert.deepEqual(back, bytes.subarray(0, len));
    assert.deepEqual(space.mappingAt(base)?.order, order);
  }
  assert.equal(space.mappings().length, ORDERS.length);
});

test('4-level spaces refuse order 4 (ENOTSUP) and map order 3 in the PML4', () => {
  const m = Memory.volatile(8 * MiB);
  const space = m.createSpace({ levels: 4 });
  assert.throws(() => space.map(m.morsels.create(4)), code('ENOTSUP'));
  const a = space.map(m.morsels.create(3));
  assert.equal(a % orderBytes(3), 0);
  assert.ok(a < 2 ** 47);
});

test('fill, word access and page views', () => {
  const m = Memory.volatile(8 * MiB);
  const space = m.createSpace();
  const mmu = new Mmu(space);
  const base = space.map(m.morsels.create(1));
  mmu.fill(base + 4090, 20, 0xab);
  assert.equal(mmu.read8(base + 4089), 0);
  assert.equal(mmu.read8(base + 4090), 0xab);
  assert.equal(mmu.read8(base + 4109), 0xab);
  assert.equal(mmu.read8(base + 4110), 0);
  mmu.fill(base + 8192, 4096, 0x5a);
  assert.equal(mmu.read32(base + 8192 + 400), 0x5a5a5a5a);
  mmu.write32(base + 12288, -123456);
  assert.equal(mmu.read32(base + 12288), -123456);
  assert.throws(() => mmu.read32(base + 2), code('EMISALIGNED'));
  const view = mmu.pageView(base + 8192 + 77);
  assert.equal(view.length, 4096);
  assert.equal(view[0], 0x5a);
  view[1] = 9; // zero-copy: visible through the MMU
  assert.equal(mmu.read8(base + 8193), 9);
});

test('rights matrix: the top entry decides, violations are typed and allocate nothing', () => {
  const m = Memory.volatile(8 * MiB);
  const space = m.createSpace();
  const user = new Mmu(space);
  const kernel = new Mmu(space, { user: false });
  const cases: { rights: { write?: boolean; execute?: boolean; user?: boolean }; r: boolean; w: boolean; x: boolean; kw: boolean }[] = [
    { rights: { write: true }, r: true, w: true, x: false, kw: true },
    { rights: { write: false }, r: true, w: false, x: false, kw: false },
    { rights: { write: false, execute: true }, r: true, w: false, x: true, kw: false },
    { rights: { write: true, user: false }, r: false, w: false, x: false, kw: true },
  ];
  for (const c of cases) {
    const id = m.morsels.create(1);
    const base = space.map(id, { rights: c.rights });
    const free = m.alloc.freeFrames();
    const tryIt = (f: () => unknown) => {
      try {
        f();
        return true;
      } catch (e) {
        assert.ok(code('EACCES')(e), String(e));
        return false;
      }
    };
    assert.equal(tryIt(() => user.write8(base + 5000, 1)), c.w, `user write ${JSON.stringify(c.rights)}`);
    if (!c.w) assert.equal(m.alloc.freeFrames(), free, 'a refused write allocates nothing');
    assert.equal(tryIt(() => user.read8(base + 5000)), c.r, `user read ${JSON.stringify(c.rights)}`);
    assert.equal(tryIt(() => user.translate(base + 5000, Access.Execute)), c.x && c.r, `user exec ${JSON.stringify(c.rights)}`);
    assert.equal(tryIt(() => kernel.write8(base + 9000, 1)), c.kw, `kernel write ${JSON.stringify(c.rights)}`);
  }
});

test('bad input: typed errors, nothing changed, nothing leaked', () => {
  const m = Memory.volatile(8 * MiB);
  const free = freeFrames(m);
  const space = m.createSpace({ levels: 4 });
  const id = m.morsels.create(1);
  assert.throws(() => m.morsels.decode(0n), code('EINVAL'));
  assert.throws(() => m.morsels.decode(0xdeadbeefn), code('EINVAL'));
  assert.throws(() => m.morsels.decode(-1n), code('EINVAL'));
  assert.throws(() => m.morsels.decode(id | (1n << 60n)), code('EINVAL'));
  assert.throws(() => m.morsels.decode((id & ~0xe00n) | (7n << 9n)), code('EINVAL'), 'unknown tag');
  assert.throws(() => m.morsels.decode((id & ~0xe00n) | (3n << 9n)), code('EINVAL'), 'valid tag, wrong order for this root');
  assert.throws(() => m.morsels.decode(id + (1n << 12n)), code('EINVAL'), 'another frame');
  assert.throws(() => m.morsels.decode(id + (1n << 40n)), code('EINVAL'), 'PFN outside the region');
  assert.throws(() => space.map(id, { address: 4096 }), code('EMISALIGNED'));
  assert.throws(() => space.map(id, { address: 2 ** 47 }), code('ERANGE'));
  assert.throws(() => space.map(id, { address: -2 * MiB }), code('EINVAL'));
  space.map(id, { address: 2 * MiB });
  const free2 = freeFrames(m);
  assert.throws(() => space.map(id, { address: 2 * MiB }), code('EEXIST'));
  assert.throws(() => space.map(m.morsels.create(0), { address: 2 * MiB + 4096 }), code('EEXIST'));
  assert.throws(() => space.unmap(4 * MiB), code('ENOENT'));
  assert.throws(() => space.unmap(2 * MiB + 4096), code('EINVAL'));
  assert.throws(() => m.morsels.destroy(id), code('EBUSY'));
  assert.throws(() => m.morsels.populate(id, 2 * MiB - 10, 20), code('ERANGE'));
  assert.equal(freeFrames(m), free2 - 1, 'only the order-0 morsel created above');
  space.unmap(2 * MiB);
  m.morsels.destroy(id);
  assert.throws(() => m.morsels.destroy(id), code('EINVAL'), 'destroyed IDs are dead');
  space.destroy();
  assert.equal(freeFrames(m), free - 1, 'everything but the order-0 morsel is back');
});

test('destroy returns every frame; populate builds a range in one batch', () => {
  const m = Memory.volatile(64 * MiB);
  const start = freeFrames(m);
  const id = m.morsels.create(2);
  const created = m.morsels.populate(id, 3 * MiB + 100, 5 * MiB);
  const s = m.morsels.stats(id);
  assert.equal(s.dataPages, Math.floor((8 * MiB + 99) / 4096) - Math.floor((3 * MiB + 100) / 4096) + 1);
  assert.equal(created, s.dataPages + s.tableFrames - 1);
  assert.equal(m.morsels.populate(id, 3 * MiB, 5 * MiB), 0, 'idempotent');
  m.morsels.destroy(id);
  const space = m.createSpace();
  const mmu = new Mmu(space);
  const id2 = m.morsels.create(2);
  const base = space.map(id2);
  for (let off = 0; off < 4 * MiB; off += 4096) mmu.write8(base + off, 1);
  assert.equal(m.morsels.stats(id2).dataPages, 1024);
  space.unmap(base);
  m.morsels.destroy(id2);
  space.destroy();
  assert.equal(freeFrames(m), start, 'morsels, space tables and space root all freed');
});

test('meta morsels map their data morsel at the fixed address and destroy completely', () => {
  const m = Memory.volatile(16 * MiB);
  const start = freeFrames(m);
  const space = m.createSpace({ levels: 4 });
  const meta = m.morsels.createMeta(1, { address: 0x40000000, sizeBytes: 1000 });
  assert.equal(decodeIdBits(meta).meta, true);
  assert.equal(space.map(meta), 0x40000000);
  assert.throws(() => space.map(meta, { address: 0x80000000 }), code('EINVAL'));
  const mmu = new Mmu(space);
  mmu.write8(0x40000000 + 4096 * 3, 42);
  const s = m.morsels.stats(meta);
  assert.equal(s.metaInfo?.address, 0x40000000);
  assert.equal(s.metaInfo?.sizeBytes, 1000);
  assert.equal(s.data?.dataPages, 1);
  assert.throws(() => m.morsels.destroy(meta), code('EBUSY'));
  space.unmap(0x40000000);
  m.morsels.destroy(meta);
  space.destroy();
  assert.equal(freeFrames(m), start, 'meta page, data root and data pages all freed');
  assert.throws(() => m.morsels.createMeta(1, { address: 4096 }), code('EMISALIGNED'));
  assert.throws(() => m.morsels.createMeta(1, { address: 0, sizeBytes: 3 * MiB }), code('ERANGE'));
});

test('unmap shoots down the TLBs of every thread using the space', async () => {
  const m = Memory.volatile(8 * MiB);
  const space = m.createSpace();
  const a = new Mmu(space);
  const b = startPeer(m, space); // another thread, with its own Mmu and TLB
  try {
    const id = m.morsels.create(1);
    const base = space.map(id);
    a.write8(base, 7);
    assert.equal((await b.call({ op: 'read8', addr: base })).value, 7);
    assert.equal((await b.call({ op: 'read8', addr: base })).value, 7);
    assert.ok((await b.call({ op: 'hits' })).value! >= 1, "the peer's second read hit its TLB");
    space.unmap(base);
    assert.equal((await b.call({ op: 'read8', addr: base })).code, 'EFAULT');
    assert.equal((await b.call({ op: 'write8', addr: base, value: 1 })).code, 'EFAULT');
    assert.throws(() => a.write8(base, 1), code('EFAULT'));
    // remapped read-only: the stale writable TLB entries must not survive, on either thread
    space.map(id, { address: base, rights: { write: false } });
    assert.equal((await b.call({ op: 'read8', addr: base })).value, 7);
    assert.equal((await b.call({ op: 'write8', addr: base, value: 1 })).code, 'EACCES');
    assert.equal(a.read8(base), 7);
    assert.throws(() => a.write8(base, 1), code('EACCES'));
    // the same with no access in between: a writable entry cached, then unmap + read-only remap
    space.unmap(base);
    space.map(id, { address: base });
    assert.equal((await b.call({ op: 'write8', addr: base, value: 8 })).code, undefined);
    space.unmap(base);
    space.map(id, { address: base, rights: { write: false } });
    assert.equal((await b.call({ op: 'write8', addr: base, value: 9 })).code, 'EACCES');
    assert.equal(a.read8(base), 8);
  } finally {
    await b.close();
  }
});

test('IDs print as 0x + 16 hex digits of the raw entry', () => {
  const m = Memory.volatile(8 * MiB);
  const id = m.morsels.create(2);
  assert.match(hex(id), /^0x[0-9a-f]{16}$/);
  assert.equal(BigInt(hex(id)), id);
  assert.equal(Number((id >> 9n) & 7n), 3, 'order tag 3 = order 2');
});

export type { Order };
