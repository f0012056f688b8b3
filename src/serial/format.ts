/**
 * The morsel image format (docs/image-format.md): one morsel, its fixed
 * address and name attributes, and only its populated pages. All integers
 * little-endian; addresses, sizes and page counts are f64 (exact below
 * 2^53, as everywhere in morsel). Layout:
 *
 *   header   FIXED_HEADER_BYTES fields, the name (UTF-8), crc32c of all before
 *   map      runCount x (firstPage f64, pageCount f64), leafCount x
 *            firstPage f64 (the 2 MiB leaves, version 2), chunkCount x
 *            crc32c of each data chunk (version 3), crc32c of all three;
 *            then zeros up to the next DATA_ALIGN_BYTES boundary of the file
 *            (version 3)
 *   data     the populated pages in virtual order, in chunks of chunkPages
 *            pages (versions 1-2: each chunk followed by the crc32c of its bytes)
 *   trailer  TRAILER_MAGIC, populatedPages, chunkCount, the crc32c of the
 *            header, of the map and of all chunk checksums, crc32c of the trailer
 *
 * Version 3 moved the chunk checksums into the map so that the data is one
 * aligned, contiguous range of pages: a file writer can send it from the
 * frames with direct I/O (O_DIRECT: page-aligned memory, offsets and
 * lengths), past the page cache.
 *
 * Decoding validates every field before anything is allocated: ECORRUPT for
 * damage, EVERSION for a version (or flag) this code does not know.
 * Version 2 added the huge policy flag and the leaf list; version 1 images
 * (no leaves, no policy) are still read, as are version 2 ones.
 */
import { crc32c } from './crc.js';
import { MorselError, check } from '../errors.js';
import { MAX_ORDER, orderBytes, type Order } from '../morsel/order.js';
import { MIN_HUGE_ORDER } from '../morsel/id.js';
import { HUGE_FRAMES } from '../paging/walk.js';
import { MiB, PAGE_SIZE } from '../units.js';

export const IMAGE_MAGIC = 'MORSELIM';
export const TRAILER_MAGIC = 'MORSLEND';
export const IMAGE_VERSION = 3;
/** The first version with the huge policy flag and the leaf list; older ones are read too. */
const HUGE_VERSION = 2;
/** The first version with the chunk checksums in the map and page-aligned data. */
export const ALIGNED_VERSION = 3;
/** Version 3 data starts at a multiple of this file offset (direct I/O's alignment: one page). */
export const DATA_ALIGN_BYTES = PAGE_SIZE;
const OLDEST_VERSION = 1;
const MAGIC_BYTES = 8;
/** Bytes of the header's fixed fields (the name and the checksum follow). */
export const FIXED_HEADER_BYTES = 88;
export const CRC_BYTES = 4;
export const RUN_BYTES = 16;
/** One 2 MiB leaf in the map: its first page (f64). */
export const LEAF_BYTES = 8;
export const TRAILER_BYTES = 36;
/** The longest name an image carries (the namespace's own path limit). */
export const MAX_NAME_BYTES = 4096;
/** Pages per data chunk: the unit of checksums, of gathering on save and of reads on load. */
export const DEFAULT_CHUNK_PAGES = (4 * MiB) / PAGE_SIZE;
/** The largest chunk a reader accepts (bounds its buffers whatever the header says). */
export const MAX_CHUNK_PAGES = (64 * MiB) / PAGE_SIZE;

/** Header flags. */
export const FLAG_FIXED = 1; // a fixed-address (meta) morsel: fixedAddress is valid
export const FLAG_NAMED = 2; // saved from a name: name, mode, uid, gid, mtime are valid
export const FLAG_HUGE = 4; // the morsel's huge-page policy (version 2)
const knownFlags = (version: number): number => FLAG_FIXED | FLAG_NAMED | (version >= HUGE_VERSION ? FLAG_HUGE : 0);

