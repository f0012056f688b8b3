import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Worker } from 'node:worker_threads';
import { Memory } from '../src/memory.js';
import { decodeIdBits } from '../src/morsel/id.js';
import { W_PENDING } from '../src/morsel/words.js';
import { Mmu } from '../src/space/mmu.js';
import { MiB } from '../src/units.js';
import { freeFrames } from './helpers.js';

const code = (c: string) => (e: unknown) => (e as { code?: string }).code === c;

test('raw destroy of a mapped or open morsel is EBUSY; nothing changes', () => {
  const m = Memory.volatile(16 * MiB);
  const id = m.morsels.create(1);
  const gen = m.morsels.generationOf(decodeIdBits(id).rootFrame);
  const space = m.createSpace();
  const at = space.map(id, { generation: gen });
  new Mmu(space).write(at + 5000, Uint8Array.of(1, 2, 3));
  assert.throws(() => m.morsels.destroy(id), code('EBUSY'));
  assert.throws(() => m.morsels.destroy(id, { generation: gen }), code('EBUSY'));
  assert.equal(m.morsels.words.load(decodeIdBits(id).rootFrame) & 3, 0, 'no flag left behind');
  const got = new Uint8Array(3);
  new Mmu(space).read(at + 5000, got);
  assert.deepEqual([...got], [1, 2, 3]);
  space.unmap(at);
  const use = m.morsels.use(id, gen);
  assert.throws(() => m.morsels.destroy(id), code('EBUSY'), 'an open handle counts too');
  m.morsels.release(use.data.rootFrame);
  assert.equal(m.morsels.destroy(id), 'destroyed');
});

test('a deferred destroy waits for the last user: data intact until then, then every frame back', () => {
  const m = Memory.volatile(16 * MiB);
  const before = freeFrames(m);
  const id = m.morsels.create(1);
  const root = decodeIdBits(id).rootFrame;
  const gen = m.morsels.generationOf(root);
  const space = m.createSpace();
  const a = space.map(id, { generation: gen });
  const b = space.map(id, { generation: gen });
  const mmu = new Mmu(space);
  mmu.write(a + 64, Uint8Array.of(9, 8, 7));
  assert.equal(m.morsels.destroy(id, { generation: gen, defer: true }), 'deferred');
  assert.ok(m.morsels.words.load(root) & W_PENDING);
  space.unmap(a);
  const got = new Uint8Array(3);
  mmu.read(b + 64, got);
  assert.deepEqual([...got], [9, 8, 7], 'still intact through the other mapping');
  assert.equal(m.morsels.generationOf(root), gen, 'not destroyed while mapped');
  space.unmap(b);
  assert.equal(m.morsels.generationOf(root), gen + 1, 'the last unmap destroyed it');
  assert.throws(() => m.morsels.use(id, gen), code('ESTALE'));
  space.destroy();
  assert.equal(freeFrames(m), before);
});

test('reapPending destroys unnamed PENDING morsels nobody uses and keeps named or used ones', () => {
  const m = Memory.volatile(16 * MiB);
  const lone = m.morsels.create(0, { pending: true }); // a create a crash interrupted before naming
  const named = m.morsels.create(0, { pending: true }); // a crash after naming, before clearing the flag
  const used = m.morsels.create(0, { pending: true });
  const rootOf = (id: bigint) => decodeIdBits(id).rootFrame;
  // A pending create counts its creator's use; a crashed creator's count dies with its slot.
  for (const id of [lone, named, used]) m.morsels.usage.sub(rootOf(id));
  const use = m.morsels.use(used);
  const reaped = m.morsels.reapPending((root) => root === rootOf(named));
  assert.equal(reaped, 1);
  assert.throws(() => m.morsels.decode(lone), code('EINVAL'));
  assert.equal(m.morsels.words.load(rootOf(named)) & W_PENDING, 0, 'named: flag cleared');
  assert.ok(m.morsels.words.load(rootOf(used)) & W_PENDING, 'in use: left to its last user');
  m.morsels.release(use.data.rootFrame);
  assert.throws(() => m.morsels.decode(used), code('EINVAL'), 'the last release destroyed it');
});

