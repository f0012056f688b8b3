import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Memory } from '../src/memory.js';
import { Access, Mmu } from '../src/space/mmu.js';
import { MiB } from '../src/units.js';
import { freeFrames } from './helpers.js';
import { startPeer } from './peer-thread.js';

const code = (c: string) => (e: unknown) => (e as { code?: string }).code === c;

test('a destroyed space: map, unmap, inspection and a second destroy are EBADF and leak nothing', () => {
  const m = Memory.volatile(16 * MiB);
  const id = m.morsels.create(1);
  const start = freeFrames(m);
  const space = m.createSpace();
  const base = space.map(id);
  space.destroy();
  assert.equal(freeFrames(m), start, 'destroy returned the tables');
  assert.throws(() => space.map(id), code('EBADF'));
  assert.throws(() => space.map(id, { address: base }), code('EBADF'));
  assert.throws(() => space.unmap(base), code('EBADF'));
  assert.throws(() => space.mappingAt(base), code('EBADF'));
  assert.throws(() => space.mappings(), code('EBADF'));
  assert.throws(() => space.destroy(), code('EBADF'));
  assert.throws(() => new Mmu(space), code('EBADF'));
  assert.equal(freeFrames(m), start, 'no frame leaked by the refused calls');
  m.morsels.destroy(id); // destroy unmapped it: no longer counted as mapped
});

test("a stale Mmu never reads the new space that reuses its space's root frame", () => {
  const m = Memory.volatile(16 * MiB);
  const old = m.createSpace({ levels: 4 });
  const stale = new Mmu(old);
  const base = old.map(m.morsels.create(1), { address: 2 * MiB });
  stale.write8(base, 1);
  assert.equal(stale.read8(base), 1); // cached in its TLB
  old.destroy();
  const fresh = m.createSpace({ levels: 4 });
  assert.equal(fresh.rootFrame, old.rootFrame, 'the root frame was reused (what makes the test meaningful)');
  const secret = m.morsels.create(1);
  assert.equal(fresh.map(secret, { address: 2 * MiB }), base);
  new Mmu(fresh).write8(base, 0x5e);
  assert.throws(() => stale.read8(base), code('EBADF'));
  assert.throws(() => stale.write8(base, 2), code('EBADF'));
  assert.throws(() => stale.translate(base, Access.Read), code('EBADF'));
  assert.throws(() => stale.read(base, new Uint8Array(10)), code('EBADF'));
  assert.throws(() => stale.flush(), code('EBADF'));
  assert.throws(() => stale.enter(), code('EBADF'));
  assert.equal(new Mmu(fresh).read8(base), 0x5e, 'the new space is unchanged');
  assert.throws(() => stale.exit(), code('EINVAL'), 'the refused enter left no section open');
});

test('a closed Mmu is EBADF; close is refused inside a section; Symbol.dispose closes', () => {
  const m = Memory.volatile(8 * MiB);
  const space = m.createSpace();
  const base = space.map(m.morsels.create(0));
  const mmu = new Mmu(space);
  mmu.write8(base, 3);
  mmu.enter();
  assert.throws(() => mmu.close(), code('EBUSY'));
  mmu.exit();
  assert.throws(() => mmu.exit(), code('EINVAL'));
  mmu.close();
  assert.throws(() => mmu.read8(base), code('EBADF'));
  assert.throws(() => mmu.translate(base, Access.Read), code('EBADF'));
  assert.throws(() => mmu.enter(), code('EBADF'));
  assert.throws(() => mmu.close(), code('EBADF'));
  const other = new Mmu(space);
  other[Symbol.dispose]();
  assert.throws(() => other.read8(base), code('EBADF'));
  assert.equal(new Mmu(space).read8(base), 3);
});

test("unmap or destroy inside this thread's own access section is EBUSY and changes nothing", () => {
  const m = Memory.volatile(8 * MiB);
  const space = m.createSpace();
  const id = m.morsels.create(0);
  const base = space.map(id);
  const mmu = new Mmu(space);
  mmu.enter();
  assert.throws(() => space.unmap(base), code('EBUSY'));
  assert.throws(() => space.destroy(), code('EBUSY'));
  mmu.exit();
  assert.equal(space.mappingAt(base)?.rootFrame, space.mappings()[0].rootFrame, 'still mapped, space still live');
  space.unmap(base);
  space.destroy();
  m.morsels.destroy(id);
});

test('many Mmus of one thread share one reader slot, however often the thread received the space', async () => {
  const m = Memory.volatile(8 * MiB);
  const space = m.createSpace();
  const base = space.map(m.morsels.create(0));
  const mmus = Array.from({ length: 200 }, () => new Mmu(space)); // > READER_SLOTS
  mmus[199].write8(base, 5);
  assert.equal(mmus[0].read8(base), 5);
  for (const mmu of mmus) mmu.close();
  const peer = startPeer(m, space);
  try {
    // Each message clones the space's SharedArrayBuffer anew; the Mmus are never closed.
    for (let i = 0; i < 100; i++) assert.deepEqual(await peer.call({ op: 'fresh', space: space.share(), addr: base }), { value: 5 });
  } finally {
    await peer.close();
  }
  space.unmap(base);
});

test('a thread stuck inside an access: unmap gives ETIMEDOUT after its bound and keeps the morsel pinned', async () => {
  const m = Memory.volatile(8 * MiB);
  const space = m.createSpace();
  const id = m.morsels.create(1);
  const base = space.map(id);
  const peer = startPeer(m, space);
  const gate = new SharedArrayBuffer(4);
  try {
    assert.equal((await peer.call({ op: 'read8', addr: base })).value, 0);
    assert.equal((await peer.call({ op: 'hold', gate })).entered, true);
    space.quiesceTimeoutMs = 50;
    const t0 = performance.now();
    assert.throws(() => space.unmap(base), code('ETIMEDOUT'));
    assert.ok(performance.now() - t0 >= 50, 'it waited for its bound');
    assert.equal(space.mappingAt(base), null, 'the mapping is gone');
    assert.throws(() => m.morsels.destroy(id), code('EBUSY'), 'the frames the stuck thread may touch stay allocated');
    Atomics.store(new Int32Array(gate), 0, 1);
    Atomics.notify(new Int32Array(gate), 0);
    assert.equal((await peer.next()).left, true);
    assert.equal((await peer.call({ op: 'read8', addr: base })).code, 'EFAULT');
    space.destroy(); // the peer is quiescent again: no wait
    assert.equal((await peer.call({ op: 'read8', addr: base })).code, 'EBADF');
  } finally {
    await peer.close();
  }
});

test('a closed memory: every call is EBADF', () => {
  const m = Memory.volatile(8 * MiB);
  m.close();
  assert.throws(() => m.morsels, code('EBADF'));
  assert.throws(() => m.createSpace(), code('EBADF'));
  assert.throws(() => m.share(), code('EBADF'));
  assert.throws(() => m.recover(), code('EBADF'));
  assert.throws(() => m.close(), code('EBADF'));
});
