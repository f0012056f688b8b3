// Worker for quiesce.test: keeps filling [addr, addr + lengthBytes) with
// FILL_BYTE through its own Mmu until told to stop, counting fills that
// completed and fills refused with EFAULT (see mmu-writer-protocol.ts).
import { workerData, parentPort } from 'node:worker_threads';
import { Memory } from '../../src/memory.js';
import { AddressSpace } from '../../src/space/address-space.js';
import { Mmu } from '../../src/space/mmu.js';
import { isMorselError } from '../../src/errors.js';
import { FILL_BYTE, W_FAULTS, W_FILLS, W_STOP } from './mmu-writer-protocol.js';

const { region, space, addr, lengthBytes, control } = workerData;
const memory = Memory.attach(region);
const mmu = new Mmu(AddressSpace.attach(memory.morsels, space));
const c = new Int32Array(control);
let error: string | null = null;
while (Atomics.load(c, W_STOP) === 0) {
  try {
    mmu.fill(addr, lengthBytes, FILL_BYTE);
    Atomics.add(c, W_FILLS, 1);
  } catch (e) {
    if (!isMorselError(e, 'EFAULT')) {
      error = String(e);
      break;
    }
    Atomics.add(c, W_FAULTS, 1);
  }
}
mmu.close();
memory.alloc.release();
parentPort!.postMessage({ error });
