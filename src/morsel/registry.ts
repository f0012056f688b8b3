/**
 * A persistent registry of 64-bit entries keyed by frame number, rooted in a
 * superblock root slot. It is itself a radix tree of 4 KiB tables built like a
 * morsel (lazily, by CAS): the key is the frame number, split 9 bits per
 * level, and the leaf slot holds the entry. Used for the live-morsel table
 * (key: root frame, value: morsel ID) and the live address-space table.
 *
 * Why keyed by frame: add, remove and lookup are O(depth) with no probing and
 * no tombstones, and each slot has exactly one possible owner, so a slot
 * update is a single CAS: crash-atomic by construction.
 */
import { assert, check, MorselError } from '../errors.js';
import { INNER_FLAGS, isPresent, makeHi, makeLo, pfnOf } from '../paging/entry.js';
import type { Region } from '../physical/region.js';
import type { FrameAllocator } from '../alloc/llfree.js';
import type { Frame } from '../units.js';
import { crashPoint } from '../crash-point.js';

/** Keys covered by one entry of a level-L registry table (index L). */
const KEY_SPAN = [0, 1, 512, 512 ** 2, 512 ** 3, 512 ** 4];

/**
 * Where a registry's top table frame is stored: a superblock root slot or a
 * field of a user-slot record. 0 = no table yet; set once by CAS.
 */
export interface RootCell {
  readonly name: string;
  load(): number;
  cas(expect: number, next: number): boolean;
}

/** The root cell in superblock root slot `slot`. */
export function superblockRoot(region: Region, slot: number): RootCell {
  return {
    name: `root slot ${slot}`,
    load: () => region.loadRootFrame(slot),
    cas: (expect, next) => region.casRoot(slot, BigInt(expect), BigInt(next)),
  };
}

/** The root cell in field `field` (SLOT_*_ROOT) of user slot `slot`'s record. */
export function userSlotRoot(region: Region, slot: number, field: number): RootCell {
  return {
    name: `user slot ${slot} field ${field}`,
    load: () => region.loadSlotRoot(slot, field),
    cas: (expect, next) => region.casSlotRoot(slot, field, expect, next),
  };
}

export class Registry {
  readonly depth: number;

  constructor(
    private readonly region: Region,
    private readonly alloc: FrameAllocator,
    readonly root: RootCell,
  ) {
    let depth = 1;
    while (512 ** depth < region.frameCount) depth++;
    this.depth = depth;
  }

  /** The registry's top table, creating it on first use. */
  private top(create: boolean): Frame | null {
    const cur = this.root.load();
    if (cur !== 0) return this.checkedTable(cur as Frame);
    if (!create) return null;
    const frame = this.freshTable();
    if (this.root.cas(0, frame)) return frame;
    this.alloc.free(frame); // lost the race: use the winner's table
    return this.top(false);
  }

  private freshTable(): Frame {
    const frame = this.alloc.alloc(0);
    this.region.zeroFrame(frame);
    crashPoint('registry:before-link-table'); // every caller links it next
    return frame;
  }

  private checkedTable(frame: Frame): Frame {
    if (!(frame > 0 && frame < this.region.frameCount)) {
      throw new MorselError('ECORRUPT', `registry ${this.root.name}: table frame ${frame} outside the region`);
    }
    return frame;
  }

  /**
   * The leaf table holding `key`'s entry (index key % 512), optionally
   * building the path; null if absent. For callers that load and CAS one
   * entry repeatedly (usage counts) without walking twice.
   */
  leaf(key: number, create: boolean): Frame | null {
    let table = this.top(create);
    for (let level = this.depth; table !== null && level > 1; level--) {
      const idx = Math.floor(key / KEY_SPAN[level]) % 512;
      let lo = this.region.loadLo(table, idx);
      if (!isPresent(lo)) {
        if (!create) return null;
        const fresh = this.freshTable();
        if (!this.region.casEntry(table, idx, 0, 0, makeLo(fresh, INNER_FLAGS), makeHi(fresh, 0))) this.alloc.free(fresh);
        lo = this.region.loadLo(table, idx);
        assert(isPresent(lo), 'registry path entry present after CAS');
      }
      table = this.checkedTable(pfnOf(lo, this.region.loadHi(table, idx)) as Frame);
    }
    return table;
  }

  /** Stores (lo, hi) under `key`; EEXIST if the key already holds an entry. */
  add(key: number, lo: number, hi: number): void {
    assert(isPresent(lo), 'registry values are present entries');
    const leaf = this.leaf(key, true)!;
    check(this.region.casEntry(leaf, key % 512, 0, 0, lo, hi), 'EEXIST', () => `registry ${this.root.name}: key ${key} already registered`);
  }

  /**
   * Replaces the entry under `key` iff it is (expectLo, expectHi) (0, 0 =
   * absent; then the path is built). One CAS; returns whether it won.
   */
  cas(key: number, expectLo: number, expectHi: number, lo: number, hi: number): boolean {
    assert(isPresent(lo) || (lo === 0 && hi === 0), 'registry values are present entries or empty');
    const leaf = this.leaf(key, !isPresent(expectLo));
    return leaf !== null && this.region.casEntry(leaf, key % 512, expectLo, expectHi, lo, hi);
  }

  /** Removes the entry under `key` iff it is (lo, hi). Returns whether it did. */
  remove(key: number, lo: number, hi: number): boolean {
    const leaf = this.leaf(key, false);
    return leaf !== null && this.region.casEntry(leaf, key % 512, lo, hi, 0, 0);
  }

  /** The entry under `key` as [lo, hi], or null. */
  get(key: number): [number, number] | null {
    const leaf = this.leaf(key, false);
    if (leaf === null) return null;
    const lo = this.region.loadLo(leaf, key % 512);
    return isPresent(lo) ? [lo, this.region.loadHi(leaf, key % 512)] : null;
  }

  /** Visits every (key, lo, hi). `tables` (optional) receives the registry's own frames. */
  forEach(visit: (key: number, lo: number, hi: number) => void, tables?: (frame: Frame) => void): void {
    const top = this.top(false);
    if (top === null) return;
    const walk = (table: Frame, level: number, base: number): void => {
      tables?.(table);
      for (let idx = 0; idx < 512; idx++) {
        const lo = this.region.loadLo(table, idx);
        if (!isPresent(lo)) continue;
        const hi = this.region.loadHi(table, idx);
        const key = base + idx * KEY_SPAN[level];
        if (level === 1) visit(key, lo, hi);
        else walk(this.checkedTable(pfnOf(lo, hi) as Frame), level - 1, key);
      }
    };
    walk(top, this.depth, 0);
  }
}
