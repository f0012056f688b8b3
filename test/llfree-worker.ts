/**
 * Worker half of test/llfree-stress.test.ts: random alloc/free of both
 * orders on a shared region, recording ownership in a shared map so a frame
 * handed out twice is caught at once.
 *
 * `node --test dist/test/` also picks this file up as a "test"; run outside a
 * worker it has no parent port and simply does nothing.
 */
import { parentPort } from 'node:worker_threads';
import { FrameAllocator, type Order } from '../src/alloc/llfree.js';
import { isMorselError } from '../src/errors.js';
import { CHILD_FRAMES } from '../src/physical/layout.js';
import { Region, type RegionShare } from '../src/physical/region.js';
import type { Frame } from '../src/units.js';

export interface StressRequest {
  share: RegionShare;
  /** one int32 per frame: 0 free, else the owning worker's id */
  owners: SharedArrayBuffer;
  /** start barrier: [0] arrivals */
  barrier: SharedArrayBuffer;
  workers: number;
  id: number;
  ops: number;
  seed: number;
  maxHeld: number;
  /** probability that an allocation is order 9 */
  hugeProb: number;
}

export interface StressReply {
  allocs: number;
  frees: number;
  enospc: number;
  huge: number;
  errors: string[];
}

/** Small deterministic PRNG (mulberry32). */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function run(req: StressRequest): StressReply {
  const a = new FrameAllocator(Region.fromShare(req.share));
  const owners = new Int32Array(req.owners);
  const barrier = new Int32Array(req.barrier);
  const rand = rng(req.seed);
  const held: Array<[number, Order]> = [];
  const reply: StressReply = { allocs: 0, frees: 0, enospc: 0, huge: 0, errors: [] };
  const claim = (f: number, n: number): void => {
    for (let i = 0; i < n; i++) {
      const prev = Atomics.compareExchange(owners, f + i, 0, req.id);
      if (prev !== 0 && reply.errors.length < 10) reply.errors.push(`frame ${f + i} handed to ${req.id} while owned by ${prev}`);
    }
  };
  const unclaim = (f: number, n: number): void => {
    // Before the free: after it, another thread may legitimately get the frame.
    for (let i = 0; i < n; i++) Atomics.store(owners, f + i, 0);
  };
  const freeOne = (): void => {
    const i = Math.floor(rand() * held.length);
    const [f, order] = held[i];
    held[i] = held[held.length - 1];
    held.pop();
    unclaim(f, order === 0 ? 1 : CHILD_FRAMES);
    a.free(f as Frame, order);
    reply.frees++;
  };

  // Start together so the threads really overlap.
  Atomics.add(barrier, 0, 1);
  for (let spin = 0; Atomics.load(barrier, 0) < req.workers && spin < 1e8; spin++);

  for (let op = 0; op < req.ops; op++) {
    if (held.length > 0 && (held.length >= req.maxHeld || rand() < 0.45)) {
      freeOne();
      continue;
    }
    const order: Order = rand() < req.hugeProb ? 9 : 0;
    let f: number;
    try {
      f = a.alloc(order);
    } catch (e) {
      if (!isMorselError(e, 'ENOSPC')) throw e;
      reply.enospc++;
      continue;
    }
    if (order === 9 && f % CHILD_FRAMES !== 0) reply.errors.push(`order-9 frame ${f} misaligned`);
    claim(f, order === 0 ? 1 : CHILD_FRAMES);
    if (!a.isAllocated(f as Frame)) reply.errors.push(`frame ${f} not allocated after alloc`);
    held.push([f, order]);
    reply.allocs++;
    if (order === 9) reply.huge++;
  }
  while (held.length > 0) freeOne();
  a.release();
  return reply;
}

const port = parentPort;
if (port !== null) {
  port.once('message', (req: StressRequest) => {
    try {
      port.postMessage(run(req));
    } catch (e) {
      port.postMessage({ allocs: 0, frees: 0, enospc: 0, huge: 0, errors: [`worker ${req.id} threw: ${(e as Error).stack}`] } satisfies StressReply);
    }
  });
}
