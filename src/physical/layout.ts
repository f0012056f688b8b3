/**
 * The fixed on-media layout of a region. Physical frame N occupies bytes
 * [N*4096, (N+1)*4096) of the region (file or SharedArrayBuffer), so a region
 * file can be handed to a real x86-64 machine (QEMU) as its physical memory.
 *
 *   frame 0            superblock (see superblock.ts)
 *   frames 1..0x9F     reserved: boot scratch for a guest. Frame 1 is the boot
 *                      parameter block of `morsel hwcheck`; its guest keeps its
 *                      tables in 0x10..0x14 and its stack in 0x20..0x2F (in
 *                      QEMU's private copy only: share=off); 0x9F is the
 *                      shared zero frame (ZERO_FRAME), never written
 *   frames 0xA0..0xFF  reserved: the PC firmware / option-ROM hole
 *   frames 0x100..     allocator metadata (LLFree bitfields and counters)
 *   then 1 frame       the user-slot table (USER_SLOTS records of USER_SLOT_BYTES:
 *                      one per process using the region, owned by an OFD lock
 *                      on byte 1+i of the file: src/physical/membership.ts)
 *   then ceil(N/1024)  morsel words: one int32 per frame, the generation and
 *                      state of a morsel rooted at that frame (src/morsel/)
 *   the rest           allocatable frames
 *
 * Reserved and metadata frames are marked allocated in the allocator's
 * bitfield when the region is formatted, so one allocator accounts for every
 * frame of every kind.
 */
import { PAGE_SIZE } from '../units.js';

export const SUPERBLOCK_FRAME = 0;
/** Frames below this are never handed out (superblock, boot scratch, firmware hole). */
export const LOW_RESERVED_FRAMES = 0x100;
export const META_START_FRAME = LOW_RESERVED_FRAMES;
/**
 * The shared zero frame: the last boot-scratch frame, which nothing writes
 * (the hwcheck guest uses 0x01..0x2F, in QEMU's private copy only). The MMU
 * hands it out for reads of never-populated morsel pages, as Linux maps its
 * shared zero page, so reads never allocate. Never writable through an MMU.
 */
export const ZERO_FRAME = 0x9f;

/** LLFree geometry: a child is one 2 MiB area (512 frames), a tree 32 children. */
export const CHILD_FRAMES = 512;
export const CHILD_SHIFT = 9;
export const TREE_CHILDREN = 32;
export const TREE_FRAMES = CHILD_FRAMES * TREE_CHILDREN;
/** One 512-bit bitfield per child: a cache line, 16 int32 words. */
export const BITFIELD_BYTES = 64;
export const BITFIELD_WORDS = BITFIELD_BYTES / 4;

/** Region size limits: big enough to hold the fixed frames, small enough for u32 frame numbers. */
export const MIN_REGION_BYTES = 4 * 1024 * 1024;
export const MAX_REGION_FRAMES = 2 ** 32 - 1;

/** Processes that can use one region at a time, and the bytes of each one's record. */
export const USER_SLOTS = 64;
export const USER_SLOT_BYTES = 64;
/**
 * A user-slot record, int32 word offsets (little-endian; frame numbers are
 * < 2^32, so a root is one word):
 *   0 pid of the owner (0 = free)   1 claims: bumped on every claim of the slot
 *   4 usage registry root, lane 0   6 address-space registry root frame
 *   8..14 usage registry roots,       (src/space: this process's spaces)
 *         lanes 1..7
 * The usage registries (src/morsel/usage.ts) count this process's handles
 * and mappings; a thread counts in its own lane, so threads of one process
 * do not write the same cache lines. Other words are reserved (zero);
 * regions written before lanes existed hold lane 0 only.
 */
export const SLOT_PID = 0;
export const SLOT_CLAIMS = 1;
export const SLOT_SPACES_ROOT = 6;
/** Usage lanes per user slot, and the record word holding each lane's registry root. */
export const USAGE_LANES = 8;
export const SLOT_USAGE_ROOTS: readonly number[] = [4, 8, 9, 10, 11, 12, 13, 14];

/** Morsel words (int32) per frame of the morsel-word array. */
export const MORSEL_WORDS_PER_FRAME = PAGE_SIZE / 4;

export interface MetaLayout {
  children: number;
  trees: number;
  /** byte offsets inside the region */
  bitfieldsByte: number;
  childCountersByte: number;
  treeCountersByte: number;
  /** the user-slot table (one frame) */
  usersFrame: number;
  /** first frame of the morsel-word array: word f lives in frame morselWordsFrame + f / 1024 */
  morselWordsFrame: number;
  morselWordsFrames: number;
  /** every frame from META_START_FRAME on that is metadata (allocator, users, morsel words) */
  metaFrames: number;
}

/** Where the allocator's metadata lives for a region of `frameCount` frames. */
export function metaLayout(frameCount: number): MetaLayout {
  const children = Math.ceil(frameCount / CHILD_FRAMES);
  const trees = Math.ceil(children / TREE_CHILDREN);
  const bitfieldsByte = META_START_FRAME * PAGE_SIZE;
  const childCountersByte = bitfieldsByte + children * BITFIELD_BYTES;
  const treeCountersByte = childCountersByte + children * 4;
  const endByte = treeCountersByte + trees * 4;
  const allocFrames = Math.ceil((endByte - bitfieldsByte) / PAGE_SIZE);
  const usersFrame = META_START_FRAME + allocFrames;
  const morselWordsFrame = usersFrame + 1;
  const morselWordsFrames = Math.ceil(frameCount / MORSEL_WORDS_PER_FRAME);
  const metaFrames = allocFrames + 1 + morselWordsFrames;
  return { children, trees, bitfieldsByte, childCountersByte, treeCountersByte, usersFrame, morselWordsFrame, morselWordsFrames, metaFrames };
}

/** Frames [0, firstAllocatableFrame) are reserved or metadata. */
export function firstAllocatableFrame(frameCount: number): number {
  return META_START_FRAME + metaLayout(frameCount).metaFrames;
}