test('meta morsels: the usage key is the data root, the word is the meta page', () => {
  const m = Memory.volatile(16 * MiB);
  const before = freeFrames(m);
  const id = m.morsels.createMeta(1, { address: 0x40000000 });
  const space = m.createSpace();
  const at = space.map(id);
  assert.equal(at, 0x40000000);
  assert.equal(m.morsels.destroy(id, { defer: true }), 'deferred');
  space.unmap(at);
  assert.throws(() => m.morsels.decode(id), code('EINVAL'));
  space.destroy();
  assert.equal(freeFrames(m), before);
});

test('map vs destroy race in threads: a successful map never points at a destroyed incarnation', async () => {
  const m = Memory.volatile(64 * MiB);
  const before = freeFrames(m);
  const MORSELS = 60;
  const ids: string[] = [];
  const gens: number[] = [];
  for (let i = 0; i < MORSELS; i++) {
    const id = m.morsels.create(1);
    m.morsels.populate(id, 0, 3 * 4096);
    ids.push(id.toString());
    gens.push(m.morsels.generationOf(decodeIdBits(id).rootFrame));
  }
  const progress = new SharedArrayBuffer(4 * (MORSELS + 1));
  const run = (role: string) =>
    new Promise<{ maps: number; violations: number; destroyed: number; busy: number }>((resolve, reject) => {
      const w = new Worker(new URL('./workers/usage-race.js', import.meta.url), { workerData: { share: m.share(), ids, gens, role, progress } });
      w.once('message', resolve);
      w.once('error', reject);
    });
  const [a, b, d] = await Promise.all([run('mapper'), run('mapper'), run('destroyer')]);
  assert.equal(d.destroyed, MORSELS, 'every morsel destroyed in the end');
  assert.equal(a.violations + b.violations, 0, 'no mapping outlived its incarnation');
  assert.ok(a.maps + b.maps >= 20 * MORSELS, `mappers mapped every morsel while it was live (${a.maps + b.maps})`);
  console.log(`# race: ${a.maps + b.maps} maps, ${d.busy} EBUSY answers to the destroyer`);
  assert.equal(freeFrames(m), before, 'all frames back (spaces destroyed by the workers)');
});

test('destroyUnused: commits through its callback only for an unused morsel; otherwise the word is left exactly as it was', () => {
  const m = Memory.volatile(16 * MiB);
  const before = freeFrames(m);
  const id = m.morsels.create(1);
  const root = decodeIdBits(id).rootFrame;
  const gen = m.morsels.generationOf(root);
  const word = m.morsels.words.load(root);
  const use = m.morsels.use(id, gen);
  let calls = 0;
  assert.equal(m.morsels.destroyUnused(id, gen, () => ++calls > 0), 'busy', 'in use: busy');
  assert.equal(calls, 0, 'the commit is not attempted while a use is counted');
  assert.equal(m.morsels.words.load(root), word);
  m.morsels.release(use.data.rootFrame);
  assert.equal(m.morsels.destroyUnused(id, gen, () => false), 'uncommitted');
  assert.equal(m.morsels.words.load(root), word, 'uncommitted: no flag left');
  assert.throws(() => m.morsels.destroyUnused(id, gen, () => { throw new Error('boom'); }), /boom/);
  assert.equal(m.morsels.words.load(root), word, 'a throwing commit leaves no flag');
  const outcome = m.morsels.destroyUnused(id, gen, () => {
    assert.equal(m.morsels.words.load(root) & 3, 3, 'DYING and PENDING held across the commit');
    assert.equal(m.morsels.reapPending(() => true), 0, 'a concurrent sweep leaves a DYING word to its holder');
    assert.equal(m.morsels.words.load(root) & 3, 3, 'the sweep did not clear PENDING under the holder');
    assert.throws(() => m.morsels.use(id, gen), code('EBUSY'), 'a use waits for the decision (bounded), never begins');
    return true;
  });
  assert.equal(outcome, 'destroyed');
  assert.throws(() => m.morsels.destroyUnused(id, gen, () => true), code('ESTALE'));
  assert.equal(freeFrames(m), before, 'every frame back');
});

