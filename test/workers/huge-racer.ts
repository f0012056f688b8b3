// Worker for huge.test: attaches to the shared region and space, waits at a
// barrier, then populates the same empty 2 MiB ranges of a huge morsel as its
// peer: worker 0 by MMU write faults, worker 1 by pwrite (Morsels.write), each
// writing its own byte of every page, so both race to link each range's leaf.
import { workerData, parentPort } from 'node:worker_threads';
import { Memory } from '../../src/memory.js';
import { AddressSpace } from '../../src/space/address-space.js';
import { Mmu } from '../../src/space/mmu.js';
import { PAGE_SIZE } from '../../src/units.js';
import { HUGE_FRAMES } from '../../src/paging/walk.js';
import type { RegionShare } from '../../src/physical/region.js';
import type { SpaceShare } from '../../src/space/address-space.js';

const { region, space, id, base, leaves, barrier, worker } = workerData as {
  region: RegionShare;
  space: SpaceShare;
  id: bigint;
  base: number;
  leaves: number;
  barrier: SharedArrayBuffer;
  worker: number;
};
const LEAF_BYTES = HUGE_FRAMES * PAGE_SIZE;
const memory = Memory.attach(region);
const mmu = new Mmu(AddressSpace.attach(memory.morsels, space));
const gate = new Int32Array(barrier);
const one = Uint8Array.of(worker + 1);
for (let leaf = 0; leaf < leaves; leaf++) {
  // Both threads meet before each range, so each leaf is raced, not just the first.
  Atomics.add(gate, 0, 1);
  while (Atomics.load(gate, 0) < 2 * (leaf + 1)) Atomics.wait(gate, 0, Atomics.load(gate, 0), 10);
  for (let i = 0; i < HUGE_FRAMES; i++) {
    const p = (i * 7 + worker * 131) % HUGE_FRAMES; // different orders, same pages
    const off = leaf * LEAF_BYTES + p * PAGE_SIZE + worker;
    if (worker === 0) mmu.write8(base + off, worker + 1);
    else memory.morsels.write(id, off, one);
  }
}
memory.alloc.release();
parentPort!.postMessage('done');
