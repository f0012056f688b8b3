/**
 * Virtual-address reservations of fixed-address morsels, region-wide and
 * persistent (superblock root slot 3). Ranges are naturally aligned powers
 * of 512 x 4 KiB, so the map is a shadow 5-level page-table tree: a
 * reservation of order k is ONE entry at level k + 1 (a "top", pointing at
 * the meta morsel's root frame), and two ranges overlap exactly when one's
 * top lies on the other's path. Entries (64-bit, lo/hi as in a region table):
 *
 *   empty  (0, 0)
 *   table  lo = frame of the next-level table, hi = TABLE | tops below (count)
 *   top    lo = meta morsel root frame,        hi = TOP | its generation
 *
 * Reserve: walk down from the root, adding 1 to the count of every table
 * entry on the path (top-down, by CAS; a table whose count is > 0 is never
 * detached), then one CAS of the empty target entry to a top: the commit
 * point. A top on the path, or a target that is a top or a table with live
 * tops below, is an overlap: the counts are given back (bottom-up) and
 * EEXIST. An empty table (count 0) at the target is replaced by the top in
 * one CAS and freed (nobody can be inside it: entering needs a count).
 * Release: CAS the top to empty, then give back the path's counts bottom-up.
 *
 * Tops of destroyed meta morsels (their word's generation moved on: a
 * deferred destroy in another process, or a crash) are stale: whoever meets
 * one drops it like a release. A crash between count updates and the commit
 * leaves counts too high: that only keeps a table from being replaced by a
 * larger reservation (a spurious EEXIST until `repairCounts` at recovery),
 * never admits an overlap, because the overlap test is the tops themselves.
 */
import { MorselError, assert } from '../errors.js';
import type { FrameAllocator } from '../alloc/llfree.js';
import type { Region } from '../physical/region.js';
import { ROOT_SLOT_RESERVATIONS } from '../physical/superblock.js';
import { superblockRoot, type RootCell } from '../morsel/registry.js';
import { MorselWords, wordGeneration, wordLive, wordMeta } from '../morsel/words.js';
import { orderBytes, tableIndex, type Order } from '../morsel/order.js';
import type { Frame } from '../units.js';

const TOP_LEVEL = 5;
const KIND_TABLE = 1 << 28;
const KIND_TOP = 2 << 28;
const KIND_MASK = 3 << 28;
const PAYLOAD_MASK = (1 << 28) - 1;
/** Attempts of one reserve / count update before EBUSY (each failure means another reserver moved). */
const RETRIES = 256;
/** The reservation tree spans [0, 2^57), like a 5-level address space. */
export const RESERVABLE_LIMIT = 2 ** 57;

interface Slot {
  table: Frame;
  idx: number;
}

export interface Reservation {
  address: number;
  order: Order;
  metaRoot: number;
  generation: number;
}

export class Reservations {
  private readonly root: RootCell;
  private readonly words: MorselWords;

  constructor(
    private readonly region: Region,
    private readonly alloc: FrameAllocator,
  ) {
    this.root = superblockRoot(region, ROOT_SLOT_RESERVATIONS);
    this.words = new MorselWords(region);
  }

  /**
   * Reserves [address, address + size of `order`) for the meta morsel rooted
   * at `metaRoot` (incarnation `generation`). EEXIST on overlap with a live
   * reservation.
   */
  reserve(r: Reservation): void {
    const level = r.order + 1;
    assert(r.address % orderBytes(r.order) === 0 && r.address + orderBytes(r.order) <= RESERVABLE_LIMIT, 'reservation aligned and in range');
    const path: Slot[] = [];
    let table = this.top();
    try {
      for (let l = TOP_LEVEL; l > level; l--) {
        const slot = { table, idx: tableIndex(r.address, l) };
        table = this.enter(slot, path, r);
        path.push(slot);
      }
      this.commit({ table, idx: tableIndex(r.address, level) }, path, r, level);
    } catch (e) {
      this.giveBack(path);
      throw e;
    }
  }

