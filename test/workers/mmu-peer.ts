// Worker for morsel.test and misuse.test: a second thread with its own Mmu on
// a shared space, driven by messages. Requests: { op: 'read8' | 'write8',
// addr, value? } -> { value } or { code }; { op: 'hold', gate } enters an
// access section and stays inside until gate word 0 becomes non-zero ->
// { entered: true } first, then { left: true }; { op: 'hits' } -> { value };
// { op: 'fresh', space, addr } reads through a new Mmu over the (freshly
// cloned) space share, left open -> { value }.
import { workerData, parentPort } from 'node:worker_threads';
import { Memory } from '../../src/memory.js';
import { AddressSpace, type SpaceShare } from '../../src/space/address-space.js';
import { Mmu } from '../../src/space/mmu.js';

const { region, space } = workerData;
const memory = Memory.attach(region);
const mmu = new Mmu(AddressSpace.attach(memory.morsels, space));
/** A held section waits at most this long for its gate. */
const HOLD_MAX_MS = 30_000;

parentPort!.on('message', (req: { op: string; addr?: number; value?: number; gate?: SharedArrayBuffer; space?: SpaceShare }) => {
  try {
    if (req.op === 'read8') parentPort!.postMessage({ value: mmu.read8(req.addr!) });
    else if (req.op === 'write8') parentPort!.postMessage({ value: mmu.write8(req.addr!, req.value!) });
    else if (req.op === 'hits') parentPort!.postMessage({ value: mmu.counters.hits });
    else if (req.op === 'fresh') parentPort!.postMessage({ value: new Mmu(AddressSpace.attach(memory.morsels, req.space!)).read8(req.addr!) });
    else if (req.op === 'hold') {
      const gate = new Int32Array(req.gate!);
      mmu.enter();
      parentPort!.postMessage({ entered: true });
      Atomics.wait(gate, 0, 0, HOLD_MAX_MS);
      mmu.exit();
      parentPort!.postMessage({ left: true });
    } else if (req.op === 'close') {
      mmu.close();
      memory.alloc.release();
      parentPort!.postMessage({ closed: true });
      parentPort!.close();
    }
  } catch (e) {
    parentPort!.postMessage({ code: (e as { code?: string }).code ?? String(e) });
  }
});
