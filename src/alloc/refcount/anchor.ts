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
 * The state word publishes the table's shape in one store, so a reader
 * needs one load (and one re-load to validate) to know where buckets are:
 *
 *   bits 0-4   log2 of the current array's bucket count (0: no storage)
 *   bit  5     directory group of the current array
 *   bit  6     resizing: the array of the other group (half as many
 *              buckets) is being migrated into the current one
 *   bits 7-30  generation: bumped by every transition
 */
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

export const MAGIC_BASE = 0x52430000;

const LOG2_MASK = 0x1f;
const GROUP_BIT = 1 << 5;
const RESIZING_BIT = 1 << 6;
const GEN_SHIFT = 7;
const GEN_MASK = (1 << 24) - 1;

export const stateLog2 = (s: number): number => s & LOG2_MASK;
export const stateGroup = (s: number): number => (s & GROUP_BIT) >>> 5;
export const stateResizing = (s: number): boolean => (s & RESIZING_BIT) !== 0;
const stateGeneration = (s: number): number => (s >>> GEN_SHIFT) & GEN_MASK;

/** The state after `prev` with the given shape (generation bumped). */
export function nextState(prev: number, log2: number, group: number, resizing: boolean): number {
  const gen = (stateGeneration(prev) + 1) & GEN_MASK;
  return (gen << GEN_SHIFT) | (resizing ? RESIZING_BIT : 0) | (group ? GROUP_BIT : 0) | (log2 & LOG2_MASK);
}

/** Word index (in the anchor) of directory slot `slot` of `group`. */
export const dirWord = (group: number, slot: number): number => DIR_FIRST_WORD + group * DIR_SLOTS + slot;
