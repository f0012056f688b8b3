/**
 * Morsel words: one int32 per frame (the array after the user-slot table,
 * see src/physical/layout.ts), the identity and state of a morsel rooted at
 * that frame. Layout:
 *
 *   bits 0-1   flags: PENDING (1) unlinked, destroy when the last user leaves;
 *                     DYING (2) a destroy is committing (see Morsels.destroy)
 *   bits 2-4   order tag: order + 1; 0 = the frame is not a live morsel root
 *   bit  5     meta: the morsel is a meta morsel
 *   bits 6-31  generation: bumped by every destroy of a morsel rooted here
 *              (wraps after 2^26 destroys of one root frame)
 *
 * The tag is a second record of the morsel's order, independent of the live
 * table: an ID whose order disagrees with its word is ECORRUPT, so one flipped
 * tag can never make a data page act as a table. Every update is one CAS (or
 * a store by the single owner of the transition), so a word is never torn.
 */
import { assert } from '../errors.js';
import { MORSEL_WORDS_PER_FRAME, metaLayout } from '../physical/layout.js';
import type { Region } from '../physical/region.js';
import type { Frame } from '../units.js';
import type { Order } from './order.js';

export const W_PENDING = 1;
export const W_DYING = 2;
export const W_FLAGS = W_PENDING | W_DYING;
const TAG_SHIFT = 2;
const TAG_MASK = 0b111 << TAG_SHIFT;
const META_BIT = 1 << 5;
const GEN_SHIFT = 6;
/** Generations are 26 bits: 0 .. GENERATION_MASK. */
export const GENERATION_MASK = (1 << 26) - 1;

/** Order tag of a word: order + 1, or 0 when no morsel is rooted at the frame. */
export const wordTag = (w: number): number => (w & TAG_MASK) >>> TAG_SHIFT;
export const wordLive = (w: number): boolean => (w & TAG_MASK) !== 0;
export const wordMeta = (w: number): boolean => (w & META_BIT) !== 0;
export const wordGeneration = (w: number): number => w >>> GEN_SHIFT;
export const wordOrder = (w: number): Order => {
  assert(wordLive(w), 'order of a live morsel word');
  return (wordTag(w) - 1) as Order;
};

/** A word for a live morsel of `order` (flags as given). */
export function liveWord(generation: number, order: Order, meta: boolean, flags = 0): number {
  assert(generation >= 0 && generation <= GENERATION_MASK, 'generation in range');
  return ((generation << GEN_SHIFT) | ((order + 1) << TAG_SHIFT) | (meta ? META_BIT : 0) | flags) | 0;
}

/** The word after a destroy: no morsel, next generation. */
export const deadWord = (generation: number): number => (((generation + 1) & GENERATION_MASK) << GEN_SHIFT) | 0;

/** Access to the morsel-word array of a region. */
export class MorselWords {
  private readonly firstFrame: number;

  constructor(private readonly region: Region) {
    this.firstFrame = metaLayout(region.frameCount).morselWordsFrame;
  }

  /** The frame holding frame `f`'s word (word f % MORSEL_WORDS_PER_FRAME of it). */
  private frameOf(f: number): Frame {
    assert(f >= 0 && f < this.region.frameCount && Number.isInteger(f), 'morsel word of a frame in the region');
    return (this.firstFrame + Math.floor(f / MORSEL_WORDS_PER_FRAME)) as Frame;
  }

  /**
   * Calls `visit(f, w)` for every frame f in [first, end) whose word is
   * tagged live, reading the word frames directly (recovery scans every
   * frame of the region: no per-frame lookup). Atomic loads; bounded by end.
   */
  forEachLive(first: number, end: number, visit: (f: number, w: number) => void): void {
    assert(Number.isInteger(first) && first >= 0 && end <= this.region.frameCount, 'frame range in the region');
    for (let f = first; f < end; ) {
      const frame = (this.firstFrame + Math.floor(f / MORSEL_WORDS_PER_FRAME)) as Frame;
      const words = this.region.words(frame);
      const base = this.region.wordIndex(frame, 0);
      const stop = Math.min(end, (Math.floor(f / MORSEL_WORDS_PER_FRAME) + 1) * MORSEL_WORDS_PER_FRAME);
      for (; f < stop; f++) {
        const w = Atomics.load(words, base + (f % MORSEL_WORDS_PER_FRAME));
        if (wordLive(w)) visit(f, w);
      }
    }
  }

  load(f: number): number {
    const frame = this.frameOf(f);
    return Atomics.load(this.region.words(frame), this.region.wordIndex(frame, f % MORSEL_WORDS_PER_FRAME));
  }

  cas(f: number, expect: number, next: number): boolean {
    if (!this.region.writable) this.region.denyWrite(); // before the store: the mapping is PROT_READ
    const frame = this.frameOf(f);
    return Atomics.compareExchange(this.region.words(frame), this.region.wordIndex(frame, f % MORSEL_WORDS_PER_FRAME), expect, next) === expect;
  }

  /** Unconditional store: only for the owner of a transition (a creator before publishing, a committed destroyer). */
  store(f: number, w: number): void {
    if (!this.region.writable) this.region.denyWrite();
    const frame = this.frameOf(f);
    Atomics.store(this.region.words(frame), this.region.wordIndex(frame, f % MORSEL_WORDS_PER_FRAME), w);
  }
}