export interface ImageHeader {
  /** the format version the image is written in (writers: IMAGE_VERSION) */
  version: number;
  order: Order;
  /** logical byte size (a name's or meta morsel's size, else the order's span) */
  sizeBytes: number;
  fixedAddress: number | null;
  /** name attributes, null when saved from a bare handle */
  name: { path: string; mode: number; uid: number; gid: number; mtimeMs: number } | null;
  /** the huge-page policy (2 MiB leaves on faults and population) */
  huge: boolean;
  populatedPages: number;
  runCount: number;
  /** 2 MiB leaves in the map (each 512 populated pages of one run) */
  leafCount: number;
  chunkPages: number;
}

/** A run of populated pages [firstPage, firstPage + pageCount). */
export interface PageRun {
  firstPage: number;
  pageCount: number;
}

/**
 * The populated surface: runs of pages, and the first pages of the 2 MiB
 * leaves among them (ascending); from version 3 the data chunks' checksums
 * (null before: each follows its chunk).
 */
export interface ImageMap {
  runs: PageRun[];
  leaves: number[];
  chunkCrcs: Uint32Array | null;
}

export const chunkCountOf = (h: { populatedPages: number; chunkPages: number }): number => Math.ceil(h.populatedPages / h.chunkPages);
export const pagesOfOrder = (order: Order): number => orderBytes(order) / PAGE_SIZE;

type MapShape = Pick<ImageHeader, 'version' | 'runCount' | 'leafCount' | 'populatedPages' | 'chunkPages'>;

/** Bytes of the chunk checksum table in the map (version 3), else 0. */
const crcTableBytes = (h: MapShape): number => (h.version >= ALIGNED_VERSION ? chunkCountOf(h) * CRC_BYTES : 0);

/** Bytes of the map (runs, leaves, version 3's chunk checksums, checksum). */
export const mapBytes = (h: MapShape): number => h.runCount * RUN_BYTES + h.leafCount * LEAF_BYTES + crcTableBytes(h) + CRC_BYTES;

/** Zero bytes between the map's end (file offset `headBytes`) and the data: up to the next DATA_ALIGN_BYTES boundary from version 3. */
export const dataPadBytes = (h: Pick<ImageHeader, 'version'>, headBytes: number): number => (h.version >= ALIGNED_VERSION ? (DATA_ALIGN_BYTES - (headBytes % DATA_ALIGN_BYTES)) % DATA_ALIGN_BYTES : 0);

/** Bytes after each data chunk: its checksum before version 3, nothing since (it is in the map). */
export const chunkTailBytes = (h: Pick<ImageHeader, 'version'>): number => (h.version >= ALIGNED_VERSION ? 0 : CRC_BYTES);

/** Total image bytes for a header (what a file of this image must measure). */
export function imageBytes(h: ImageHeader, headerBytes: number): number {
  const head = headerBytes + mapBytes(h);
  return head + dataPadBytes(h, head) + h.populatedPages * PAGE_SIZE + chunkCountOf(h) * chunkTailBytes(h) + TRAILER_BYTES;
}

function putMagic(bytes: Uint8Array, at: number, magic: string): void {
  for (let i = 0; i < MAGIC_BYTES; i++) bytes[at + i] = magic.charCodeAt(i);
}

function hasMagic(bytes: Uint8Array, at: number, magic: string): boolean {
  for (let i = 0; i < MAGIC_BYTES; i++) if (bytes[at + i] !== magic.charCodeAt(i)) return false;
  return true;
}

const viewOf = (b: Uint8Array): DataView => new DataView(b.buffer, b.byteOffset, b.byteLength);

