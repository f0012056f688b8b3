/**
 * Waiting on an int32 of the region, between threads and processes. The one
 * place the mechanism is chosen: the membership layer's `region.wait/notify`
 * (a futex on the shared mapping, pairs up across processes) when the region
 * has them, else Atomics.wait/notify on the region's buffer (threads of one
 * process only: two mappings of one file are two buffers to V8).
 */
import type { Region } from '../physical/region.js';
import { PAGE_SIZE, type Frame } from '../units.js';

export type WaitResult = 'ok' | 'not-equal' | 'timed-out';

interface FutexRegion {
  wait(byteOffset: number, expected: number, timeoutMs: number): WaitResult;
  notify(byteOffset: number, count: number): number;
}

const futexOf = (region: Region): FutexRegion | null => {
  const r = region as unknown as Partial<FutexRegion>;
  return typeof r.wait === 'function' && typeof r.notify === 'function' ? (r as FutexRegion) : null;
};

/** Blocks while the int32 at byte `offsetInFrame` of `frame` equals `expected`, at most `timeoutMs`. */
export function waitWord(region: Region, frame: Frame, offsetInFrame: number, expected: number, timeoutMs: number): WaitResult {
  const futex = futexOf(region);
  if (futex !== null) return futex.wait(frame * PAGE_SIZE + offsetInFrame, expected, timeoutMs);
  return Atomics.wait(region.words(frame), region.wordIndex(frame, offsetInFrame / 4), expected, timeoutMs);
}

/** Wakes at most `count` waiters on the int32 at byte `offsetInFrame` of `frame`; returns how many woke. */
export function notifyWord(region: Region, frame: Frame, offsetInFrame: number, count: number): number {
  const futex = futexOf(region);
  if (futex !== null) return futex.notify(frame * PAGE_SIZE + offsetInFrame, count);
  return Atomics.notify(region.words(frame), region.wordIndex(frame, offsetInFrame / 4), count);
}
