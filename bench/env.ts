/**
 * The benchmark environment: regions that are pre-faulted on the host
 * (a first touch costs the host kernel 5-30 us per page here, which would
 * swamp everything we measure), shared across suites so that cost is paid
 * once per run, plus leak checks and a forced GC between suites.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import { join } from 'node:path';
import { runInNewContext } from 'node:vm';
import { setFlagsFromString } from 'node:v8';
import { Memory } from '../src/memory.js';
import type { Region } from '../src/physical/region.js';
import { MiB } from '../src/units.js';
import { forEachSlotFrame } from '../src/space/user-slots.js';
import { nowNs } from './stats.js';

/** Commits every frame of the region on the host (Region.prefault); returns the time it took in ns. */
export function prefault(region: Region): number {
  const t0 = nowNs();
  region.prefault();
  return nowNs() - t0;
}

let shared: { memory: Memory; prefaultNs: number } | null = null;
let prefaultTotalNs = 0;

/**
 * A pre-faulted volatile region of at least `bytes`, shared by every suite
 * of this process (each suite must free what it allocates). A larger request
 * replaces the region.
 */
export function volatileMemory(bytes: number): Memory {
  if (shared !== null && shared.memory.region.byteLength >= bytes) return shared.memory;
  if (shared !== null) {
    shared.memory.close();
    shared = null;
    collectGarbage();
  }
  const size = Math.ceil(bytes / (4 * MiB)) * 4 * MiB;
  const memory = Memory.volatile(size);
  shared = { memory, prefaultNs: prefault(memory.region) };
  prefaultTotalNs += shared.prefaultNs;
  return memory;
}

/** Host pre-fault time of the current shared region (ns). */
export function sharedPrefaultNs(): number {
  return shared?.prefaultNs ?? 0;
}

/** Host pre-fault time of every shared region this process created (ns), for the report. */
export function totalPrefaultNs(): number {
  return prefaultTotalNs;
}

/** Drops the shared region (end of a run, or tests). */
export function releaseShared(): void {
  if (shared !== null) shared.memory.close();
  shared = null;
  collectGarbage();
}

/** A pre-faulted persistent region file in `parent` (default os.tmpdir()); `dispose` closes and deletes it. */
export function persistentMemory(bytes: number, parent: string = os.tmpdir()): { memory: Memory; path: string; prefaultNs: number; dispose: () => void } {
  const dir = fs.mkdtempSync(join(parent, 'morsel-bench-'));
  const path = join(dir, 'bench.region');
  const size = Math.ceil(bytes / (4 * MiB)) * 4 * MiB;
  const memory = Memory.create(path, size, { force: true });
  const prefaultNs = prefault(memory.region);
  return {
    memory,
    path,
    prefaultNs,
    dispose: () => {
      try {
        memory.close();
      } finally {
        fs.rmSync(dir, { recursive: true, force: true });
        collectGarbage();
      }
    },
  };
}

/** A scratch directory in `parent` (default os.tmpdir()), removed by the returned function. */
export function tempDir(prefix: string, parent: string = os.tmpdir()): { dir: string; dispose: () => void } {
  const dir = fs.mkdtempSync(join(parent, prefix));
  return { dir, dispose: () => fs.rmSync(dir, { recursive: true, force: true }) };
}

let gcFn: (() => void) | null | undefined;

/** Forces a full GC so dropped buffers (SharedArrayBuffers, file mappings) go back to the OS now. */
export function collectGarbage(): void {
  if (gcFn === undefined) {
    try {
      setFlagsFromString('--expose-gc');
      gcFn = runInNewContext('gc') as () => void;
    } catch {
      gcFn = null;
    }
  }
  gcFn?.();
}

/**
 * Free frames as this thread sees them, with this thread's reservation
 * returned first so the count is exact when no other thread holds one.
 */
export function freeFramesNow(memory: Memory): number {
  memory.alloc.release();
  return memory.alloc.freeFrames();
}

/**
 * Free frames plus the frames of the region's registries (live morsels,
 * this process's address spaces and usage counts) and of the reference-count
 * table, which grow lazily and stay: the number that must balance when
 * everything a suite created is gone.
 */
export function balance(memory: Memory): number {
  let tables = 0;
  memory.morsels.live.forEach(() => {}, () => tables++);
  forEachSlotFrame(memory.morsels, () => tables++); // per-process registries: address spaces and usage counts
  memory.morsels.cow.refs.forEachStorageFrame(() => tables++);
  memory.morsels.cow.lazy.forEachTable(() => tables++); // the lazy-clone registry: metadata like the counts
  return freeFramesNow(memory) + tables;
}

/** Throws when a suite did not give back what it allocated (`before` from balance()). */
export function checkNoLeak(memory: Memory, before: number, what: string): void {
  const after = balance(memory);
  if (before !== after) throw new Error(`${what}: ${before - after} frames not freed`);
}

const ALU_WORDS = 4096;
const aluData = Int32Array.from({ length: ALU_WORDS }, (_, i) => i * 7);

/**
 * `units` passes of integer work over a 16 KiB (L1-resident) array in four
 * independent chains: throughput-bound, touching no shared memory. Its speed
 * in one thread against two says how much of two CPUs the machine gives
 * (a host can run two vCPUs on one core's two hyperthreads, or time-slice them).
 */
export function aluWork(units: number): number {
  let a = 0;
  let b = 0;
  let c = 0;
  let d = 0;
  for (let k = 0; k < units; k++) {
    for (let i = 0; i < ALU_WORDS; i += 4) {
      a = (a + aluData[i]) | 0;
      b = (b ^ aluData[i + 1]) | 0;
      c = (c + (aluData[i + 2] << 1)) | 0;
      d = (d + aluData[i + 3] * 3) | 0;
    }
  }
  return a ^ b ^ c ^ d;
}
