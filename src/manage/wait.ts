/**
 * Waiting on an int32 of a morsel, between threads and processes: the
 * region's futex (Region.wait/notify: a futex on the shared file mapping for
 * a persistent region, Atomics.wait on the buffer for a volatile one).
 */
import type { Region, WaitResult } from '../physical/region.js';
import { PAGE_SIZE, type Frame } from '../units.js';

export type { WaitResult } from '../physical/region.js';

/** Blocks while the int32 at byte `offsetInFrame` of `frame` equals `expected`, at most `timeoutMs`. */
export function waitWord(region: Region, frame: Frame, offsetInFrame: number, expected: number, timeoutMs: number): WaitResult {
  return region.wait(frame * PAGE_SIZE + offsetInFrame, expected, timeoutMs);
}

/** Wakes at most `count` waiters on the int32 at byte `offsetInFrame` of `frame`; returns how many woke. */
export function notifyWord(region: Region, frame: Frame, offsetInFrame: number, count: number): number {
  return region.notify(frame * PAGE_SIZE + offsetInFrame, count);
}
