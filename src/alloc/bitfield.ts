/**
 * Bit operations on the allocator's per-child bitfields: 512 bits in 16
 * int32 words, bit set = frame allocated. Frame `i` of a child is bit
 * `i & 31` of word `i >> 5`. Every mutation is one atomic read-modify-write
 * on one word, so concurrent threads never lose each other's bits.
 */
import { assert } from '../errors.js';
import { BITFIELD_WORDS, CHILD_FRAMES } from '../physical/layout.js';

/** Lowest clear bit of `word` as a one-bit mask, 0 when the word is full. */
export function lowestClearBit(word: number): number {
  // ~w has ones where w has zeros; x & -x isolates the lowest one.
  const inv = ~word;
  return inv & -inv;
}

/** Index (0..31) of a one-bit mask. */
export function bitIndex(mask: number): number {
  assert(mask !== 0 && (mask & (mask - 1)) === 0, 'bitIndex takes a one-bit mask');
  return 31 - Math.clz32(mask);
}

export function popcount32(word: number): number {
  let v = word - ((word >>> 1) & 0x55555555);
  v = (v & 0x33333333) + ((v >>> 2) & 0x33333333);
  return (Math.imul((v + (v >>> 4)) & 0x0f0f0f0f, 0x01010101) >>> 24);
}

/** Number of set bits in the child bitfield starting at word `base`. */
export function countSet(bits: Int32Array, base: number): number {
  let n = 0;
  for (let w = 0; w < BITFIELD_WORDS; w++) n += popcount32(Atomics.load(bits, base + w));
  return n;
}

/** Whether bit `index` (0..511) of the child bitfield at `base` is set. */
export function testBit(bits: Int32Array, base: number, index: number): boolean {
  return (Atomics.load(bits, base + (index >>> 5)) & (1 << (index & 31))) !== 0;
}

/**
 * Atomically sets bit `index`. Returns true if this call set it, false if
 * it was already set (someone else owns the frame). Atomics.or is a
 * test-and-set: no retry loop, and a lost race changes nothing.
 */
export function trySetBit(bits: Int32Array, base: number, index: number): boolean {
  const mask = 1 << (index & 31);
  return (Atomics.or(bits, base + (index >>> 5), mask) & mask) === 0;
}

/** Atomically clears bit `index`. Returns true if this call cleared it, false if it was already clear. */
export function tryClearBit(bits: Int32Array, base: number, index: number): boolean {
  const mask = 1 << (index & 31);
  return (Atomics.and(bits, base + (index >>> 5), ~mask) & mask) !== 0;
}

/**
 * Claims one clear bit of the child at `base`, scanning from word
 * `startWord`. The caller must hold a unit of the child's counter (it
 * decremented the child counter), which guarantees a clear bit exists that
 * no other thread may claim for it: frees clear the bit before incrementing
 * the counter and allocations decrement the counter before setting a bit, so
 * clear bits >= counter + (decrements not yet turned into bits). A scan can
 * still miss under churn (a word fills just as we look at it), hence the
 * bounded rounds. Returns the bit index (0..511) or -1 if none was found.
 *
 * The first round reads words with plain loads: only a guess (in V8 an
 * Atomics.load is a builtin call costing as much as the Atomics.or), and
 * harmless, since the Atomics.or reports the word's true old value, which
 * becomes the next guess. Later rounds read atomically, so a stale guess
 * that a word is full cannot hide a clear bit for long.
 */
export function claimClearBit(bits: Int32Array, base: number, startWord: number, maxRounds: number): number {
  // Fast path: the start word usually has a clear bit. The scan is a separate
  // function so that this path stays small enough for V8 to inline.
  const w0 = startWord & (BITFIELD_WORDS - 1);
  const guess = bits[base + w0];
  if (guess !== -1) {
    const mask = lowestClearBit(guess);
    if ((Atomics.or(bits, base + w0, mask) & mask) === 0) return w0 * 32 + 31 - Math.clz32(mask);
  }
  return scanClearBit(bits, base, startWord, maxRounds);
}

/** claimClearBit's bounded scan over all words (a lost race on the start word lands here too). */
function scanClearBit(bits: Int32Array, base: number, startWord: number, maxRounds: number): number {
  for (let round = 0; round < maxRounds; round++) {
    for (let i = 0; i < BITFIELD_WORDS; i++) {
      const w = (startWord + i) & (BITFIELD_WORDS - 1);
      let word = round === 0 ? bits[base + w] : Atomics.load(bits, base + w);
      // Within a word, each lost race means another thread set a bit: retry
      // the same word while it still has a clear bit (at most 32 times).
      for (let tries = 0; tries < 32 && word !== -1; tries++) {
        const mask = lowestClearBit(word);
        const old = Atomics.or(bits, base + w, mask);
        if ((old & mask) === 0) return w * 32 + bitIndex(mask);
        word = old | mask;
      }
    }
  }
  return -1;
}

/** Stores a whole child bitfield: bit i set iff `used(i)`, for i in 0..511. */
export function writeBitfield(bits: Int32Array, base: number, used: (index: number) => boolean): void {
  for (let w = 0; w < BITFIELD_WORDS; w++) {
    let word = 0;
    for (let b = 0; b < 32; b++) if (used(w * 32 + b)) word |= 1 << b;
    Atomics.store(bits, base + w, word);
  }
}

assert(BITFIELD_WORDS * 32 === CHILD_FRAMES, 'a child bitfield covers exactly one child');
