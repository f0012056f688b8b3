import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Worker } from 'node:worker_threads';
import { Memory } from '../src/memory.js';
import { orderForSize } from '../src/manage/names.js';
import { parseHandle } from '../src/manage/handle.js';
import { Mmu } from '../src/space/mmu.js';
import { RW, HI_NX } from '../src/paging/entry.js';
import { KiB, MiB } from '../src/units.js';
import { freeFrames } from './helpers.js';
import { forEachReservationFrame } from '../src/manage/reservations.js';
import { decodeIdBits } from '../src/morsel/id.js';

/** Free frames plus every persistent table (registries, namespace, reservations): balances when all is gone. */
function balance(m: Memory): number {
  let tables = 0;
  m.names.ns.forEachFrame(() => tables++);
  forEachReservationFrame(m.region, () => void tables++);
  return freeFrames(m) + tables;
}

const code = (c: string) => (e: unknown) => (e as { code?: string }).code === c;

test('create picks the order from the size; write/read at offsets; holes read as zeros without allocating', () => {
  const m = Memory.volatile(32 * MiB);
  const names = m.names;
  assert.equal(orderForSize(1), 0);
  assert.equal(orderForSize(4 * KiB + 1), 1);
  assert.equal(orderForSize(50 * MiB), 2);
  names.mkdir('/models');
  const h = names.create('/models/w', { sizeBytes: 100 * KiB });
  assert.equal(h.dataOrder, 1);
  const data = new Float32Array([1.5, 2.5, -3]);
  names.write(h, 8190, new Uint8Array(data.buffer)); // crosses a page boundary
  const free = m.alloc.freeFrames();
  assert.deepEqual([...names.read(h, 50 * KiB, 16)], new Array(16).fill(0), 'a hole');
  assert.equal(m.alloc.freeFrames(), free, 'reading a hole allocated nothing');
  names.close(h);
  const g = names.open('/models/w');
  assert.deepEqual([...new Float32Array(names.read(g, 8190, 12).slice().buffer)], [1.5, 2.5, -3]);
  assert.throws(() => names.read(g, 100 * KiB - 4, 8), code('ERANGE'), 'past the logical size');
  assert.throws(() => names.write(g, 0, Uint8Array.of(1)), code('EBADF'), 'opened read-only');
  names.close(g);
  assert.throws(() => names.read(g, 0, 1), code('EBADF'), 'closed');
  assert.throws(() => names.close(g), code('EBADF'), 'double close');
  const s = names.stat('/models/w');
  assert.equal(s.kind, 'morsel');
  assert.equal(s.sizeBytes, 100 * KiB);
  assert.equal(s.order, 1);
  assert.equal(s.users, 0);
  assert.equal(s.dataPages, 2);
  assert.deepEqual(parseHandle(s.handle!), { id: g.id, generation: g.generation });
});

test('unlink of an open morsel defers the destroy to the last close; frames balance', () => {
  const m = Memory.volatile(32 * MiB);
  const names = m.names;
  const before = balance(m);
  const h = names.create('/a', { sizeBytes: 3 * MiB });
  names.write(h, 2 * MiB, Uint8Array.of(42));
  const space = m.createSpace();
  const at = names.map(h, space, { write: true });
  assert.equal(names.unlink('/a'), false, 'in use: deferred');
  assert.throws(() => names.open('/a'), code('ENOENT'));
  const mmu = new Mmu(space);
  const got = new Uint8Array(1);
  mmu.read(at + 2 * MiB, got);
  assert.equal(got[0], 42, 'data intact for the mapping');
  names.close(h);
  assert.equal(names.read.length > 0, true);
  space.unmap(at); // the last use
  assert.throws(() => m.morsels.use(h.id, h.generation), code('ESTALE'));
  space.destroy();
  assert.equal(balance(m), before);
});

