/**
 * INTERIM: the reference-count table interface, with a volatile Map-backed
 * stand-in until the region-resident tables land (single process only).
 */
import type { FrameAllocator } from '../../alloc/llfree.js';
import type { Region } from '../../physical/region.js';
import type { Frame } from '../../units.js';

export type RefTableKind = 'chained' | 'rosebush';
export interface RefCountTable {
  readonly kind: RefTableKind;
  get(frame: number): number;
  increment(frame: number): number;
  decrement(frame: number): number;
  incrementMany(frames: ArrayLike<number>, count: number): void;
  decrementMany(frames: ArrayLike<number>, count: number, onZero: (frame: number) => void): void;
  forEach(visit: (frame: number, count: number) => void): void;
  forEachStorageFrame(visit: (frame: number) => void): void;
  reset(): void;
  stats(): { entries: number; storageBytes: number; bytesPerEntry: number; resizing: boolean; probes: number; lookups: number };
}

const tables = new WeakMap<Region, Map<number, number>>();

export function openRefCounts(region: Region, _alloc: FrameAllocator, _anchor: Frame, _opts: { kind?: RefTableKind } = {}): RefCountTable {
  let m = tables.get(region);
  if (!m) tables.set(region, (m = new Map()));
  const map = m;
  return {
    kind: 'rosebush',
    get: (f) => map.get(f) ?? 1,
    increment(f) {
      const n = (map.get(f) ?? 1) + 1;
      map.set(f, n);
      return n;
    },
    decrement(f) {
      const n = (map.get(f) ?? 1) - 1;
      if (n <= 1) map.delete(f);
      else map.set(f, n);
      return n;
    },
    incrementMany(fs, count) {
      for (let i = 0; i < count; i++) this.increment(fs[i]);
    },
    decrementMany(fs, count, onZero) {
      for (let i = 0; i < count; i++) if (this.decrement(fs[i]) === 0) onZero(fs[i]);
    },
    forEach: (visit) => map.forEach((c, f) => visit(f, c)),
    forEachStorageFrame: () => {},
    reset: () => map.clear(),
    stats: () => ({ entries: map.size, storageBytes: 0, bytesPerEntry: 0, resizing: false, probes: 0, lookups: 0 }),
  };
}

/** Every storage frame of the table whose header is `anchor` (read-only; for reachability scans). */
export function forEachRefCountStorageFrame(_region: Region, _anchor: Frame, _visit: (frame: number) => void): void {}

/** Every stored (frame, count) of the table whose header is `anchor`, read-only (for `check`). */
export function forEachStoredCount(region: Region, _anchor: Frame, visit: (frame: number, count: number) => void): void {
  tables.get(region)?.forEach((c, f) => visit(f, c));
}