/** The header bytes (with their checksum) for `h`. */
export function encodeHeader(h: ImageHeader): Uint8Array {
  const name = new TextEncoder().encode(h.name?.path ?? '');
  check(name.length <= MAX_NAME_BYTES, 'ENAMETOOLONG', () => `name of ${name.length} bytes is longer than ${MAX_NAME_BYTES}`);
  const bytes = new Uint8Array(FIXED_HEADER_BYTES + name.length + CRC_BYTES);
  const v = viewOf(bytes);
  putMagic(bytes, 0, IMAGE_MAGIC);
  check(h.version >= OLDEST_VERSION && h.version <= IMAGE_VERSION, 'EVERSION', () => `cannot write image version ${h.version}`);
  v.setUint32(8, h.version, true);
  v.setUint32(12, bytes.length, true);
  v.setUint8(16, h.order);
  v.setUint8(17, (h.fixedAddress !== null ? FLAG_FIXED : 0) | (h.name !== null ? FLAG_NAMED : 0) | (h.huge ? FLAG_HUGE : 0));
  v.setUint32(20, h.name?.mode ?? 0, true);
  v.setUint32(24, h.name?.uid ?? 0, true);
  v.setUint32(28, h.name?.gid ?? 0, true);
  v.setFloat64(32, h.fixedAddress ?? 0, true);
  v.setFloat64(40, h.sizeBytes, true);
  v.setFloat64(48, h.populatedPages, true);
  v.setFloat64(56, h.populatedPages * PAGE_SIZE, true);
  v.setUint32(64, h.runCount, true);
  v.setUint32(68, h.chunkPages, true);
  v.setFloat64(72, h.name?.mtimeMs ?? 0, true);
  v.setUint32(80, name.length, true);
  v.setUint32(84, h.leafCount, true);
  bytes.set(name, FIXED_HEADER_BYTES);
  v.setUint32(bytes.length - CRC_BYTES, crc32c(bytes.subarray(0, bytes.length - CRC_BYTES)), true);
  return bytes;
}

/**
 * From the first FIXED_HEADER_BYTES of an image: the total header length
 * (magic and version checked first: ECORRUPT for anything that is not an
 * image, EVERSION for another version).
 */
export function headerLength(fixed: Uint8Array): number {
  check(fixed.length >= FIXED_HEADER_BYTES && hasMagic(fixed, 0, IMAGE_MAGIC), 'ECORRUPT', 'not a morsel image (bad magic or shorter than a header)');
  const v = viewOf(fixed);
  const version = v.getUint32(8, true);
  check(version >= OLDEST_VERSION && version <= IMAGE_VERSION, 'EVERSION', () => `image format version ${version}; this morsel reads versions ${OLDEST_VERSION}..${IMAGE_VERSION}`);
  const length = v.getUint32(12, true);
  check(length >= FIXED_HEADER_BYTES + CRC_BYTES && length <= FIXED_HEADER_BYTES + MAX_NAME_BYTES + CRC_BYTES, 'ECORRUPT', () => `header length ${length} out of range`);
  return length;
}

/** Decodes and validates a whole header (its checksum first). */
export function decodeHeader(bytes: Uint8Array): ImageHeader {
  const length = headerLength(bytes);
  check(bytes.length === length, 'ECORRUPT', 'truncated header');
  const v = viewOf(bytes);
  check(crc32c(bytes.subarray(0, length - CRC_BYTES)) === v.getUint32(length - CRC_BYTES, true), 'ECORRUPT', 'header checksum mismatch');
  const order = v.getUint8(16);
  const version = v.getUint32(8, true);
  const flags = v.getUint8(17);
  check((flags & ~knownFlags(version)) === 0, 'EVERSION', () => `header flags 0x${flags.toString(16)} unknown in version ${version}`);
  check(order <= MAX_ORDER, 'ECORRUPT', () => `order ${order} out of range`);
  const sizeBytes = v.getFloat64(40, true);
  const populatedPages = v.getFloat64(48, true);
  const runCount = v.getUint32(64, true);
  const chunkPages = v.getUint32(68, true);
  const nameBytes = v.getUint32(80, true);
  const leafCount = version >= HUGE_VERSION ? v.getUint32(84, true) : 0; // version 1: reserved
  const huge = (flags & FLAG_HUGE) !== 0;
  const maxPages = pagesOfOrder(order as Order);
  check(Number.isSafeInteger(sizeBytes) && sizeBytes > 0 && sizeBytes <= orderBytes(order as Order), 'ECORRUPT', () => `size ${sizeBytes} does not fit order ${order}`);
  check(Number.isSafeInteger(populatedPages) && populatedPages >= (order === 0 ? 1 : 0) && populatedPages <= maxPages, 'ECORRUPT', () => `populated page count ${populatedPages} out of range`);
  check(v.getFloat64(56, true) === populatedPages * PAGE_SIZE, 'ECORRUPT', 'data byte count disagrees with the page count');
  check(runCount <= populatedPages && (populatedPages === 0) === (runCount === 0), 'ECORRUPT', () => `run count ${runCount} disagrees with ${populatedPages} pages`);
  check(leafCount <= populatedPages / HUGE_FRAMES && (leafCount === 0 || order >= MIN_HUGE_ORDER), 'ECORRUPT', () => `${leafCount} 2 MiB leaves do not fit ${populatedPages} pages of order ${order}`);
  check(!huge || order >= MIN_HUGE_ORDER, 'ECORRUPT', () => `huge policy on an order-${order} morsel`);
  check(chunkPages >= 1 && chunkPages <= MAX_CHUNK_PAGES, 'ECORRUPT', () => `chunk of ${chunkPages} pages out of range`);
  check(FIXED_HEADER_BYTES + nameBytes + CRC_BYTES === length, 'ECORRUPT', 'name length disagrees with the header length');
  const fixed = (flags & FLAG_FIXED) !== 0 ? v.getFloat64(32, true) : null;
  check(fixed === null || (Number.isSafeInteger(fixed) && fixed >= 0), 'ECORRUPT', () => `fixed address ${fixed} is not an address`);
  let name: ImageHeader['name'] = null;
  if ((flags & FLAG_NAMED) !== 0) {
    const path = decodeName(bytes.subarray(FIXED_HEADER_BYTES, FIXED_HEADER_BYTES + nameBytes));
    name = { path, mode: v.getUint32(20, true), uid: v.getUint32(24, true), gid: v.getUint32(28, true), mtimeMs: v.getFloat64(72, true) };
  }
  return { version, order: order as Order, sizeBytes, fixedAddress: fixed, name, huge, populatedPages, runCount, leafCount, chunkPages };
}

