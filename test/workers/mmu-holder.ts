// Worker for quiesce.test: translates one page for writing, reports its
// frame, and later fills that frame directly (as a caller of translate()
// would). mode 'raw': no access section; it writes when gate word 0 becomes
// non-zero. mode 'section': inside mmu.enter(); it writes once the space's
// epoch moved (an unmap has started and waits for it), then exits.
import { workerData, parentPort } from 'node:worker_threads';
import { Memory } from '../../src/memory.js';
import { AddressSpace } from '../../src/space/address-space.js';
import { Access, Mmu } from '../../src/space/mmu.js';
import type { Frame } from '../../src/units.js';

/** Bound on every wait of this worker. */
const WAIT_MAX_MS = 10_000;

const { region, space: share, addr, mode, gate } = workerData;
const memory = Memory.attach(region);
const space = AddressSpace.attach(memory.morsels, share);
const mmu = new Mmu(space);
const g = new Int32Array(gate);
if (mode === 'section') mmu.enter();
const frame = mmu.translate(addr, Access.Write);
const epoch = space.epoch;
parentPort!.postMessage({ frame });
const deadline = Date.now() + WAIT_MAX_MS;
if (mode === 'raw') Atomics.wait(g, 0, 0, WAIT_MAX_MS);
else while (space.epoch === epoch && Date.now() < deadline) Atomics.wait(g, 1, 0, 1);
memory.region.frame(frame as Frame).fill(0xee);
if (mode === 'section') mmu.exit();
mmu.close();
memory.alloc.release();
parentPort!.postMessage({ wrote: true });
