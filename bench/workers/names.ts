/**
 * Names benchmark worker: attaches the region, loads a list of paths, then
 * on request opens and closes each (a name through the Names API with its
 * rights check, or a file) after a shared start barrier, timing itself.
 */
import * as fs from 'node:fs';
import { workerData } from 'node:worker_threads';
import { Memory } from '../../src/memory.js';
import type { RegionShare } from '../../src/physical/region.js';
import { aluWork } from '../env.js';
import { nowNs } from '../stats.js';
import { Barrier, serve } from './rpc.js';

export type NamesRequest =
  | { op: 'load'; paths: string[] }
  | { op: 'open-close'; kind: 'names' | 'fs-shm'; barrier: SharedArrayBuffer; parties: number; rounds: number }
  | { op: 'probe'; probe: 'alu' | 'map'; barrier: SharedArrayBuffer; parties: number; units: number }
  | { op: 'exit' };

export interface NamesReply {
  t0: number;
  t1: number;
}

const memory = Memory.attach((workerData as { share: RegionShare }).share);
const names = memory.names;
let paths: string[] = [];
let probeSink = 0;
/**
 * The map probe: the same paths in a plain Map to objects of a lookup-cache
 * entry's shape, in this thread's heap only (no region, no shared memory).
 */
let probeMap = new Map<string, { a: number; b: number; c: number; d: number; e: number; f: number; g: number }>();

serve((msg) => {
  const req = msg as unknown as NamesRequest;
  if (req.op === 'load') {
    paths = req.paths;
    probeMap = new Map(paths.map((p, i) => [p, { a: i, b: i, c: i, d: i, e: i, f: i, g: i }]));
    return;
  }
  if (req.op === 'exit') {
    memory.close();
    return;
  }
  new Barrier(req.parties, req.barrier).arrive();
  const t0 = nowNs();
  if (req.op === 'probe') {
    // The sink keeps the work from being optimized away.
    if (req.probe === 'alu') probeSink ^= aluWork(req.units);
    else for (let u = 0; u < req.units; u++) for (const p of paths) probeSink ^= probeMap.get(p)!.g;
    return { t0, t1: nowNs() } satisfies NamesReply;
  }
  for (let round = 0; round < req.rounds; round++) {
    if (req.kind === 'names') for (const p of paths) names.close(names.open(p));
    else for (const p of paths) fs.closeSync(fs.openSync(p, 'r'));
  }
  return { t0, t1: nowNs() } satisfies NamesReply;
});
