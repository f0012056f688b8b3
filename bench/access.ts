/**
 * Bulk data access through a software MMU, shared by every experiment so
 * both sides pay identical per-page costs: each page is translated (TLB,
 * walk, fault) one by one, then the data work runs over physically
 * contiguous runs of frames. This keeps the JS call overhead of one
 * TypedArray.fill per 4 KiB page (which a hardware memset does not have)
 * out of the comparison; the translation cost stays in.
 */
import type { Region } from '../src/physical/region.js';
import type { Frame } from '../src/units.js';

/** Frames per 1 GiB window of the region: a run never crosses one. */
const WINDOW_SHIFT = 18;

/** Translates every page of [addr, addr + length) and calls `run(firstFrame, frames)` per contiguous run. */
export function forEachRun(translate: (va: number) => number, addr: number, length: number, run: (first: Frame, frames: number) => void): void {
  let first = -1;
  let count = 0;
  for (let va = addr, end = addr + length; va < end; va += 4096) {
    const f = translate(va);
    if (count > 0 && f === first + count && f >>> WINDOW_SHIFT === first >>> WINDOW_SHIFT) {
      count++;
      continue;
    }
    if (count > 0) run(first as Frame, count);
    first = f;
    count = 1;
  }
  if (count > 0) run(first as Frame, count);
}

/** Fills `length` bytes (whole pages) at `addr` with byte `value`, writing through `translate`. */
export function fillPages(region: Region, translate: (va: number) => number, addr: number, length: number, value: number): void {
  const word = ((value & 0xff) * 0x01010101) | 0;
  forEachRun(translate, addr, length, (first, frames) => {
    const w = region.wordIndex(first, 0);
    region.words(first).fill(word, w, w + frames * 1024);
  });
}

/** Copies `src` (whole pages) to `addr`, writing through `translate`: TypedArray.set per contiguous run. */
export function copyInPages(region: Region, translate: (va: number) => number, addr: number, src: Uint8Array): void {
  let done = 0;
  forEachRun(translate, addr, src.length, (first, frames) => {
    region.bytesOf(first).set(src.subarray(done, done + frames * 4096), region.byteOffsetInWindow(first));
    done += frames * 4096;
  });
}

/** Sum of all 32-bit words of the pages at `addr` (a cheap checksum), reading through `translate`. */
export function checksumPages(region: Region, translate: (va: number) => number, addr: number, length: number): number {
  let sum = 0;
  forEachRun(translate, addr, length, (first, frames) => {
    const start = region.wordIndex(first, 0);
    sum = (sum + sumWords(region.words(first), start, start + frames * 1024)) | 0;
  });
  return sum;
}

/** Wrapping sum of words[start, end) (end - start a multiple of 4), four lanes. */
export function sumWords(words: Int32Array, start: number, end: number): number {
  let a = 0;
  let b = 0;
  let c = 0;
  let d = 0;
  for (let i = start; i < end; i += 4) {
    a = (a + words[i]) | 0;
    b = (b + words[i + 1]) | 0;
    c = (c + words[i + 2]) | 0;
    d = (d + words[i + 3]) | 0;
  }
  return (a + b + c + d) | 0;
}

/** Copies the pages at `addr` out into `dst` (a socket send), chunk by chunk. */
export function copyOutPages(region: Region, translate: (va: number) => number, addr: number, length: number, dst: Uint8Array): void {
  forEachRun(translate, addr, length, (first, frames) => {
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

/** Touches one byte of every page (read): the cost of making a mapping usable. */
export function touchPages(read8: (va: number) => number, addr: number, length: number): number {
  let sink = 0;
  for (let va = addr, end = addr + length; va < end; va += 4096) sink += read8(va);
  return sink;
}
