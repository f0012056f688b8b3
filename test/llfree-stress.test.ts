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

async function stress(bytes: number, workers: number, ops: number, maxHeld: number, seed: number): Promise<StressReply[]> {
  const region = Region.createVolatile(bytes);
  FrameAllocator.format(region);
  const owners = new SharedArrayBuffer(region.frameCount * 4);
  const barrier = new SharedArrayBuffer(4);
  const replies = await Promise.all(
    Array.from({ length: workers }, (_, i) => {
      const w = new Worker(WORKER);
      const req: StressRequest = { share: region.share(), owners, barrier, workers, id: i + 1, ops, seed: seed + i * 7919, maxHeld };
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
  const a = new FrameAllocator(region);
  assert.equal(a.freeFrames(), a.totalAllocatable(), 'every frame free again');
  assert.deepEqual(FrameAllocator.verify(region), []);
  assert.ok(new Int32Array(owners).every((o) => o === 0), 'owner map empty');
  return replies;
}

test('stress: 3 workers, one tree (reservation held by one, others steal), ENOSPC pressure', async () => {
  // 12 MiB: 6 children, 5 whole; 3 x 150 held frames + huge blocks exhaust it often.
  const replies = await stress(12 * MiB, 3, 6000, 150, 1);
  const total = replies.reduce((s, r) => s + r.allocs, 0);
  assert.ok(total > 3000, `${total} allocations`);
  assert.ok(replies.some((r) => r.enospc > 0), 'exhaustion was exercised');
});

test('stress: 4 workers, several trees', async () => {
  const replies = await stress(200 * MiB, 4, 6000, 300, 2);
  assert.ok(replies.reduce((s, r) => s + r.huge, 0) > 100, 'order-9 allocations happened');
});

test('stress: 2 workers, 2 trees, tight', async () => {
  await stress(72 * MiB, 2, 8000, 4000, 3);
});
