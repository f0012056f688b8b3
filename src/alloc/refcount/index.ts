/**
 * Reference counts keyed by frame, in the shared region (issue 13, part 2):
 * absent = 1, only counts >= 2 stored. Two tables behind one interface:
 * 'chained' (rhashtable-like, chained.ts) and 'rosebush' (inline buckets,
 * rosebush.ts); the shared machinery is in table.ts.
 */
import { FrameAllocator } from '../llfree.js';
import { check } from '../../errors.js';
import type { Region } from '../../physical/region.js';
import type { Frame } from '../../units.js';
import { W_MAGIC } from './anchor.js';
import { ChainedTable } from './chained.js';
import { RosebushTable } from './rosebush.js';
import { kindOfMagic, type RefCountTable, type RefTableKind, type RefTableOptions } from './table.js';

export type { RefCountStats, RefCountTable, RefTableKind, RefTableOptions } from './table.js';

/** The default table: the faster one on the fault path (see the refcount bench). */
export const DEFAULT_REF_TABLE: RefTableKind = 'rosebush';

/**
 * Opens the reference-count table anchored at `anchor` (a zeroed 4 KiB frame
 * owned by the caller; all zero = empty). The kind is the anchor's when the
 * table holds storage (EINVAL if `opts.kind` names another), else
 * `opts.kind` (default rosebush). One instance per thread.
 */
export function openRefCounts(region: Region, alloc: FrameAllocator, anchor: Frame, opts: RefTableOptions = {}): RefCountTable {
  region.checkFrame(anchor);
  const magic = Atomics.load(region.words(anchor), region.wordIndex(anchor, W_MAGIC));
  const stored = kindOfMagic(magic);
  check(magic === 0 || stored !== null, 'ECORRUPT', () => `anchor frame ${anchor} does not hold a reference-count table (magic 0x${(magic >>> 0).toString(16)})`);
  check(opts.kind === undefined || stored === null || stored === opts.kind, 'EINVAL', () => `anchor frame ${anchor} holds a ${stored} reference-count table, not a ${opts.kind} one`);
  const kind = stored ?? opts.kind ?? DEFAULT_REF_TABLE;
  check(kind === 'chained' || kind === 'rosebush', 'EINVAL', () => `unknown reference-count table kind ${String(kind)}`);
  return kind === 'chained' ? new ChainedTable(region, alloc, anchor, opts.onLocked) : new RosebushTable(region, alloc, anchor, opts.onLocked);
}

/**
 * Every 4 KiB storage frame of the table anchored at `anchor`, read-only
 * (reachability scans). Nothing when the anchor holds no table.
 */
export function forEachRefCountStorageFrame(region: Region, anchor: Frame, visit: (frame: number) => void): void {
  openRefCounts(region, new FrameAllocator(region), anchor).forEachStorageFrame(visit);
}

/** Every stored (frame, count) of the table anchored at `anchor`, read-only (for `check`). */
export function forEachStoredCount(region: Region, anchor: Frame, visit: (frame: number, count: number) => void): void {
  openRefCounts(region, new FrameAllocator(region), anchor).forEach(visit);
}
