/**
 * The superblock in frame 0. Little-endian, byte offsets:
 *
 *   0  magic "MORSELRG" (8 bytes)     32 checksum: FNV-1a over bytes 0..31
 *   8  format version (u32)           48 state (u32): 0 clean, 1 open (crash if found open
 *                                        by the first user), 2 dirty (a user died while
 *                                        others stayed: the next first user recovers)
 *  12  frame size, 4096 (u32)
 *  16  frame count (u32)              64 root slots: 16 x u64, updated atomically
 *  20  allocator metadata start frame       by the layers that own them (ROOT_SLOT_*
 *  24  metadata frame count                 below; the others reserved, zero)
 *  28  reserved low frames (u32)
 *
 * Only bytes 0..31 are checksummed: they never change after formatting. State
 * and roots change at run time and are validated by their owners.
 */
import { MorselError } from '../errors.js';
import { PAGE_SIZE } from '../units.js';
import { LOW_RESERVED_FRAMES, META_START_FRAME, metaLayout } from './layout.js';

export const MAGIC = 'MORSELRG';
export const FORMAT_VERSION = 2;
export const ROOT_SLOTS = 16;
/** Root slot owners: each slot belongs to exactly one layer. */
export const ROOT_SLOT_LIVE_TABLE = 0; // src/morsel: live morsels, keyed by root frame
export const ROOT_SLOT_SPACES = 1; // src/space: address spaces, keyed by root frame
export const ROOT_SLOT_NAMES = 2; // src/manage: the namespace
export const ROOT_SLOT_RESERVATIONS = 3; // src/manage: fixed-address reservations

export const SB_STATE_I32 = 48 / 4;
export const SB_ROOTS_BYTE = 64;
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
  view.setUint32(32, fnv1a(frame0.subarray(0, 32)), true);
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
  if (view.getUint32(32, true) !== fnv1a(frame0.subarray(0, 32))) {
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
  return info;
}