function decodeName(bytes: Uint8Array): string {
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    throw new MorselError('ECORRUPT', 'the name in the header is not UTF-8');
  }
}

/** The map bytes (runs, leaves, the chunk checksums when the map has them, checksum). */
export function encodeMap(map: ImageMap): Uint8Array {
  const { runs, leaves, chunkCrcs } = map;
  const tableAt = runs.length * RUN_BYTES + leaves.length * LEAF_BYTES;
  const body = tableAt + (chunkCrcs === null ? 0 : chunkCrcs.length * CRC_BYTES);
  const bytes = new Uint8Array(body + CRC_BYTES);
  const v = viewOf(bytes);
  runs.forEach((r, i) => {
    v.setFloat64(i * RUN_BYTES, r.firstPage, true);
    v.setFloat64(i * RUN_BYTES + 8, r.pageCount, true);
  });
  leaves.forEach((page, i) => v.setFloat64(runs.length * RUN_BYTES + i * LEAF_BYTES, page, true));
  chunkCrcs?.forEach((crc, i) => v.setUint32(tableAt + i * CRC_BYTES, crc, true));
  v.setUint32(body, crc32c(bytes.subarray(0, body)), true);
  return bytes;
}

/**
 * Decodes the map: checksum, then runs ascending, disjoint, non-adjacent,
 * inside the order, summing to the page count; then leaves ascending,
 * 2 MiB-aligned, each inside one run.
 */
export function decodeMap(bytes: Uint8Array, h: ImageHeader): ImageMap {
  const body = mapBytes(h) - CRC_BYTES;
  check(bytes.length === body + CRC_BYTES, 'ECORRUPT', 'truncated page map');
  const v = viewOf(bytes);
  check(crc32c(bytes.subarray(0, body)) === v.getUint32(body, true), 'ECORRUPT', 'page map checksum mismatch');
  const runs: PageRun[] = [];
  const maxPages = pagesOfOrder(h.order);
  let end = -1; // first page after the previous run
  let pages = 0;
  for (let i = 0; i < h.runCount; i++) {
    const firstPage = v.getFloat64(i * RUN_BYTES, true);
    const pageCount = v.getFloat64(i * RUN_BYTES + 8, true);
    const ok = Number.isSafeInteger(firstPage) && Number.isSafeInteger(pageCount) && pageCount >= 1 && firstPage > end && firstPage + pageCount <= maxPages;
    check(ok, 'ECORRUPT', () => `page map run ${i} [${firstPage}, +${pageCount}) is out of order or outside the morsel`);
    runs.push({ firstPage, pageCount });
    end = firstPage + pageCount;
    pages += pageCount;
  }
  check(pages === h.populatedPages, 'ECORRUPT', () => `page map holds ${pages} pages, the header says ${h.populatedPages}`);
  return { runs, leaves: decodeLeaves(v, h, runs), chunkCrcs: decodeCrcTable(v, h) };
}