  /** Adds 1 to the count of the table entry at `slot` (creating the table) and returns the table. */
  private enter(slot: Slot, path: Slot[], r: Reservation): Frame {
    for (let attempt = 0; attempt < RETRIES; attempt++) {
      const lo = this.region.loadLo(slot.table, slot.idx);
      const hi = this.region.loadHi(slot.table, slot.idx);
      if (hi === 0) {
        const fresh = this.freshTable();
        if (this.region.casEntry(slot.table, slot.idx, 0, 0, fresh, KIND_TABLE | 1)) return fresh;
        this.alloc.free(fresh);
      } else if ((hi & KIND_MASK) === KIND_TOP) {
        this.overlapOrDrop(path, slot, lo, hi, r);
      } else if (this.region.casEntry(slot.table, slot.idx, lo, hi, lo, hi + 1)) {
        return (lo >>> 0) as Frame;
      }
    }
    throw new MorselError('EBUSY', `reservation at 0x${r.address.toString(16)}: ${RETRIES} lost races`);
  }

  /** The commit: one CAS of the target entry to a top. */
  private commit(slot: Slot, path: Slot[], r: Reservation, level: number): void {
    const topHi = KIND_TOP | r.generation;
    for (let attempt = 0; attempt < RETRIES; attempt++) {
      const lo = this.region.loadLo(slot.table, slot.idx);
      const hi = this.region.loadHi(slot.table, slot.idx);
      if (hi === 0) {
        if (this.region.casEntry(slot.table, slot.idx, 0, 0, r.metaRoot, topHi)) return;
      } else if ((hi & KIND_MASK) === KIND_TOP) {
        this.overlapOrDrop(path, slot, lo, hi, r);
      } else if ((hi & PAYLOAD_MASK) === 0) {
        if (this.region.casEntry(slot.table, slot.idx, lo, hi, r.metaRoot, topHi)) {
          this.freeDetached((lo >>> 0) as Frame, level - 1);
          return;
        }
      } else if (this.dropStaleBelow([...path, slot], (lo >>> 0) as Frame, level - 1) === 0) {
        throw new MorselError('EEXIST', `0x${r.address.toString(16)}: the range holds smaller fixed-address reservations`);
      }
    }
    throw new MorselError('EBUSY', `reservation at 0x${r.address.toString(16)}: ${RETRIES} lost races`);
  }

  /** A top met on the way: EEXIST if it is live, else drop it (the caller retries). */
  private overlapOrDrop(path: Slot[], slot: Slot, lo: number, hi: number, r: Reservation): void {
    if (!this.isStale(lo >>> 0, hi & PAYLOAD_MASK)) {
      throw new MorselError('EEXIST', `0x${r.address.toString(16)} (order ${r.order}) overlaps the reservation of the meta morsel in frame ${lo >>> 0}`);
    }
    if (this.region.casEntry(slot.table, slot.idx, lo, hi, 0, 0)) this.giveBack(path);
  }

  /** Drops every stale top below `table` (a level-`level` table reached through `chain`); returns how many. */
  private dropStaleBelow(chain: Slot[], table: Frame, level: number): number {
    let dropped = 0;
    for (let idx = 0; idx < 512 && level >= 1; idx++) {
      const lo = this.region.loadLo(table, idx);
      const hi = this.region.loadHi(table, idx);
      if ((hi & KIND_MASK) === KIND_TOP && this.isStale(lo >>> 0, hi & PAYLOAD_MASK)) {
        if (this.region.casEntry(table, idx, lo, hi, 0, 0)) {
          this.giveBack(chain);
          dropped++;
        }
      } else if ((hi & KIND_MASK) === KIND_TABLE && (hi & PAYLOAD_MASK) > 0) {
        dropped += this.dropStaleBelow([...chain, { table, idx }], (lo >>> 0) as Frame, level - 1);
      }
    }
    return dropped;
  }

  /** Releases the reservation `r` if it is still there (destroy of its meta morsel). */
  release(r: Reservation): boolean {
    const level = r.order + 1;
    const path: Slot[] = [];
    let table = this.root.load() as Frame;
    for (let l = TOP_LEVEL; table !== 0 && l > level; l--) {
      const slot = { table, idx: tableIndex(r.address, l) };
      const hi = this.region.loadHi(table, slot.idx);
      if ((hi & KIND_MASK) !== KIND_TABLE) return false;
      path.push(slot);
      table = (this.region.loadLo(table, slot.idx) >>> 0) as Frame;
    }
    if (table === 0) return false;
    const idx = tableIndex(r.address, level);
    if (!this.region.casEntry(table, idx, r.metaRoot, KIND_TOP | r.generation, 0, 0)) return false;
    this.giveBack(path);
    return true;
  }

