/**
 * The anchor frame of a reference-count table: one zeroed 4 KiB frame owned
 * by the caller, holding the table's header and the directory of every
 * storage frame, so any thread or process can find the table from it. An
 * all-zero anchor is a valid empty table with no storage.
 *
 * int32 words (16 words = one 64-byte cache line):
 *
 *   line 0     magic (kind), state, resize lock, pool lock, pool segment
 *              count, resize count (read by every lookup, written rarely);
 *              words 7-9 belong to src/morsel/lazy.ts (deferred clone
 *              counts: its registries' top frames, attached clones), which
 *              live and die with the counts (recovery zeroes the anchor)
 *   line 1     entry count and migration cursor (written by inserts,
 *              removals and migrating updates)
 *   lines 2-15 write guards: one counter per shard of writer threads
 *   256..511   directory of bucket-array group 0 (segment base frames)
 *   512..767   directory of bucket-array group 1
 *   768..1023  directory of the entry pool (chained table only)
 *
 * A Rosebush table in layout 2 has no pool: its groups are 256..639 and
 * 640..1023 (384 slots each; rosebush.ts DIR_SLOTS_V2).
 *
 * The state word publishes the table's shape in one store, so a reader
 * needs one load (and one re-load to validate) to know where buckets are:
 *
 *   bits 0-7   size class of the current array (classBuckets; 0: no
 *              storage)
 *   bit  8     directory group of the current array
 *   bit  9     resizing: the array of the other group (the previous size
 *              class) is being migrated into the current one
 *   bits 10-30 generation: bumped by every transition
 */
import { assert } from '../../errors.js';

export const W_MAGIC = 0;
export const W_STATE = 1;
export const W_CURSOR = 17;
export const W_RESIZE_LOCK = 3;
export const W_POOL_LOCK = 4;
export const W_POOL_SEGS = 5;
export const W_RESIZES = 6;
export const W_LAZY_SOURCES = 7;
export const W_LAZY_ATTACHED = 8;
export const W_LAZY_CLONES = 9;
export const W_COUNT = 16;
export const GUARD_FIRST_WORD = 32;
export const GUARD_STRIDE_WORDS = 16;
export const GUARD_SHARDS = 14;
export const DIR_SLOTS = 256;
export const DIR_FIRST_WORD = 256;
/** Directory group of the chained table's entry pool. */
export const POOL_GROUP = 2;

/** Magic of a table in layout 2 (size classes) is MAGIC_BASE + kind code; layout 1 is MAGIC_V1_BASE + kind code. */
export const MAGIC_BASE = 0x52430100;
export const MAGIC_V1_BASE = 0x52430000;

const CLASS_MASK = 0xff;
const GROUP_SHIFT = 8;
const RESIZING_BIT = 1 << 9;
const GEN_SHIFT = 10;
const GEN_MASK = (1 << 21) - 1;

/** Size classes per doubling: class c has (8 + c mod 8) * 2^(c div 8) buckets. */
export const CLASS_STEPS = 8;
const LOG2_STEPS = 3;
export const classBuckets = (c: number): number => (CLASS_STEPS + (c % CLASS_STEPS)) * 2 ** Math.floor(c / CLASS_STEPS);
/** The class of 2^log2 buckets (log2 >= 3). */
export const classOfLog2 = (log2: number): number => CLASS_STEPS * (log2 - LOG2_STEPS);

/**
 * Layout 1 (magic MAGIC_V1_BASE + kind, written before size classes): bits
 * 0-4 log2 of the bucket count, bit 5 group, bit 6 resizing, bits 7-30
 * generation. Its arrays are the classes classOfLog2(log2) (power-of-two
 * bucket counts, homed by the same top hash bits), so such a
 * table keeps working, growing by doubling, until it is emptied (reset); a
 * new table is layout 2.
 */
const V1_LOG2_MASK = 0x1f;
const V1_GROUP_SHIFT = 5;
const V1_RESIZING_BIT = 1 << 6;
const V1_GEN_SHIFT = 7;
const V1_GEN_MASK = (1 << 24) - 1;

/** The shape a state word publishes. */
export interface Shape {
  /** size class of the current array; 0: no storage */
  sizeClass: number;
  group: number;
  resizing: boolean;
}

export function decodeState(s: number, v1: boolean): Shape {
  if (!v1) return { sizeClass: s & CLASS_MASK, group: (s >>> GROUP_SHIFT) & 1, resizing: (s & RESIZING_BIT) !== 0 };
  const log2 = s & V1_LOG2_MASK;
  return { sizeClass: log2 === 0 ? 0 : classOfLog2(log2), group: (s >>> V1_GROUP_SHIFT) & 1, resizing: (s & V1_RESIZING_BIT) !== 0 };
}


/** The state after `prev` with the given shape (generation bumped), in layout 1 or 2. */
export function nextState(prev: number, shape: Shape, v1: boolean): number {
  const { sizeClass, group, resizing } = shape;
  assert(sizeClass >= 0 && sizeClass <= CLASS_MASK && (group === 0 || group === 1), 'state fields in range');
  if (v1) {
    assert(sizeClass % CLASS_STEPS === 0, 'a layout-1 table has power-of-two arrays');
    const gen = (((prev >>> V1_GEN_SHIFT) & V1_GEN_MASK) + 1) & V1_GEN_MASK;
    const log2 = sizeClass === 0 ? 0 : sizeClass / CLASS_STEPS + LOG2_STEPS;
    return (gen << V1_GEN_SHIFT) | (resizing ? V1_RESIZING_BIT : 0) | (group << V1_GROUP_SHIFT) | log2;
  }
  const gen = (((prev >>> GEN_SHIFT) & GEN_MASK) + 1) & GEN_MASK;
  return (gen << GEN_SHIFT) | (resizing ? RESIZING_BIT : 0) | (group << GROUP_SHIFT) | sizeClass;
}

/** Word index (in the anchor) of directory slot `slot` of `group`, whose groups have `groupSlots` slots each. */
export const dirWord = (group: number, slot: number, groupSlots = DIR_SLOTS): number => DIR_FIRST_WORD + group * groupSlots + slot;
