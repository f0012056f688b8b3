/**
 * Morsel IDs. An ID is the morsel's entry in a parent table: a bit-exact
 * x86-64 entry whose PFN is the root frame, plus the order tag (bits 9..11,
 * 1 = order 0 .. 5 = order 4, so a plain table entry never looks like an ID)
 * the meta-morsel flag (bit 52) and the huge policy (bit 54: its faults and
 * batch population build 2 MiB leaves, src/morsel/huge.ts; order >= 2).
 * Users hold it as a bigint, the raw 64 bits.
 */
import { MorselError } from '../errors.js';
import { HI_HUGE, HI_META, HI_PFN_MASK, INNER_FLAGS, TAG_MASK, TAG_SHIFT, entryToBigInt, isPresent, makeHi, makeLo, pfnOf } from '../paging/entry.js';
import type { Frame } from '../units.js';
import type { Order } from './order.js';

declare const idBrand: unique symbol;
export type MorselId = bigint & { readonly [idBrand]: 'MorselId' };

export interface DecodedId {
  id: MorselId;
  /** the ID's low and high 32-bit halves, as stored in a table */
  lo: number;
  hi: number;
  order: Order;
  meta: boolean;
  /** populate 2 MiB leaves (a data morsel of order >= 2) */
  huge: boolean;
  rootFrame: Frame;
}

const U64_MAX = (1n << 64n) - 1n;

/**
 * The smallest order whose subtree has a level-2 table (entries of 2 MiB):
 * an order-1 morsel's root is its only page table, and a 2 MiB leaf there
 * would have to be its mapping entry.
 */
export const MIN_HUGE_ORDER = 2;
/** decodeIdBits' scratch: one 64-bit value seen as its two 32-bit halves (little-endian: [lo, hi]). */
const ID_BITS = new BigUint64Array(1);
const ID_HALVES = new Uint32Array(ID_BITS.buffer);

export function encodeId(rootFrame: Frame, order: Order, meta: boolean, huge = false): MorselId {
  const lo = makeLo(rootFrame, INNER_FLAGS | ((order + 1) << TAG_SHIFT));
  const hi = makeHi(rootFrame, (meta ? HI_META : 0) | (huge ? HI_HUGE : 0));
  return entryToBigInt(lo, hi) as MorselId;
}

/** Structural decode: present bit, known tag, no stray bits. Region checks are the caller's (see Morsels.decode). */
export function decodeIdBits(value: bigint): DecodedId {
  if (typeof value !== 'bigint' || value < 0n || value > U64_MAX) throw new MorselError('EINVAL', `not a 64-bit morsel ID: ${String(value)}`);
  // The halves through a 64-bit typed array: no BigInt is allocated (an & and a >> cost ~40 ns here).
  ID_BITS[0] = value;
  const lo = ID_HALVES[0] | 0;
  const hi = ID_HALVES[1] | 0;
  if (!isPresent(lo)) throw new MorselError('EINVAL', `morsel ID ${hex(value)} is not present`);
  const tag = (lo & TAG_MASK) >>> TAG_SHIFT;
  if (tag < 1 || tag > 5) throw new MorselError('EINVAL', `morsel ID ${hex(value)} has no valid order tag (${tag})`);
  // Exactly the bits encodeId writes: permissive flags, tag, PFN, meta flag, huge policy (data morsels of order >= 2).
  if ((lo & 0xfff & ~TAG_MASK) !== INNER_FLAGS || (hi & ~(HI_PFN_MASK | HI_META | HI_HUGE)) !== 0) {
    throw new MorselError('EINVAL', `morsel ID ${hex(value)} has unexpected flag bits`);
  }
  const huge = (hi & HI_HUGE) !== 0;
  if (huge && ((hi & HI_META) !== 0 || tag - 1 < MIN_HUGE_ORDER)) throw new MorselError('EINVAL', `morsel ID ${hex(value)} has the huge bit on a morsel that cannot hold 2 MiB leaves`);
  return { id: value as MorselId, lo, hi, order: (tag - 1) as Order, meta: (hi & HI_META) !== 0, huge, rootFrame: pfnOf(lo, hi) as Frame };
}

export const hex = (value: bigint): string => '0x' + BigInt.asUintN(64, value).toString(16).padStart(16, '0');

/** Parses "0x…" (or decimal) text into a bigint; EINVAL on garbage. */
export function parseId(text: string): bigint {
  const t = text.trim();
  if (!/^(0x[0-9a-fA-F]{1,16}|\d{1,20})$/.test(t)) throw new MorselError('EINVAL', `not a morsel ID: ${JSON.stringify(text)}`);
  return BigInt(t);
}
