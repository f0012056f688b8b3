/**
 * Worker half of bench/alloc.ts. One worker = one thread of a variant: it
 * opens the shared allocator once, then for each "run" message waits at the
 * start barrier and runs batches of K allocations followed by K frees until
 * it has done `ops` alloc+free pairs (or, for the CAS limit, `ops`
 * compare-exchange increments on its own cache line).
 */
import { parentPort } from 'node:worker_threads';
import { performance } from 'node:perf_hooks';
import { FrameAllocator, type Order } from '../src/alloc/llfree.js';
import { LockedAllocator, type LockedShare } from '../src/alloc/locked.js';
import { Region, type RegionShare } from '../src/physical/region.js';
import type { Frame } from '../src/units.js';

export type AllocSetup =
  | { kind: 'llfree'; region: RegionShare }
  | { kind: 'locked'; locked: LockedShare }
  | { kind: 'cas'; cells: SharedArrayBuffer };

export interface AllocRun {
  cmd: 'run';
  order: Order;
  ops: number;
  K: number;
  /** [0] arrivals, [1] go generation */
  ctrl: SharedArrayBuffer;
  gen: number;
  id: number;
}

export interface AllocRunResult {
  t0: number;
  t1: number;
  /** mean time per allocation / per free over all batches (ns); a mean, because performance.now() is coarse next to one batch */
  allocNs: number;
  freeNs: number;
}

export const CTRL_ARRIVED = 0;
export const CTRL_GO = 1;
/** Int32 slots between two threads' CAS cells: 64 bytes, separate cache lines. */
export const CAS_STRIDE = 16;

interface Allocator {
  alloc(order: Order): Frame;
  free(frame: Frame, order: Order): void;
  release(): void;
}

function waitForGo(ctrl: Int32Array, gen: number): void {
  Atomics.add(ctrl, CTRL_ARRIVED, 1);
  for (let v = Atomics.load(ctrl, CTRL_GO); v !== gen; v = Atomics.load(ctrl, CTRL_GO)) Atomics.wait(ctrl, CTRL_GO, v, 1000);
}

function runAllocFree(a: Allocator, msg: AllocRun): AllocRunResult {
  const frames = new Int32Array(msg.K);
  let allocMs = 0;
  let freeMs = 0;
  const batches = Math.ceil(msg.ops / msg.K);
  waitForGo(new Int32Array(msg.ctrl), msg.gen);
  const t0 = Number(process.hrtime.bigint());
  for (let b = 0; b < batches; b++) {
    const b0 = performance.now();
    for (let i = 0; i < msg.K; i++) frames[i] = a.alloc(msg.order);
    const b1 = performance.now();
    for (let i = 0; i < msg.K; i++) a.free(frames[i] as Frame, msg.order);
    const b2 = performance.now();
    allocMs += b1 - b0;
    freeMs += b2 - b1;
  }
  const t1 = Number(process.hrtime.bigint());
  const n = batches * msg.K;
  return { t0, t1, allocNs: (allocMs * 1e6) / n, freeNs: (freeMs * 1e6) / n };
}

function runCas(cells: Int32Array, msg: AllocRun): AllocRunResult {
  const idx = msg.id * CAS_STRIDE;
  waitForGo(new Int32Array(msg.ctrl), msg.gen);
  const t0 = Number(process.hrtime.bigint());
  for (let i = 0; i < msg.ops; i++) {
    const v = Atomics.load(cells, idx);
    Atomics.compareExchange(cells, idx, v, v + 1);
  }
  const t1 = Number(process.hrtime.bigint());
  return { t0, t1, allocNs: 0, freeNs: 0 };
}

const port = parentPort;
if (port !== null) {
  let allocator: Allocator | null = null;
  let cells: Int32Array | null = null;
  port.on('message', (msg: AllocSetup | AllocRun | { cmd: 'release' }) => {
    if ('kind' in msg) {
      if (msg.kind === 'llfree') allocator = new FrameAllocator(Region.fromShare(msg.region));
      else if (msg.kind === 'locked') allocator = LockedAllocator.fromShare(msg.locked);
      else cells = new Int32Array(msg.cells);
      port.postMessage('ready');
    } else if (msg.cmd === 'run') {
      port.postMessage(cells !== null ? runCas(cells, msg) : runAllocFree(allocator!, msg));
    } else {
      allocator?.release();
      port.postMessage('released');
    }
  });
}