test('names: mkdir/rmdir/rename/list and the bad-input codes change nothing', () => {
  const m = Memory.volatile(16 * MiB);
  const names = m.names;
  names.mkdir('/d');
  names.close(names.create('/d/x', { sizeBytes: 10 }));
  const before = balance(m);
  assert.throws(() => names.create('/d/x', { sizeBytes: 10 }), code('EEXIST'));
  assert.throws(() => names.create('/nope/x', { sizeBytes: 10 }), code('ENOENT'));
  assert.throws(() => names.create('/d/x/y', { sizeBytes: 10 }), code('ENOTDIR'));
  assert.throws(() => names.create('/d/y', { sizeBytes: 0 }), code('EINVAL'));
  assert.throws(() => names.create('/d/y', { sizeBytes: 5000, order: 0 }), code('ERANGE'));
  assert.throws(() => names.create('/d/y', { sizeBytes: 10, mode: 0o10000 }), code('EINVAL'));
  assert.throws(() => names.open('/d'), code('EISDIR'));
  assert.throws(() => names.unlink('/d'), code('EISDIR'));
  assert.throws(() => names.rmdir('/d'), code('ENOTEMPTY'));
  assert.equal(balance(m), before, 'failed creates leave no frame behind');
  names.rename('/d/x', '/d/z');
  assert.deepEqual(names.list('/d').map((e) => e.name), ['z']);
  assert.throws(() => names.list('/d/z'), code('ENOTDIR'));
  names.unlink('/d/z');
  names.rmdir('/d');
  assert.deepEqual(names.list('/'), []);
});

test('fixed-address morsels reserve their range region-wide; an unmappable address is refused at create', () => {
  const m = Memory.volatile(32 * MiB);
  const names = m.names;
  const before = balance(m);
  const h = names.create('/fixed', { sizeBytes: 2 * MiB, fixedAddress: 0x4000_0000 });
  assert.throws(() => names.create('/same', { sizeBytes: 4096, fixedAddress: 0x4000_0000 + 8192 }), code('EEXIST'), 'inside it');
  assert.throws(() => names.create('/around', { sizeBytes: 1 << 30, fixedAddress: 0x4000_0000 }), code('EEXIST'), 'around it');
  assert.throws(() => names.create('/hi', { sizeBytes: 4096, fixedAddress: 2 ** 53 }), code('EINVAL'), 'beyond every space: not even a safe integer');
  assert.throws(() => names.create('/hi4', { sizeBytes: 4096, fixedAddress: 2 ** 47, levels: 4 }), code('ERANGE'));
  assert.throws(() => names.create('/mis', { sizeBytes: 4096, fixedAddress: 0x1001 }), code('EMISALIGNED'));
  const hi = names.create('/hi5', { sizeBytes: 4096, fixedAddress: 2 ** 47 });
  assert.equal(names.stat('/hi5').pagingLevels, 5);
  assert.equal(names.stat('/fixed').pagingLevels, 4);
  const space = m.createSpace({ levels: 5 });
  assert.equal(names.map(h, space), 0x4000_0000, 'maps at its own address');
  names.close(h);
  names.close(hi);
  assert.equal(names.reservations.list().length, 2);
  names.unlink('/hi5');
  space.destroy(); // unmaps /fixed
  names.unlink('/fixed');
  assert.equal(names.reservations.list().length, 0, 'unlink released both reservations');
  names.close(names.create('/around', { sizeBytes: 1 << 30, fixedAddress: 0x4000_0000 }));
  names.unlink('/around');
  assert.equal(balance(m), before, 'every frame back or in a persistent table');
});

test('mapping rights are at most the handle rights, enforced by the entry bits', () => {
  const m = Memory.volatile(16 * MiB);
  const names = m.names;
  names.close(names.create('/ro', { sizeBytes: 8192, mode: 0o600 }));
  const h = names.open('/ro');
  const space = m.createSpace({ levels: 4 });
  assert.throws(() => names.map(h, space, { write: true }), code('EACCES'));
  assert.throws(() => names.map(h, space, { execute: true }), code('EACCES'), 'mode has no x bit');
  const at = names.map(h, space);
  const mapping = space.mappingAt(at)!;
  assert.equal(mapping.rights.write, false);
  assert.equal(mapping.rights.execute, false);
  // the MMU refuses a write through the read-only entry
  assert.throws(() => new Mmu(space).write(at, Uint8Array.of(1)), code('EACCES'));
  void RW;
  void HI_NX;
  space.unmap(at);
  names.close(h);
});

