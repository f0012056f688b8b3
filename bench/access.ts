/**
 * Bulk data access through a software MMU, shared by every experiment so
 * both sides pay identical costs: the range is translated by the MMU's
 * run-level translation (Mmu.runs: the first page of a run by a lookup, the
 * following ones from the walk cache, one entry load per page and none
 * inside a 2 MiB leaf; rights checked, faults taken), then the data work
 * runs over each physically contiguous run of frames. Both variants use the
 * same Mmu class, so only their page tables differ. This keeps the JS call
 * overhead of one TypedArray.fill per 4 KiB page (which a hardware memset
 * does not have) out of the comparison; the translation cost stays in.
 */
import { sumInt32 } from '../src/physical/native.js';
import type { Region } from '../src/physical/region.js';
import type { Access, Mmu } from '../src/space/mmu.js';
import { PAGE_SIZE, type Frame } from '../src/units.js';

/** What translates a helper's range: an Mmu (morsel or conventional space) and the access the work needs. */
export interface Translator {
  mmu: Mmu;
  access: Access;
}

/** Translates [addr, addr + length) (page-aligned) and calls `run(firstFrame, frames)` per physically contiguous run. */
export function forEachRun(t: Translator, addr: number, length: number, run: (first: Frame, frames: number) => void): void {
  t.mmu.runs(addr, length, t.access, (first, pageOffset, _done, n) => run(first, Math.ceil((pageOffset + n) / PAGE_SIZE)));
}

/** Fills `length` bytes (whole pages) at `addr` with byte `value`, writing through `t`. */
export function fillPages(region: Region, t: Translator, addr: number, length: number, value: number): void {
  const word = ((value & 0xff) * 0x01010101) | 0;
  forEachRun(t, addr, length, (first, frames) => {
    const w = region.wordIndex(first, 0);
    region.words(first).fill(word, w, w + frames * 1024);
  });
}

/**
 * Copies `src` (whole pages) to `addr`, writing through `t`: TypedArray.set per contiguous run;
 * `afterRun` (if given) runs after each run is copied (the durable transfer msyncs it there).
 */
export function copyInPages(region: Region, t: Translator, addr: number, src: Uint8Array, afterRun?: (first: Frame, frames: number) => void): void {
  let done = 0;
  forEachRun(t, addr, src.length, (first, frames) => {
    region.bytesOf(first).set(src.subarray(done, done + frames * 4096), region.byteOffsetInWindow(first));
    done += frames * 4096;
    afterRun?.(first, frames);
  });
}

/**
 * Sum of all 32-bit words of the pages at `addr` (a cheap checksum), reading
 * through `t`: one native pass per contiguous run (sumInt32, the
 * fastest primitive here, used by every variant alike).
 */
export function checksumPages(region: Region, t: Translator, addr: number, length: number): number {
  let sum = 0;
  forEachRun(t, addr, length, (first, frames) => {
    const at = region.byteOffsetInWindow(first);
    sum = (sum + sumInt32(region.bytesOf(first).subarray(at, at + frames * 4096))) | 0;
  });
  return sum;
}

/** Copies the pages at `addr` out into `dst` (a socket send), chunk by chunk. */
export function copyOutPages(region: Region, t: Translator, addr: number, length: number, dst: Uint8Array): void {
  forEachRun(t, addr, length, (first, frames) => {
    const bytes = region.bytesOf(first);
    let off = region.byteOffsetInWindow(first);
    for (let left = frames * 4096; left > 0; ) {
      const n = Math.min(left, dst.length);
      dst.set(bytes.subarray(off, off + n));
      off += n;
      left -= n;
    }
  });
}

/**
 * Reads one byte of every page of [addr, addr + length) through `t`'s
 * run-level translation (forEachRun): a page walk per page where frames are
 * not contiguous, one entry load per page from the walk cache where they
 * are, faults taken. What a hardware touch loop costs in TLB misses and
 * walks, without read8's access section per byte (two atomic stores and two
 * epoch loads: ~40 of its ~75 ns per page here).
 */
export function touchRuns(region: Region, t: Translator, addr: number, length: number): number {
  let sink = 0;
  forEachRun(t, addr, length, (first, frames) => {
    const bytes = region.bytesOf(first);
    const at = region.byteOffsetInWindow(first);
    for (let i = 0; i < frames; i++) sink += bytes[at + i * PAGE_SIZE];
  });
  return sink;
}

/** Translates every page of [addr, addr + length) for `t.access` (a write populates missing pages, faults included), touching no data. */
export function faultRuns(t: Translator, addr: number, length: number): void {
  forEachRun(t, addr, length, () => {});
}

/** Touches one byte of every page (read): the cost of making a mapping usable. */
export function touchPages(read8: (va: number) => number, addr: number, length: number): number {
  let sink = 0;
  for (let va = addr, end = addr + length; va < end; va += 4096) sink += read8(va);
  return sink;
}
