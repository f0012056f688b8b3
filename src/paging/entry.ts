/**
 * Bit-exact x86-64 page-table entries (Intel SDM vol. 3, 4.5), 4- and 5-level.
 *
 * An entry is 64 bits; JS numbers hold 53, so the hot paths carry it as two
 * 32-bit halves (`lo` = bits 0..31, `hi` = bits 32..63) read from an
 * Int32Array. BigInt appears only in conversions for display and tests.
 *
 *   bit  0 P    present            bit  7 PS   page size (leaf at L2/L3)
 *   bit  1 RW   writable           bit  8 G    global
 *   bit  2 US   user               bits 9-11   software: morsel order tag
 *   bit  3 PWT  write-through      bits 12-51  PFN (40 bits: 4 PiB physical)
 *   bit  4 PCD  cache disable      bit 52      software: meta-morsel flag
 *   bit  5 A    accessed           bit 53      software: morsel top (set in an
 *   bit  6 D    dirty                          address space where a morsel is mapped)
 *                                  bit 54      software: huge policy (IDs and a
 *                                              morsel's top entry: populate
 *                                              2 MiB leaves, src/morsel/huge.ts)
 *                                  bits 55-58  software, free for later layers
 *                                  bits 59-62  protection key (ignored unless CR4.PKE)
 *                                  bit 63 NX   no execute (needs EFER.NXE)
 *
 * In inner entries of a morsel, bit 11 is SHARE_TOGGLE and bits 9-10 are
 * LAZY_REF / LAZY_SRC (copy-on-write, below).
 *
 * Invariant kept by every writer: a non-present entry is all zero, so "lo has
 * P" <=> "entry is in use" and an empty slot is exactly (0, 0).
 */
export const P = 1 << 0;
export const RW = 1 << 1;
export const US = 1 << 2;
export const PWT = 1 << 3;
export const PCD = 1 << 4;
export const A = 1 << 5;
export const D = 1 << 6;
export const PS = 1 << 7;
export const G = 1 << 8;
export const TAG_SHIFT = 9;
export const TAG_MASK = 0b111 << TAG_SHIFT;

/** Flags in the high half (bit n of the entry = bit n-32 of `hi`). */
export const HI_META = 1 << (52 - 32);
export const HI_MORSEL_TOP = 1 << (53 - 32);
export const HI_HUGE = 1 << (54 - 32);
export const HI_NX = 1 << (63 - 32);
export const HI_PFN_MASK = 0xfffff;

/** The most a frame number can be in an entry (bits 12..51). */
export const MAX_PFN = 2 ** 40 - 1;
const PFN_LO_SPAN = 0x100000; // 2^20: frames addressable by lo's bits 12..31

/** Permissive flags for entries inside a morsel: rights live in the top entry only. */
export const INNER_FLAGS = P | RW | US;

/**
 * Copy-on-write (src/morsel/cow.ts). An inner entry of a morsel without RW
 * references a child that may be shared with other morsels (its reference
 * count says by how many tables). SHARE_TOGGLE (bit 11, ignored by the
 * hardware) flips every time a sharer write-protects the entry, so the entry
 * changes value even when RW was already clear: a CAS that read it earlier
 * fails. Shared inner entries are P|US, optionally SHARE_TOGGLE.
 */
export const SHARE_TOGGLE = 1 << 11;
export const SHARED_FLAGS = P | US;

/**
 * Deferred counts of a copied table (src/morsel/lazy.ts), in shared inner
 * entries of a morsel (ignored by the hardware, like SHARE_TOGGLE).
 * LAZY_REF: this reference is not counted yet (a copy's entry). LAZY_SRC:
 * copies may hold uncounted references to this child (the source's entry).
 */
export const LAZY_REF = 1 << 9;
export const LAZY_SRC = 1 << 10;
export const LAZY_BITS = LAZY_REF | LAZY_SRC;

/** Whether an inner morsel entry's flags (lo & 0xfff) are a valid private or shared form. */
export const isInnerFlags = (flags: number): boolean => flags === INNER_FLAGS || (flags & ~(SHARE_TOGGLE | LAZY_BITS)) === SHARED_FLAGS;

/**
 * A 2 MiB leaf (huge page) inside a morsel: an entry of a level-2 table with
 * PS set, referencing an order-9 frame (512 contiguous, 2 MiB-aligned
 * frames). Private leaves are P|RW|US|PS, shared ones (copy-on-write) P|US|PS,
 * optionally SHARE_TOGGLE and lazy bits, exactly as inner entries.
 */
export const HUGE_LEAF_FLAGS = INNER_FLAGS | PS;
export const isHugeLeaf = (lo: number): boolean => (lo & (P | PS)) === (P | PS);
/** Whether a level-2 morsel entry's flags are a valid private or shared 2 MiB leaf. */
export const isHugeLeafFlags = (flags: number): boolean => (flags & PS) !== 0 && isInnerFlags(flags & ~PS);

export function pfnOf(lo: number, hi: number): number {
  return (lo >>> 12) + (hi & HI_PFN_MASK) * PFN_LO_SPAN;
}

/** Low half for `pfn` with `flags` (bits 0..11). Returns an int32 as stored. */
export function makeLo(pfn: number, flags: number): number {
  return (((pfn % PFN_LO_SPAN) << 12) | (flags & 0xfff)) | 0;
}

/** High half for `pfn` with `hiFlags` (HI_* constants). */
export function makeHi(pfn: number, hiFlags: number): number {
  return ((Math.floor(pfn / PFN_LO_SPAN) & HI_PFN_MASK) | hiFlags) | 0;
}

export const isPresent = (lo: number): boolean => (lo & P) !== 0;

export function entryToBigInt(lo: number, hi: number): bigint {
  // Below 2^53 the value is an exact double: one conversion instead of three BigInt operations.
  if (hi >>> 0 < EXACT_HI_LIMIT) return BigInt((hi >>> 0) * 2 ** 32 + (lo >>> 0));
  return (BigInt(hi >>> 0) << 32n) | BigInt(lo >>> 0);
}

/** Entries whose high half is below this are below 2^53 (Number.MAX_SAFE_INTEGER + 1). */
const EXACT_HI_LIMIT = 2 ** 21;

export function entryFromBigInt(value: bigint): { lo: number; hi: number } {
  const v = BigInt.asUintN(64, value);
  return { lo: Number(v & 0xffffffffn) | 0, hi: Number(v >> 32n) | 0 };
}

