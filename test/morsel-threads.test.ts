import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Worker } from 'node:worker_threads';
import { Memory } from '../src/memory.js';
import { MiB } from '../src/units.js';
import { freeFrames } from './helpers.js';

test('several workers faulting the same pages: each page populated once, losers freed', async () => {
  const m = Memory.volatile(64 * MiB);
  const start = freeFrames(m);
  const space = m.createSpace();
  const id = m.morsels.create(2);
  const base = space.map(id);
  const pages = 2048; // 8 MiB over 4 page tables
  const barrier = new SharedArrayBuffer(8);
  const workers = [0, 1, 2, 3].map(
    (w) =>
      new Worker(new URL('./workers/fault-worker.js', import.meta.url), {
        workerData: { region: m.share(), space: space.share(), base, pages, barrier, stride: 1, seed: w * 13 },
      }),
  );
  const gate = new Int32Array(barrier);
  while (Atomics.load(gate, 0) < workers.length) await new Promise((r) => setTimeout(r, 1));
  Atomics.store(gate, 1, 1);
  Atomics.notify(gate, 1);
  const results = await Promise.all(workers.map((w) => new Promise<{ faults: number }>((res, rej) => w.once('message', res).once('error', rej))));
  const faults = results.reduce((a, r) => a + r.faults, 0);
  const s = m.morsels.stats(id);
  assert.equal(s.dataPages, pages, 'every page populated exactly once');
  assert.equal(s.tableFrames, 1 + pages / 512);
  assert.ok(faults >= pages, `at least one fault per page (${faults})`);
  space.unmap(base);
  m.morsels.destroy(id);
  space.destroy();
  assert.equal(freeFrames(m), start, 'losers returned their frames: free count back to the start');
});