  /** Subtracts 1 from the count of each path entry, bottom-up (a table is detachable only when its count is 0). */
  private giveBack(path: Slot[]): void {
    for (let i = path.length - 1; i >= 0; i--) {
      const { table, idx } = path[i];
      for (let attempt = 0; ; attempt++) {
        assert(attempt < RETRIES * 64, 'count give-back converges');
        const lo = this.region.loadLo(table, idx);
        const hi = this.region.loadHi(table, idx);
        assert((hi & KIND_MASK) === KIND_TABLE && (hi & PAYLOAD_MASK) > 0, 'path entry is a counted table');
        if (this.region.casEntry(table, idx, lo, hi, lo, hi - 1)) break;
      }
    }
  }

  /** A top whose meta morsel incarnation is gone. */
  private isStale(metaRoot: number, generation: number): boolean {
    if (metaRoot >= this.region.frameCount) return true;
    const w = this.words.load(metaRoot);
    return !wordLive(w) || !wordMeta(w) || wordGeneration(w) !== generation;
  }

  /** Frees a detached empty subtree (no tops: its count was 0), post-order. */
  private freeDetached(table: Frame, level: number): void {
    for (let idx = 0; level > 1 && idx < 512; idx++) {
      const hi = this.region.loadHi(table, idx);
      if ((hi & KIND_MASK) === KIND_TABLE) this.freeDetached((this.region.loadLo(table, idx) >>> 0) as Frame, level - 1);
    }
    this.alloc.free(table);
  }

  private top(): Frame {
    const cur = this.root.load();
    if (cur !== 0) return cur as Frame;
    const fresh = this.freshTable();
    if (this.root.cas(0, fresh)) return fresh;
    this.alloc.free(fresh);
    return this.root.load() as Frame;
  }

  private freshTable(): Frame {
    const frame = this.alloc.alloc(0);
    this.region.zeroFrame(frame);
    return frame;
  }

  /** Every live reservation, in address order. */
  list(): (Reservation & { stale: boolean })[] {
    const out: (Reservation & { stale: boolean })[] = [];
    const walk = (table: Frame, level: number, base: number): void => {
      const span = orderBytes((level - 1) as Order);
      for (let idx = 0; idx < 512; idx++) {
        const lo = this.region.loadLo(table, idx);
        const hi = this.region.loadHi(table, idx);
        if ((hi & KIND_MASK) === KIND_TOP) {
          const metaRoot = lo >>> 0;
          const generation = hi & PAYLOAD_MASK;
          out.push({ address: base + idx * span, order: (level - 1) as Order, metaRoot, generation, stale: this.isStale(metaRoot, generation) });
        } else if ((hi & KIND_MASK) === KIND_TABLE) walk((lo >>> 0) as Frame, level - 1, base + idx * span);
      }
    };
    const top = this.root.load();
    if (top !== 0) walk(top as Frame, TOP_LEVEL, 0);
    return out;
  }

  /**
   * Recovery only (no other user): resets every table entry's count to the
   * number of tops below it, undoing counts a crash left behind. Returns the
   * number of entries corrected.
   */
  repairCounts(): number {
    let fixed = 0;
    const count = (table: Frame, level: number): number => {
      let tops = 0;
      for (let idx = 0; idx < 512; idx++) {
        const lo = this.region.loadLo(table, idx);
        const hi = this.region.loadHi(table, idx);
        if ((hi & KIND_MASK) === KIND_TOP) tops++;
        else if ((hi & KIND_MASK) === KIND_TABLE) {
          const below = count((lo >>> 0) as Frame, level - 1);
          if ((hi & PAYLOAD_MASK) !== below) {
            this.region.storeEntry(table, idx, lo, KIND_TABLE | below);
            fixed++;
          }
          tops += below;
        }
      }
      return tops;
    };
    const top = this.root.load();
    if (top !== 0) count(top as Frame, TOP_LEVEL);
    return fixed;
  }
}

/**
 * Visits every frame of the reservation tree, top-down (for the recovery
 * scanner: a visit returning false stops the descent below that table).
 * Tops point at meta morsels, which the live table owns: not visited.
 */
export function forEachReservationFrame(region: Region, visit: (frame: Frame) => boolean | void): void {
  const walk = (table: Frame, level: number): void => {
    if (visit(table) === false) return;
    for (let idx = 0; level > 1 && idx < 512; idx++) {
      const hi = region.loadHi(table, idx);
      if ((hi & KIND_MASK) === KIND_TABLE) walk((region.loadLo(table, idx) >>> 0) as Frame, level - 1);
    }
  };
  const top = superblockRoot(region, ROOT_SLOT_RESERVATIONS).load();
  if (top !== 0) walk(top as Frame, TOP_LEVEL);
}