test('wait/notify on an int32 of a morsel between threads', async () => {
  const m = Memory.volatile(16 * MiB);
  const h = m.names.create('/flag', { sizeBytes: 4096 });
  assert.equal(m.names.wait(h, 16, 1, 0), 'not-equal');
  assert.equal(m.names.wait(h, 16, 0, 1), 'timed-out');
  assert.throws(() => m.names.wait(h, 2, 0, 0), code('EMISALIGNED'));
  const w = new Worker(new URL('./workers/names-waiter.js', import.meta.url), { workerData: { share: m.share(), id: h.id.toString(), generation: h.generation } });
  const woke = new Promise((resolve, reject) => {
    w.once('message', resolve);
    w.once('error', reject);
  });
  for (let i = 0; i < 500; i++) {
    await new Promise((r) => setTimeout(r, 2));
    if (m.names.notify(h, 16, 1) > 0) break; // woke a waiter: it waits on this very word
  }
  assert.deepEqual(await woke, { result: 'ok' });
  m.names.close(h);
});

test('threads: open/read/close races unlink + re-create of the same name; a handle only ever sees its own incarnation', async () => {
  const m = Memory.volatile(64 * MiB);
  m.names.mkdir('/race', { mode: 0o777 });
  const before = balance(m);
  const progress = new SharedArrayBuffer(8);
  const run = (role: string) =>
    new Promise<{ ops: number; foreign: number; stale: number }>((resolve, reject) => {
      const w = new Worker(new URL('./workers/names-race.js', import.meta.url), { workerData: { share: m.share(), role, progress } });
      w.once('message', resolve);
      w.once('error', reject);
    });
  const [r1, r2, c] = await Promise.all([run('reader'), run('reader'), run('churner')]);
  assert.equal(r1.foreign + r2.foreign, 0, 'never another incarnation\'s bytes');
  assert.ok(r1.ops + r2.ops >= 300 && c.ops >= 500, `both sides ran (${r1.ops + r2.ops} reads, ${c.ops} re-creates, ${r1.stale + r2.stale} ENOENT/ESTALE)`);
  try {
    m.names.unlink('/race/x');
  } catch (e) {
    assert.equal((e as { code?: string }).code, 'ENOENT');
  }
  assert.equal(balance(m), before, 'every incarnation destroyed by its last user: no frame lost');
});

test('reapPending never destroys a named morsel that a rename hid from its walk of the names', () => {
  const m = Memory.volatile(16 * MiB);
  try {
    const names = m.names;
    names.mkdir('/x');
    names.mkdir('/y');
    const h = names.create('/x/m', { sizeBytes: 4096 });
    const root = decodeIdBits(h.id).rootFrame;
    const generation = h.generation;
    names.close(h);
    // A crashed unlinker's state: PENDING, no use, still named.
    assert.equal(m.morsels.markPending(root, generation), true);
    // The race, made deterministic: while the reaper walks, another user moves
    // the name from a directory not yet listed into one already listed, so the
    // first walk does not see it.
    const realWalk = (names as unknown as { namedIncarnations(): Set<string> }).namedIncarnations.bind(names);
    let walks = 0;
    (names as unknown as { namedIncarnations(): Set<string> }).namedIncarnations = () => {
      walks++;
      if (walks > 1) return realWalk();
      names.rename('/x/m', '/y/m');
      return new Set<string>();
    };
    assert.equal(names.reapPending(), 0, 'nothing destroyed');
    assert.ok(walks >= 2, 'the view the rename made stale was walked again');
    assert.equal(names.stat('/y/m').stale, false, 'the name still points at a live morsel');
    assert.equal(m.morsels.generationOf(root), generation);
    const again = names.open('/y/m');
    names.close(again);
    names.unlink('/y/m');
    assert.notEqual(m.morsels.generationOf(root), generation, 'unlinked for real: destroyed');
  } finally {
    m.close();
  }
});

/** Runs `race(path)` once, inside the next unlink, between its hold and its removal of the name (a deterministic race). */
function beforeFirstRemove(names: Memory['names'], race: (path: string) => void): void {
  const ns = names.ns as unknown as { removeIf(path: string, expect: unknown): unknown };
  const realRemoveIf = ns.removeIf.bind(ns);
  let raced = false;
  ns.removeIf = (path, expect) => {
    if (!raced) {
      raced = true;
      race(path);
    }
    return realRemoveIf(path, expect);
  };
}

