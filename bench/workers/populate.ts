/**
 * Population worker: attaches the region and, on request, populates its
 * slice of a mapped object by writing one byte per page (morsel lazy faults,
 * morsel batch populate + writes, conventional lazy faults) or zero-fills
 * contiguous blocks (the limit). Times itself between a shared start barrier
 * and the end of its slice.
 */
import { workerData } from 'node:worker_threads';
import { Memory } from '../../src/memory.js';
import { AddressSpace, type SpaceShare } from '../../src/space/address-space.js';
import { Mmu } from '../../src/space/mmu.js';
import { ConventionalSpace, ShmObject, type ConvSpaceShare, type ShmShare } from '../../src/conventional/index.js';
import type { RegionShare } from '../../src/physical/region.js';
import type { Frame } from '../../src/units.js';
import { nowNs } from '../stats.js';
import { Barrier, serve } from './rpc.js';

export type PopulateKind = 'morsel-lazy' | 'morsel-batch' | 'conventional-lazy' | 'limit';

export interface PopulateRequest {
  op: 'run';
  kind: PopulateKind;
  barrier: SharedArrayBuffer;
  parties: number;
  /** mapping address and this worker's page slice */
  addr: number;
  firstPage: number;
  pages: number;
  space?: SpaceShare;
  convSpace?: ConvSpaceShare;
  obj?: ShmShare;
  id?: bigint;
  /** limit: first frames of this worker's 2 MiB blocks */
  blocks?: number[];
}

export interface PopulateReply {
  t0: number;
  t1: number;
}

const memory = Memory.attach((workerData as { share: RegionShare }).share);

/** The limit zeroes with set() from a zero buffer: the fastest bulk zeroing on a SharedArrayBuffer here (Region.zeroFrame uses it too). */
const ZERO_BLOCK = new Uint8Array(2 * 1024 * 1024);

function run(req: PopulateRequest): PopulateReply {
  const first = req.addr + req.firstPage * 4096;
  const end = first + req.pages * 4096;
  const barrier = new Barrier(req.parties, req.barrier);
  switch (req.kind) {
    case 'morsel-lazy':
    case 'morsel-batch': {
      const mmu = new Mmu(AddressSpace.attach(memory.morsels, req.space!));
      barrier.arrive();
      const t0 = nowNs();
      if (req.kind === 'morsel-batch') memory.morsels.populate(req.id!, req.firstPage * 4096, req.pages * 4096);
      for (let va = first; va < end; va += 4096) mmu.write8(va, 1);
      return { t0, t1: nowNs() };
    }
    case 'conventional-lazy': {
      const space = ConventionalSpace.attach(memory, req.convSpace!);
      space.adopt(ShmObject.open(memory, req.obj!));
      const mmu = new Mmu(space);
      barrier.arrive();
      const t0 = nowNs();
      for (let va = first; va < end; va += 4096) mmu.write8(va, 1);
      return { t0, t1: nowNs() };
    }
    case 'limit': {
      const region = memory.region;
      barrier.arrive();
      const t0 = nowNs();
      for (const f of req.blocks!) region.bytesOf(f as Frame).set(ZERO_BLOCK, region.byteOffsetInWindow(f as Frame));
      return { t0, t1: nowNs() };
    }
  }
}

serve((msg) => {
  if (msg.op === 'exit') {
    memory.alloc.release();
    return null;
  }
  return run(msg as unknown as PopulateRequest);
});
