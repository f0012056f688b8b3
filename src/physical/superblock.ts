/**
 * The superblock in frame 0. Little-endian, byte offsets:
 *
 *   0  magic "MORSELRG" (8 bytes)     32 checksum: FNV-1a over bytes 0..31
 *   8  format version (u32)           36 root checksum: FNV-1a over bytes 64..191
 *                                     48 state (u32): 0 clean, 1 open (crash if found open
 *                                        by the first user), 2 dirty (a user died while
 *                                        others stayed: the next first user recovers)
 *                                     52 shootdown epoch (u32): bumped whenever a
 *                                        translation of a shared (copy-on-write) morsel
 *                                        page changes; every MMU flushes when it moves
 *                                     56 occupied user slots (i32): an upper bound on the
 *                                        slots whose records hold anything (Region.
 *                                        onlyOwnSlot); exact after an exclusive admit
 *  12  frame size, 4096 (u32)
 *  16  frame count (u32)              64 root slots: 16 x u64, updated atomically
 *  20  allocator metadata start frame       owned by the layers named by ROOT_SLOT_*
 *  24  metadata frame count                 below; the others reserved, zero)
 *  28  reserved low frames (u32)
 *
 * Root slots are written once, when the region is formatted: the top table
 * of every owned slot is created then (an allocated, zeroed frame), so a
 * root never changes afterwards and the root checksum covers all 16 slots.
 * Opening checks the checksum and that the owned roots are distinct
 * allocatable frames (whether they are allocated is checked once the
 * allocator is open: src/paging/walk.ts checkRootTables). Only the state,
 * shootdown and occupied-slot words change at run time.
 */
import { MorselError, assert } from '../errors.js';
import { PAGE_SIZE } from '../units.js';
import { LOW_RESERVED_FRAMES, META_START_FRAME, metaLayout } from './layout.js';

export const MAGIC = 'MORSELRG';
export const FORMAT_VERSION = 2;
export const ROOT_SLOTS = 16;
/** Root slot owners: each slot belongs to exactly one layer. */
export const ROOT_SLOT_LIVE_TABLE = 0; // src/morsel: live morsels, keyed by root frame
export const ROOT_SLOT_REFCOUNTS = 1; // src/alloc/refcount: the reference-count table of shared frames (its header frame)
export const ROOT_SLOT_NAMES = 2; // src/manage: the namespace
export const ROOT_SLOT_RESERVATIONS = 3; // src/manage: fixed-address reservations
/** Slots 0..OWNED_ROOT_SLOTS-1 hold a table created at format; the rest are zero. */
export const OWNED_ROOT_SLOTS = 4;

export const SB_STATE_I32 = 48 / 4;
export const SB_SHOOTDOWN_I32 = 52 / 4;
export const SB_OCCUPIED_I32 = 56 / 4;
export const SB_ROOTS_BYTE = 64;
const SB_CHECKSUM_BYTE = 32;
const SB_ROOTS_CHECKSUM_BYTE = 36;
const SB_ROOTS_END_BYTE = SB_ROOTS_BYTE + ROOT_SLOTS * 8;
export const STATE_CLEAN = 0;
export const STATE_OPEN = 1;
export const STATE_DIRTY = 2;

export interface SuperblockInfo {
  version: number;
  frameCount: number;
  metaStartFrame: number;
  metaFrames: number;
  reservedLowFrames: number;
  state: number;
  /** the owned root slots' frames (index = slot); empty for a region formatted below the morsel layer */
  roots: number[];
}

