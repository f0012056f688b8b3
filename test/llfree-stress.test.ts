/**
 * Concurrency stress of the LLFree-style allocator: worker threads on one
 * volatile region race random alloc/free of both orders. A shared owner map
 * (one slot per frame, CAS 0 -> worker id on alloc) catches any frame handed
 * out twice; at the end every frame must be free again and the counters must
 * agree with the bitfields.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Worker } from 'node:worker_threads';
import { FrameAllocator } from '../src/alloc/llfree.js';
import { Region } from '../src/physical/region.js';
import { MiB } from '../src/units.js';
import type { StressReply, StressRequest } from './llfree-worker.js';

const WORKER = new URL('./llfree-worker.js', import.meta.url);

interface StressOpts {
  bytes: number;
  workers: number;
  ops: number;
  maxHeld: number;
  seed: number;
  hugeProb?: number;
  /** order-9 frames the main thread holds during the run (to squeeze the workers into few children) */
  pinHuge?: number;
}

async function stress(o: StressOpts): Promise<StressReply[]> {
  const { bytes, workers, ops, maxHeld, seed } = o;
  const region = Region.createVolatile(bytes);
  FrameAllocator.format(region);
  const main = new FrameAllocator(region);
  const pinned = Array.from({ length: o.pinHuge ?? 0 }, () => main.alloc(9));
  const owners = new SharedArrayBuffer(region.frameCount * 4);
  const barrier = new SharedArrayBuffer(4);
  const replies = await Promise.all(
    Array.from({ length: workers }, (_, i) => {
      const w = new Worker(WORKER);
      const req: StressRequest = { share: region.share(), owners, barrier, workers, id: i + 1, ops, seed: seed + i * 7919, maxHeld, hugeProb: o.hugeProb ?? 0.1 };
      return new Promise<StressReply>((resolve, reject) => {
        w.once('message', (r: StressReply) => {
          void w.terminate();
          resolve(r);
        });
        w.once('error', reject);
        w.postMessage(req);
      });
    }),
  );
  for (const r of replies) assert.deepEqual(r.errors, []);
  for (const h of pinned) main.free(h, 9);
  main.release();
  const a = new FrameAllocator(region);
  assert.equal(a.freeFrames(), a.totalAllocatable(), 'every frame free again');
  assert.deepEqual(FrameAllocator.verify(region), []);
  assert.ok(new Int32Array(owners).every((o) => o === 0), 'owner map empty');
  return replies;
}

test('stress: 3 workers, one tree (reservation held by one, others steal), ENOSPC pressure', async () => {
  // 12 MiB: 6 children, 5 whole; 3 x 150 held frames + huge blocks exhaust it often.
  const replies = await stress({ bytes: 12 * MiB, workers: 3, ops: 60_000, maxHeld: 150, seed: 1 });
  const total = replies.reduce((s, r) => s + r.allocs, 0);
  assert.ok(total > 3000, `${total} allocations`);
  assert.ok(replies.some((r) => r.enospc > 0), 'exhaustion was exercised');
});

test('stress: 4 workers, several trees', async () => {
  const replies = await stress({ bytes: 200 * MiB, workers: 4, ops: 40_000, maxHeld: 300, seed: 2 });
  assert.ok(replies.reduce((s, r) => s + r.huge, 0) > 100, 'order-9 allocations happened');
});

test('stress: 2 workers, 2 trees, tight', async () => {
  await stress({ bytes: 72 * MiB, workers: 2, ops: 40_000, maxHeld: 4000, seed: 3 });
});

test('stress: 2 workers squeezed into one child (bitfield word races)', async () => {
  // 8 MiB: children 1..3 pinned as order-9 frames by the main thread, so
  // both workers allocate from child 0's 255 frames: same words, same bits.
  const replies = await stress({ bytes: 8 * MiB, workers: 2, ops: 500_000, maxHeld: 100, seed: 4, hugeProb: 0, pinHuge: 3 });
  assert.ok(replies.every((r) => r.allocs > 100_000));
});