test('two unlinks of one name race: the loser keeps the winner\'s PENDING, so the morsel is destroyed, not leaked', () => {
  const m = Memory.volatile(16 * MiB);
  try {
    const names = m.names;
    names.close(names.create('/m', { sizeBytes: 4096 })); // once before: the namespace's and usage registry's own tables
    names.unlink('/m');
    const before = freeFrames(m);
    // Open, so both unlinks take the hold path (an unused morsel's unlink holds DYING instead: a racing unlink waits for it).
    const user = names.create('/m', { sizeBytes: 4096 });
    const id = names.ns.lookup('/m').id;
    const root = decodeIdBits(id).rootFrame;
    const generation = m.morsels.generationOf(root);
    // The loser has resolved the name and holds the morsel when the winner's whole unlink runs.
    beforeFirstRemove(names, (path) => assert.equal(names.unlink(path), false, 'the winner: deferred to the loser\'s hold'));
    assert.throws(() => names.unlink('/m'), code('ENOENT'));
    assert.equal(m.morsels.generationOf(root), generation, 'the user still holds it');
    names.close(user);
    assert.notEqual(m.morsels.generationOf(root), generation, 'destroyed by the last close: PENDING was kept');
    assert.equal(freeFrames(m), before, 'no frame leaked');
  } finally {
    m.close();
  }
});

test('unlink racing renames: another morsel renamed in under the name is the one unlinked; the one renamed away keeps its name and is not left PENDING', () => {
  // unused: the fast path (DYING held across the removal); open: the hold path (a counted use, PENDING).
  for (const open of [false, true]) {
    const m = Memory.volatile(16 * MiB);
    try {
      const names = m.names;
      const users = [names.create('/p', { sizeBytes: 4096 }), names.create('/n2', { sizeBytes: 4096 })];
      if (!open) users.splice(0).forEach((h) => names.close(h));
      const rootOfName = (p: string): number => decodeIdBits(names.ns.lookup(p).id).rootFrame;
      const mRoot = rootOfName('/p');
      const mGen = m.morsels.generationOf(mRoot);
      const n2Root = rootOfName('/n2');
      const n2Gen = m.morsels.generationOf(n2Root);
      beforeFirstRemove(names, () => {
        names.rename('/p', '/q'); // the resolved morsel moves away...
        names.rename('/n2', '/p'); // ...and another moves in under the name
      });
      assert.equal(names.unlink('/p'), !open, `${open ? 'open' : 'unused'}: what the name held at the commit was destroyed now, or at its last close`);
      users.splice(0).forEach((h) => names.close(h));
      assert.notEqual(m.morsels.generationOf(n2Root), n2Gen, 'the morsel renamed in is gone');
      assert.equal(m.morsels.generationOf(mRoot), mGen, 'the morsel renamed away lives');
      assert.equal(names.stat('/q').stale, false);
      const h = names.open('/q');
      names.close(h); // its last use: a stray PENDING flag would destroy it here
      assert.equal(m.morsels.generationOf(mRoot), mGen, 'not PENDING: still alive after its last close');
      assert.throws(() => names.stat('/p'), code('ENOENT'));
    } finally {
      m.close();
    }
  }
});

test('exists: a morsel or directory name is taken, a free one is not, and the answer follows unlink; a missing directory is ENOENT', () => {
  const m = Memory.volatile(16 * MiB);
  const names = m.names;
  assert.equal(names.exists('/a'), false, 'an empty namespace');
  names.mkdir('/d');
  names.close(names.create('/d/x', { sizeBytes: 4 * KiB }));
  assert.equal(names.exists('/d'), true);
  assert.equal(names.exists('/d/x'), true);
  assert.equal(names.exists('/d/y'), false);
  names.unlink('/d/x');
  assert.equal(names.exists('/d/x'), false, 'unlinked');
  assert.throws(() => names.exists('/none/x'), code('ENOENT'));
  m.close();
});