function fnv1a(bytes: Uint8Array): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < bytes.length; i++) {
    h ^= bytes[i];
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

/** Writes a fresh superblock for `frameCount` frames into `frame0` (4096 bytes). */
export function writeSuperblock(frame0: Uint8Array, frameCount: number): void {
  const view = new DataView(frame0.buffer, frame0.byteOffset, PAGE_SIZE);
  frame0.fill(0, 0, PAGE_SIZE);
  for (let i = 0; i < MAGIC.length; i++) frame0[i] = MAGIC.charCodeAt(i);
  view.setUint32(8, FORMAT_VERSION, true);
  view.setUint32(12, PAGE_SIZE, true);
  view.setUint32(16, frameCount, true);
  view.setUint32(20, META_START_FRAME, true);
  view.setUint32(24, metaLayout(frameCount).metaFrames, true);
  view.setUint32(28, LOW_RESERVED_FRAMES, true);
  view.setUint32(SB_CHECKSUM_BYTE, fnv1a(frame0.subarray(0, SB_CHECKSUM_BYTE)), true);
  sealRoots(frame0, NO_ROOTS); // no root tables yet: the morsel layer creates them (formatRootTables)
}

const NO_ROOTS: readonly number[] = new Array<number>(OWNED_ROOT_SLOTS).fill(0);

/**
 * Writes the owned root slots (`roots[slot]`, allocated zeroed table frames)
 * and seals them with the root checksum. Format time only: roots never change.
 */
export function sealRoots(frame0: Uint8Array, roots: readonly number[]): void {
  const view = new DataView(frame0.buffer, frame0.byteOffset, PAGE_SIZE);
  assert(roots.length === OWNED_ROOT_SLOTS, 'one value per owned root slot');
  for (let slot = 0; slot < ROOT_SLOTS; slot++) {
    view.setUint32(SB_ROOTS_BYTE + 8 * slot, slot < OWNED_ROOT_SLOTS ? roots[slot] : 0, true);
    view.setUint32(SB_ROOTS_BYTE + 8 * slot + 4, 0, true);
  }
  view.setUint32(SB_ROOTS_CHECKSUM_BYTE, fnv1a(frame0.subarray(SB_ROOTS_BYTE, SB_ROOTS_END_BYTE)), true);
}

/**
 * The owned roots of a superblock whose root checksum holds; ECORRUPT naming
 * the slot otherwise. All zero is a region formatted below the morsel layer
 * (the allocator alone); opening it as a morsel region then fails
 * (checkRootTables).
 */
function readRoots(view: DataView, frame0: Uint8Array, frameCount: number, where: string): number[] {
  if (view.getUint32(SB_ROOTS_CHECKSUM_BYTE, true) !== fnv1a(frame0.subarray(SB_ROOTS_BYTE, SB_ROOTS_END_BYTE))) {
    throw new MorselError('ECORRUPT', `${where}: superblock root checksum mismatch`);
  }
  const slotLo = (slot: number): number => view.getUint32(SB_ROOTS_BYTE + 8 * slot, true);
  const slotHi = (slot: number): number => view.getUint32(SB_ROOTS_BYTE + 8 * slot + 4, true);
  for (let slot = OWNED_ROOT_SLOTS; slot < ROOT_SLOTS; slot++) {
    if (slotLo(slot) !== 0 || slotHi(slot) !== 0) throw new MorselError('ECORRUPT', `${where}: reserved root slot ${slot} is not zero`);
  }
  const roots: number[] = [];
  for (let slot = 0; slot < OWNED_ROOT_SLOTS; slot++) roots.push(slotHi(slot) === 0 ? slotLo(slot) : -1);
  if (roots.every((r) => r === 0)) return [];
  const first = META_START_FRAME + metaLayout(frameCount).metaFrames;
  for (let slot = 0; slot < OWNED_ROOT_SLOTS; slot++) {
    const frame = roots[slot];
    if (!(frame >= first && frame < frameCount)) throw new MorselError('ECORRUPT', `${where}: root slot ${slot} holds frame ${frame}, outside the allocatable range [${first}, ${frameCount})`);
    if (roots.indexOf(frame) !== slot) throw new MorselError('ECORRUPT', `${where}: root slot ${slot} holds frame ${frame}, the table of root slot ${roots.indexOf(frame)}`);
  }
  return roots;
}

/**
 * Validates a superblock read from a region of `regionBytes` bytes. Pure: it
 * reads a copy, so a bad region is never modified. Throws ECORRUPT/EVERSION.
 */
export function readSuperblock(frame0: Uint8Array, regionBytes: number, where: string): SuperblockInfo {
  if (frame0.length < PAGE_SIZE) throw new MorselError('ECORRUPT', `${where}: shorter than a superblock (${frame0.length} bytes)`);
  for (let i = 0; i < MAGIC.length; i++) {
    if (frame0[i] !== MAGIC.charCodeAt(i)) throw new MorselError('ECORRUPT', `${where}: not a morsel region (bad magic)`);
  }
  const view = new DataView(frame0.buffer, frame0.byteOffset, PAGE_SIZE);
  const version = view.getUint32(8, true);
  if (view.getUint32(SB_CHECKSUM_BYTE, true) !== fnv1a(frame0.subarray(0, SB_CHECKSUM_BYTE))) {
    throw new MorselError('ECORRUPT', `${where}: superblock checksum mismatch`);
  }
  if (version !== FORMAT_VERSION) {
    throw new MorselError('EVERSION', `${where}: format version ${version}, this build reads ${FORMAT_VERSION}`);
  }
  const info: SuperblockInfo = {
    version,
    frameCount: view.getUint32(16, true),
    metaStartFrame: view.getUint32(20, true),
    metaFrames: view.getUint32(24, true),
    reservedLowFrames: view.getUint32(28, true),
    state: view.getUint32(48, true),
    roots: [],
  };
  if (view.getUint32(12, true) !== PAGE_SIZE) throw new MorselError('ECORRUPT', `${where}: frame size is not ${PAGE_SIZE}`);
  if (info.frameCount * PAGE_SIZE !== regionBytes) {
    throw new MorselError('ECORRUPT', `${where}: superblock says ${info.frameCount} frames but the region holds ${regionBytes / PAGE_SIZE} (truncated?)`);
  }
  const expectMeta = metaLayout(info.frameCount).metaFrames;
  if (info.metaStartFrame !== META_START_FRAME || info.metaFrames !== expectMeta || info.reservedLowFrames !== LOW_RESERVED_FRAMES) {
    throw new MorselError('ECORRUPT', `${where}: inconsistent layout fields`);
  }
  if (info.state !== STATE_CLEAN && info.state !== STATE_OPEN && info.state !== STATE_DIRTY) throw new MorselError('ECORRUPT', `${where}: unknown state ${info.state}`);
  info.roots = readRoots(view, frame0, info.frameCount, where);
  return info;
}
