// Worker for morsel-threads.test: attaches to the shared region and space,
// waits at a barrier, then touches every page of the shared morsel mapping.
import { workerData, parentPort } from 'node:worker_threads';
import { Memory } from '../../src/memory.js';
import { AddressSpace } from '../../src/space/address-space.js';
import { Mmu } from '../../src/space/mmu.js';

const { region, space, base, pages, barrier, stride, seed } = workerData;
const memory = Memory.attach(region);
const mmu = new Mmu(AddressSpace.attach(memory.morsels, space));
const gate = new Int32Array(barrier);
Atomics.add(gate, 0, 1);
while (Atomics.load(gate, 1) === 0) Atomics.wait(gate, 1, 0, 10);
// Each worker starts at a different page but covers all of them, so every
// page sees concurrent faults.
for (let i = 0; i < pages; i++) {
  const p = (i * stride + seed) % pages;
  mmu.translate(base + p * 4096, 1);
}
memory.alloc.release();
parentPort!.postMessage({ faults: mmu.counters.faults });
