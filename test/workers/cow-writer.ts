// Worker for cow.test: attaches to the shared region and space, waits at a
// barrier, then writes its own byte of every page of a mapped clone, so both
// workers take copy-on-write faults on the same shared tables and pages.
import { workerData, parentPort } from 'node:worker_threads';
import { Memory } from '../../src/memory.js';
import { AddressSpace } from '../../src/space/address-space.js';
import { Mmu } from '../../src/space/mmu.js';

const { region, space, base, pages, barrier, worker } = workerData;
const memory = Memory.attach(region);
const mmu = new Mmu(AddressSpace.attach(memory.morsels, space));
const gate = new Int32Array(barrier);
Atomics.add(gate, 0, 1);
while (Atomics.load(gate, 1) === 0) Atomics.wait(gate, 1, 0, 10);
for (let i = 0; i < pages; i++) {
  const p = (i * 7 + worker * 131) % pages; // different orders, same pages
  mmu.write8(base + p * 4096 + worker, worker + 1);
}
memory.alloc.release();
parentPort!.postMessage({ cowFaults: mmu.counters.cowFaults });