test('threads count uses in their own lanes; a use given back in another thread leaves its lane; totals stay exact', async () => {
  const { tempDir } = await import('./helpers.js');
  const { join } = await import('node:path');
  const { SLOT_USAGE_ROOTS } = await import('../src/physical/layout.js');
  const m = Memory.create(join(tempDir('morsel-lanes-'), 'r'), 64 * MiB);
  try {
    m.names.close(m.names.create('/x', { sizeBytes: 8192 }));
    m.names.unlink('/x'); // the namespace's own tables stay: counted in before
    m.alloc.release();
    const before = freeFrames(m);
    m.names.close(m.names.create('/x', { sizeBytes: 8192 }));
    const rec = m.names.ns.lookup('/x');
    const key = m.morsels.dataOf(decodeIdBits(rec.id)).rootFrame;
    const start = () => new Worker(new URL('./workers/usage-lanes.js', import.meta.url), { workerData: { share: m.share() } });
    const call = (w: Worker, req: unknown) =>
      new Promise<{ lane?: number; code?: string }>((resolve, reject) => {
        w.once('message', resolve).once('error', reject);
        w.postMessage(req);
      });
    const [a, b] = [start(), start()];
    try {
      const h0 = m.names.open('/x'); // lane of the main thread
      const laneA = (await call(a, { op: 'open', path: '/x' })).lane!;
      const laneB = (await call(b, { op: 'open', path: '/x' })).lane!;
      assert.equal(m.morsels.usage.lane, 0);
      assert.ok(laneA !== laneB && laneA !== 0 && laneB !== 0, `distinct lanes (${laneA}, ${laneB})`);
      for (const lane of [0, laneA, laneB]) assert.notEqual(m.region.loadSlotRoot(m.region.userSlot, SLOT_USAGE_ROOTS[lane]), 0, `lane ${lane} holds a registry`);
      assert.equal(m.morsels.usage.total(key), 3, 'three uses, one per lane, summed region-wide');
      assert.throws(() => m.morsels.destroy(rec.id), code('EBUSY'));
      // Two threads churning one morsel at once: every count comes back.
      const churned = await Promise.all([a, b].map((w) => call(w, { op: 'churn', path: '/x', rounds: 20_000 })));
      assert.deepEqual(churned, [{}, {}]);
      assert.equal(m.morsels.usage.total(key), 3);
      // Main's handle closed in thread A: A's own lane counts one, so that one goes first; the sum is what matters.
      assert.deepEqual(await call(a, { op: 'close', handle: h0 }), {});
      h0.open = false;
      assert.equal(m.morsels.usage.total(key), 2);
      assert.equal(m.names.unlink('/x'), false, 'still open in two threads: the destroy is deferred');
      assert.deepEqual(await call(a, { op: 'exit' }), {}, 'A gives back the use it holds');
      assert.equal(m.morsels.usage.total(key), 1);
      assert.deepEqual(await call(b, { op: 'exit' }), {}, "B's close is the last use: it destroys");
      assert.equal(m.morsels.usage.total(key), 0);
      assert.throws(() => m.morsels.decodeHandle(rec.id, rec.generation), code('ESTALE'));
    } finally {
      await Promise.all([a.terminate(), b.terminate()]);
    }
    m.alloc.release();
    assert.equal(freeFrames(m), before, 'every frame of the morsel back');
  } finally {
    m.close();
  }
});
