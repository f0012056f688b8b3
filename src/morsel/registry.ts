/**
 * A persistent registry of 64-bit entries keyed by frame number, rooted in a
 * RootCell (a superblock root slot, whose table exists from format on, or a
 * user-slot field, created on first use). It is itself a radix tree of 4 KiB
 * tables built like a morsel (lazily, by CAS, through the walker, which
 * validates every frame it follows): the key is the frame number, split 9
 * bits per level, and the leaf slot holds the entry. Used for the
 * live-morsel table (key: root frame, value: morsel ID), the address-space
 * tables and per-process usage counts.
 *
 * Why keyed by frame: add, remove and lookup are O(depth) with no probing and
 * no tombstones, and each slot has exactly one possible owner, so a slot
 * update is a single CAS: crash-atomic by construction.
 */
import { MorselError, assert, check } from '../errors.js';
import { OWNED_ROOT_SLOTS } from '../physical/superblock.js';
import { isPresent } from '../paging/entry.js';
import { ENTRIES_PER_TABLE, Walker, indexAt, levelSpan } from '../paging/walk.js';
import type { Region } from '../physical/region.js';
import type { FrameAllocator } from '../alloc/llfree.js';
import type { Frame } from '../units.js';
import { crashPoint } from '../crash-point.js';

/**
 * Where a registry's top table frame is stored: a superblock root slot or a
 * field of a user-slot record. 0 = no table yet; set once by CAS.
 */
export interface RootCell {
  readonly name: string;
  load(): number;
  cas(expect: number, next: number): boolean;
}

/**
 * The root cell in superblock root slot `slot` (one of the owned slots).
 * Its table was created when the region was formatted and the slot is
 * sealed by the superblock's root checksum, so it never changes: an empty
 * one is corruption, never "create on first use".
 */
export function superblockRoot(region: Region, slot: number): RootCell {
  assert(slot >= 0 && slot < OWNED_ROOT_SLOTS, 'an owned root slot');
  return {
    name: `root slot ${slot}`,
    load: () => region.loadRootFrame(slot),
    cas: () => {
      throw new MorselError('ECORRUPT', `superblock root slot ${slot} is empty; its table is created when the region is formatted`);
    },
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
  private readonly walker: Walker;
  /** For error messages only (a closure, so the hot path builds no string). */
  private readonly cellName = (): string => `registry ${this.root.name}`;

  constructor(
    private readonly region: Region,
    private readonly alloc: FrameAllocator,
    readonly root: RootCell,
  ) {
    this.depth = registryDepth(region.frameCount);
    this.walker = new Walker(region, alloc);
  }

  /** The registry's top table (validated: allocatable and allocated), creating it on first use. */
  private top(create: boolean): Frame | null {
    const cur = this.root.load();
    if (cur !== 0) return this.walker.root(cur, this.cellName);
    if (!create) return null;
    const frame = this.walker.zeroedFrame();
    crashPoint('registry:before-link-table');
    if (this.root.cas(0, frame)) return frame;
    this.alloc.free(frame); // lost the race: use the winner's table
    return this.top(false);
  }

  /**
   * The leaf table holding `key`'s entry (index key % 512), optionally
   * building the path; null if absent. For callers that load and CAS one
   * entry repeatedly (usage counts) without walking twice.
   */
  leaf(key: number, create: boolean): Frame | null {
    const top = this.top(create);
    if (top === null) return null;
    if (!create) {
      const leaf = this.walker.descend(top, this.depth, keyAddress(key), 1);
      return leaf < 0 ? null : (leaf as Frame);
    }
    let table = top;
    for (let level = this.depth; level > 1; level--) table = this.walker.ensureChild(table, indexAt(keyAddress(key), level), 'registry:before-link-table');
    return table;
  }

  /** Stores (lo, hi) under `key`; EEXIST if the key already holds an entry. */
  add(key: number, lo: number, hi: number): void {
    assert(isPresent(lo), 'registry values are present entries');
    const leaf = this.leaf(key, true)!;
    check(this.region.casEntry(leaf, key % ENTRIES_PER_TABLE, 0, 0, lo, hi), 'EEXIST', () => `registry ${this.root.name}: key ${key} already registered`);
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
    return leaf !== null && this.region.casEntry(leaf, key % ENTRIES_PER_TABLE, lo, hi, 0, 0);
  }

  /** The entry under `key` as [lo, hi], or null. */
  get(key: number): [number, number] | null {
    const leaf = this.leaf(key, false);
    if (leaf === null) return null;
    const lo = this.region.loadLo(leaf, key % ENTRIES_PER_TABLE);
    return isPresent(lo) ? [lo, this.region.loadHi(leaf, key % ENTRIES_PER_TABLE)] : null;
  }

  /**
   * Clears every entry of the top table and returns how many it cleared.
   * Exclusive use only (recovery, repair): what hung below becomes
   * unreachable, and the reachability rebuild that follows reclaims it.
   */
  clearTop(): number {
    const top = this.top(false);
    if (top === null) return 0;
    let cleared = 0;
    this.walker.forEachPresent(top, (idx, lo, hi) => {
      if (this.region.casEntry(top, idx, lo, hi, 0, 0)) cleared++;
    });
    return cleared;
  }

  /** Visits every (key, lo, hi). `tables` (optional) receives the registry's own frames. Depth bounded by `depth`. */
  forEach(visit: (key: number, lo: number, hi: number) => void, tables?: (frame: Frame) => void): void {
    const top = this.top(false);
    if (top === null) return;
    const walk = (table: Frame, level: number, base: number): void => {
      tables?.(table);
      this.walker.forEachPresent(table, (idx, lo, hi) => {
        const key = base + idx * levelKeySpan(level);
        if (level === 1) visit(key, lo, hi);
        else walk(this.walker.follow(table, idx, lo, hi), level - 1, key);
      });
    };
    walk(top, this.depth, 0);
  }
}

/** The tree is walked like a page table whose page numbers are the keys. */
const keyAddress = (key: number): number => key * levelSpan(1);

/** Keys covered by one entry of a level-`level` registry table: 512^(level-1). */
export function levelKeySpan(level: number): number {
  return levelSpan(level) / levelSpan(1);
}

/** Levels of a registry keyed by the frames of a `frameCount`-frame region. */
export function registryDepth(frameCount: number): number {
  let depth = 1;
  while (ENTRIES_PER_TABLE ** depth < frameCount) depth++;
  return depth;
}