/** Version 3's chunk checksums after the leaves (covered by the map's checksum), else null. */
function decodeCrcTable(v: DataView, h: ImageHeader): Uint32Array | null {
  if (h.version < ALIGNED_VERSION) return null;
  const at = h.runCount * RUN_BYTES + h.leafCount * LEAF_BYTES;
  const crcs = new Uint32Array(chunkCountOf(h));
  for (let i = 0; i < crcs.length; i++) crcs[i] = v.getUint32(at + i * CRC_BYTES, true);
  return crcs;
}

/** The leaf list after the runs: ascending 2 MiB-aligned first pages, each leaf's pages inside one run. */
function decodeLeaves(v: DataView, h: ImageHeader, runs: readonly PageRun[]): number[] {
  const leaves: number[] = [];
  let run = 0;
  let end = -1; // first page after the previous leaf
  for (let i = 0; i < h.leafCount; i++) {
    const page = v.getFloat64(h.runCount * RUN_BYTES + i * LEAF_BYTES, true);
    check(Number.isSafeInteger(page) && page >= end && page % HUGE_FRAMES === 0, 'ECORRUPT', () => `leaf ${i} at page ${page} is out of order or not 2 MiB-aligned`);
    while (run < runs.length && runs[run].firstPage + runs[run].pageCount <= page) run++; // bounded by runCount over all leaves
    const r = runs[run];
    check(r !== undefined && r.firstPage <= page && page + HUGE_FRAMES <= r.firstPage + r.pageCount, 'ECORRUPT', () => `leaf ${i} at page ${page} is not 512 populated pages`);
    leaves.push(page);
    end = page + HUGE_FRAMES;
  }
  return leaves;
}

export interface Trailer {
  populatedPages: number;
  chunkCount: number;
  headerCrc: number;
  mapCrc: number;
  chunksCrc: number;
}

export function encodeTrailer(t: Trailer): Uint8Array {
  const bytes = new Uint8Array(TRAILER_BYTES);
  const v = viewOf(bytes);
  putMagic(bytes, 0, TRAILER_MAGIC);
  v.setFloat64(8, t.populatedPages, true);
  v.setUint32(16, t.chunkCount, true);
  v.setUint32(20, t.headerCrc, true);
  v.setUint32(24, t.mapCrc, true);
  v.setUint32(28, t.chunksCrc, true);
  v.setUint32(32, crc32c(bytes.subarray(0, 32)), true);
  return bytes;
}

/** Checks the trailer against what the reader computed (`expect`). */
export function checkTrailer(bytes: Uint8Array, expect: Trailer): void {
  check(bytes.length === TRAILER_BYTES && hasMagic(bytes, 0, TRAILER_MAGIC), 'ECORRUPT', 'truncated image or bad trailer magic');
  const v = viewOf(bytes);
  check(crc32c(bytes.subarray(0, 32)) === v.getUint32(32, true), 'ECORRUPT', 'trailer checksum mismatch');
  const same = v.getFloat64(8, true) === expect.populatedPages && v.getUint32(16, true) === expect.chunkCount && v.getUint32(20, true) === expect.headerCrc && v.getUint32(24, true) === expect.mapCrc && v.getUint32(28, true) === expect.chunksCrc;
  check(same, 'ECORRUPT', 'trailer totals disagree with the header, map or data');
}

/** The checksum stored in the last 4 bytes of a header or map. */
export const storedCrc = (bytes: Uint8Array): number => viewOf(bytes).getUint32(bytes.length - CRC_BYTES, true);

/** Running checksum of the chunk checksums (the trailer's chunksCrc). */
export function foldCrc(running: number, chunkCrc: number): number {
  const b = new Uint8Array(CRC_BYTES);
  viewOf(b).setUint32(0, chunkCrc, true);
  return crc32c(b, running);
}
