/**
 * Worker half of bench/refcount.ts: one thread of a two-thread run. It
 * opens the table at the anchor once, then for each "run" message waits at
 * the start barrier and applies one operation to its slice of the key list.
 */
import { parentPort } from 'node:worker_threads';
import { Memory } from '../src/memory.js';
import { openRefCounts, type RefCountTable, type RefTableKind } from '../src/alloc/refcount/index.js';
import type { RegionShare } from '../src/physical/region.js';
import type { Frame } from '../src/units.js';
import { nowNs } from './stats.js';

export type RefOp = 'lookup' | 'increment' | 'decrement' | 'insert' | 'remove';

export interface RefSetup {
  cmd: 'setup';
  share: RegionShare;
  anchor: number;
  kind: RefTableKind;
}

export interface RefRun {
  cmd: 'run';
  op: RefOp;
  /** Int32Array of keys; this thread applies `op` to keys[from..to) */
  keys: SharedArrayBuffer;
  from: number;
  to: number;
  /** passes over keys[from..to) (lookup / increment / decrement: long enough runs for both threads to overlap) */
  loops: number;
  /** [0] arrivals, [1] go generation */
  ctrl: SharedArrayBuffer;
  gen: number;
}

export interface RefRunResult {
  t0: number;
  t1: number;
}

export const CTRL_ARRIVED = 0;
export const CTRL_GO = 1;

/** Applies `op` to keys[from..to); returns a checksum so the work is not optimized away. */
export function applyOp(t: RefCountTable, op: RefOp, keys: Int32Array, from: number, to: number): number {
  let sum = 0;
  if (op === 'lookup') for (let i = from; i < to; i++) sum += t.get(keys[i]);
  else if (op === 'increment' || op === 'insert') for (let i = from; i < to; i++) sum += t.increment(keys[i]);
  else for (let i = from; i < to; i++) sum += t.decrement(keys[i]);
  return sum;
}

let memory: Memory | null = null;
let table: RefCountTable | null = null;

function waitForGo(ctrl: Int32Array, gen: number): void {
  Atomics.add(ctrl, CTRL_ARRIVED, 1);
  for (let v = Atomics.load(ctrl, CTRL_GO); v !== gen; v = Atomics.load(ctrl, CTRL_GO)) Atomics.wait(ctrl, CTRL_GO, v, 1000);
}

parentPort?.on('message', (msg: RefSetup | RefRun | { cmd: 'release' }) => {
  if (msg.cmd === 'setup') {
    memory = Memory.attach(msg.share);
    table = openRefCounts(memory.region, memory.alloc, msg.anchor as Frame, { kind: msg.kind });
    parentPort!.postMessage({ ok: true });
  } else if (msg.cmd === 'run') {
    waitForGo(new Int32Array(msg.ctrl), msg.gen);
    const t0 = nowNs();
    const keys = new Int32Array(msg.keys);
    for (let l = 0; l < msg.loops; l++) applyOp(table!, msg.op, keys, msg.from, msg.to);
    parentPort!.postMessage({ t0, t1: nowNs() } satisfies RefRunResult);
  } else {
    memory?.alloc.release();
    parentPort!.postMessage({ ok: true });
  }
});
