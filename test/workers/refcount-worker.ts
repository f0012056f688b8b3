// Worker for refcount.test: a thread (workerData) or a process (argv) that
// opens the reference-count table at a given anchor and hammers it, or (a
// process in 'hold' mode) stalls inside a bucket lock until it is killed.
import { isMainThread, parentPort, workerData } from 'node:worker_threads';
import { Memory } from '../../src/memory.js';
import { openRefCounts, type RefCountTable, type RefTableKind } from '../../src/alloc/refcount/index.js';
import type { Frame } from '../../src/units.js';

export interface HammerPlan {
  /** frames every participant increments `rounds` times and decrements `drops` times */
  shared: number[];
  /** frames only this participant touches, incremented `rounds` times */
  own: number[];
  rounds: number;
  drops: number;
}

/** Interleaves shared and own increments, then drops the shared ones. */
export function hammer(t: RefCountTable, plan: HammerPlan): void {
  const n = Math.max(plan.shared.length, plan.own.length);
  for (let r = 0; r < plan.rounds; r++) {
    for (let i = 0; i < n; i++) {
      if (i < plan.own.length) t.increment(plan.own[i]);
      if (i < plan.shared.length) t.increment(plan.shared[(i + r * 7) % plan.shared.length]);
    }
  }
  for (let d = 0; d < plan.drops; d++) for (const f of plan.shared) t.decrement(f);
}

/** Spins (bounded) on a gate word of the region: arrive, then wait for go. */
function gate(m: Memory, gateFrame: number): void {
  const words = m.region.words(gateFrame as Frame);
  const i = m.region.wordIndex(gateFrame as Frame, 0);
  Atomics.add(words, i, 1);
  const local = new Int32Array(new SharedArrayBuffer(4));
  for (let spins = 0; Atomics.load(words, i + 1) === 0 && spins < 100_000; spins++) Atomics.wait(local, 0, 0, 0.1);
}

if (!isMainThread) {
  const { share, anchor, kind, plan, gateFrame, hold } = workerData as { share: never; anchor: number; kind: RefTableKind; plan: HammerPlan; gateFrame: number; hold?: { frame: number; ms: number } };
  const m = Memory.attach(share);
  if (hold !== undefined) {
    // A live holder: keeps the bucket lock of `frame` for `ms`, then finishes its increment.
    const t = openRefCounts(m.region, m.alloc, anchor as Frame, {
      kind,
      onLocked: (f) => {
        if (f !== hold.frame) return;
        parentPort!.postMessage({ locked: true });
        Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, hold.ms);
      },
    });
    t.increment(hold.frame);
  } else {
    const t = openRefCounts(m.region, m.alloc, anchor as Frame, { kind });
    gate(m, gateFrame);
    hammer(t, plan);
  }
  m.alloc.release();
  parentPort!.postMessage({ done: true });
} else if (process.send !== undefined) {
  const [file, anchorText, kind, mode, arg] = process.argv.slice(2);
  const m = Memory.open(file);
  const anchor = Number(anchorText) as Frame;
  if (mode === 'hold') {
    const target = Number(arg);
    const t = openRefCounts(m.region, m.alloc, anchor, {
      kind: kind as RefTableKind,
      onLocked: (f) => {
        if (f !== target) return;
        process.send!({ locked: true });
        Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0); // stall with the lock held until killed
      },
    });
    t.increment(target + 1); // storage exists; a neighbour entry
    t.increment(target);
  } else {
    const { plan, gateFrame } = JSON.parse(arg) as { plan: HammerPlan; gateFrame: number };
    const t = openRefCounts(m.region, m.alloc, anchor, { kind: kind as RefTableKind });
    gate(m, gateFrame);
    hammer(t, plan);
    m.close();
    process.send({ done: true }, () => process.exit(0));
  }
}
