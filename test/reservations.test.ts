import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { Memory } from '../src/memory.js';
import { Reservations, forEachReservationFrame } from '../src/manage/reservations.js';
import { decodeIdBits } from '../src/morsel/id.js';
import { orderBytes, type Order } from '../src/morsel/order.js';
import { MiB } from '../src/units.js';

const code = (c: string) => (e: unknown) => (e as { code?: string }).code === c;

/** A live meta morsel to own a reservation (tops of dead ones are stale by design). */
function owner(m: Memory): { metaRoot: number; generation: number; id: bigint } {
  const id = m.morsels.createMeta(0, { address: 0 }); // its own address is irrelevant here
  const metaRoot = decodeIdBits(id).rootFrame;
  return { metaRoot, generation: m.morsels.generationOf(metaRoot), id };
}

test('fast-check: reserve/release agree with an interval model; the tree frames are all visited', () => {
  const m = Memory.volatile(32 * MiB);
  const res = new Reservations(m.region, m.alloc);
  const owners = Array.from({ length: 8 }, () => owner(m));
  const baseFree = m.alloc.freeFrames();
  fc.assert(
    fc.property(
      fc.array(fc.record({ release: fc.boolean(), order: fc.integer({ min: 0, max: 3 }), slot: fc.integer({ min: 0, max: 7 }), who: fc.integer({ min: 0, max: 7 }) }), { maxLength: 40 }),
      (ops) => {
        const model: { address: number; order: Order; who: number }[] = [];
        for (const op of ops) {
          const order = op.order as Order;
          // addresses packed into one 1 GiB window so that orders overlap often
          const address = (op.slot * orderBytes(order)) % 2 ** 30;
          const o = owners[op.who];
          const r = { address, order, metaRoot: o.metaRoot, generation: o.generation };
          if (op.release) {
            const i = model.findIndex((x) => x.address === address && x.order === order && x.who === op.who);
            assert.equal(res.release(r), i >= 0);
            if (i >= 0) model.splice(i, 1);
            continue;
          }
          const overlaps = model.some((x) => x.address < address + orderBytes(order) && address < x.address + orderBytes(x.order));
          if (overlaps) assert.throws(() => res.reserve(r), code('EEXIST'));
          else {
            res.reserve(r);
            model.push({ address, order, who: op.who });
          }
        }
        const listed = res.list().map((x) => `${x.address}/${x.order}`).sort();
        assert.deepEqual(listed, model.map((x) => `${x.address}/${x.order}`).sort());
        assert.equal(res.repairCounts(), 0, 'counts exact after every operation');
        for (const x of model) res.release({ address: x.address, order: x.order, metaRoot: owners[x.who].metaRoot, generation: owners[x.who].generation });
        const frames: number[] = [];
        forEachReservationFrame(m.region, (f) => void frames.push(f));
        assert.ok(frames.every((f) => m.alloc.isAllocated(f as never)), 'every tree frame is allocated');
        // The top table exists from format on (root slot 3): only the frames below it were taken.
        assert.equal(baseFree - m.alloc.freeFrames(), frames.length - 1, 'the visitor covers every frame the tree holds (none leaked)');
      },
    ),
    { numRuns: 150 },
  );
  // Everything released: a whole-GiB reservation replaces the emptied tables.
  const o = owners[0];
  res.reserve({ address: 0, order: 2, metaRoot: o.metaRoot, generation: o.generation });
  assert.equal(res.list().length, 1);
});

test('a top whose meta morsel was destroyed is stale and gives way', () => {
  const m = Memory.volatile(16 * MiB);
  const res = new Reservations(m.region, m.alloc);
  const a = owner(m);
  res.reserve({ address: 2 * MiB, order: 1, metaRoot: a.metaRoot, generation: a.generation });
  const b = owner(m);
  assert.throws(() => res.reserve({ address: 2 * MiB, order: 1, metaRoot: b.metaRoot, generation: b.generation }), code('EEXIST'));
  m.morsels.destroy(a.id); // e.g. a deferred destroy in another process: nobody released the range
  assert.equal(res.list()[0].stale, true);
  res.reserve({ address: 0, order: 2, metaRoot: b.metaRoot, generation: b.generation }); // around the stale one
  assert.deepEqual(res.list().map((x) => [x.address, x.order, x.stale]), [[0, 2, false]]);
});

test('repairCounts undoes counts a crash left between the path increments and the commit', () => {
  const m = Memory.volatile(16 * MiB);
  const res = new Reservations(m.region, m.alloc);
  const a = owner(m);
  res.reserve({ address: 4096, order: 0, metaRoot: a.metaRoot, generation: a.generation });
  res.release({ address: 4096, order: 0, metaRoot: a.metaRoot, generation: a.generation });
  // Simulate the crash: bump the count of the top-level entry as a reserver would.
  let top = 0;
  forEachReservationFrame(m.region, (f) => void (top ||= f));
  const lo = m.region.loadLo(top as never, 0);
  const hi = m.region.loadHi(top as never, 0);
  m.region.storeEntry(top as never, 0, lo, hi + 1);
  assert.equal(res.repairCounts(), 1);
  assert.equal(res.repairCounts(), 0);
});

test('threads reserving and releasing overlapping ranges: the live reservations never overlap, counts stay exact', async () => {
  const m = Memory.volatile(64 * MiB);
  const owners = Array.from({ length: 4 }, () => owner(m));
  const { Worker } = await import('node:worker_threads');
  const run = (seed: number) =>
    new Promise<{ reserved: number; refused: number }>((resolve, reject) => {
      const w = new Worker(new URL('./workers/reserve-race.js', import.meta.url), { workerData: { share: m.share(), owners, seed, ops: 3000 } });
      w.once('message', resolve);
      w.once('error', reject);
    });
  const results = await Promise.all([run(1), run(2), run(3)]);
  assert.ok(results.every((r) => r.reserved > 0 && r.refused > 0), JSON.stringify(results));
  const res = new Reservations(m.region, m.alloc);
  const live = res.list();
  for (let i = 0; i < live.length; i++) {
    for (let j = i + 1; j < live.length; j++) {
      const a = live[i];
      const b = live[j];
      assert.ok(a.address + orderBytes(a.order) <= b.address || b.address + orderBytes(b.order) <= a.address, `overlap: ${JSON.stringify([a, b])}`);
    }
  }
  assert.equal(res.repairCounts(), 0, 'every count exact after the races');
});
