/**
 * load: an image (format.ts) back into a new named morsel, on new frames.
 *
 * Everything the image says is verified before it is used: the header and
 * map before anything is allocated, each chunk's checksum before its pages
 * are linked, the trailer before the name is published. The morsel is
 * built PENDING and unnamed (Names.beginCreate): its tables directly, one
 * ensureChild per table, its pages allocated in batches of one chunk,
 * filled, then linked by plain stores, a table's run at a time (no zeroing,
 * no walk from the root and no CAS per page). A 2 MiB leaf of the image gets an order-9 frame, filled in
 * place and linked by one CAS (a PS entry) once its last page is verified;
 * with no order-9 frame free its pages become 4 KiB pages. The next chunks
 * are read while the current one is checked and linked (readData).
 *
 * Failure: every frame of the failed load is returned (the unlinked batch
 * here, 4 KiB and order-9, the PENDING morsel by closing its only handle) and nothing else
 * changed. Crash: the PENDING morsel's use dies with the process, so
 * recovery destroys it; unlinked frames are reclaimed by the rebuild.
 */
import { crc32c } from './crc.js';
import { assert, check, isMorselError } from '../errors.js';
import type { Memory } from '../memory.js';
import type { CreateOptions } from '../manage/names.js';
import { formatHandle } from '../manage/handle.js';
import { ENTRIES_PER_TABLE, HUGE_ALLOC_ORDER, HUGE_FRAMES, HUGE_LEVEL, levelSpan, type Walker } from '../paging/walk.js';
import type { FrameAllocator } from '../alloc/llfree.js';
import type { Region } from '../physical/region.js';
import type { Order } from '../morsel/order.js';
import { PAGE_SIZE, type Frame } from '../units.js';
import { CHILD_FRAMES } from '../physical/layout.js';
import { DATA_ALIGN_BYTES, FIXED_HEADER_BYTES, TRAILER_BYTES, checkTrailer, chunkCountOf, chunkTailBytes, dataPadBytes, decodeHeader, decodeMap, foldCrc, headerLength, mapBytes, storedCrc, type ImageHeader, type ImageMap, type PageRun } from './format.js';
import { frameViews, type SerialResult } from './save.js';
import { hostError, type ImageSource } from './streams.js';

export interface LoadOptions {
  /** the name to create (default: the name saved in the image) */
  name?: string;
  /** permission bits (default: the image's, else 0600) */
  mode?: number;
  onProgress?: (doneBytes: number, totalBytes: number) => void;
}

export interface LoadResult extends SerialResult {
  name: string;
  handle: string;
}

interface Head {
  header: ImageHeader;
  map: ImageMap;
  headerCrc: number;
  mapCrc: number;
  headBytes: number;
}

/** Reads exactly `n` bytes; ECORRUPT when the image ends first. */
async function readExact(source: ImageSource, n: number, what: string): Promise<Uint8Array> {
  const bytes = await source.read(n);
  check(bytes.length === n, 'ECORRUPT', () => `truncated image: ${what} ends after ${bytes.length} of ${n} bytes`);
  return bytes;
}

/**
 * What readHead reads first: the whole head (header, map and padding) of
 * an image whose map is small, as its data starts at the first
 * DATA_ALIGN_BYTES boundary after them (version 3). One read instead of four.
 */
const HEAD_PROBE_BYTES = DATA_ALIGN_BYTES;
/** What a whole zero padding compares with. */
const ZERO_PAD = new Uint8Array(DATA_ALIGN_BYTES);

/**
 * Reads and verifies the header and map, and the zero padding before the
 * data (version 3). Returns with them the probe's bytes it did not use (an
 * image older than version 3 has no padding, so its data starts in the probe).
 */
async function readHead(source: ImageSource): Promise<{ head: Head; unused: Uint8Array }> {
  const probe = (await source.read(HEAD_PROBE_BYTES)).slice(); // a copy: the source reuses its buffers
  let at = 0;
  const take = async (n: number, what: string): Promise<Uint8Array> => {
    if (at + n <= probe.length) return probe.subarray(at, (at += n));
    const have = probe.subarray(at);
    at = probe.length;
    const more = await source.read(n - have.length);
    check(more.length === n - have.length, 'ECORRUPT', () => `truncated image: ${what} ends after ${have.length + more.length} of ${n} bytes`);
    const out = new Uint8Array(n);
    out.set(have);
    out.set(more, have.length);
    return out;
  };
  const length = headerLength(probe.subarray(0, FIXED_HEADER_BYTES));
  const headerBytes = await take(length, 'the header');
  const header = decodeHeader(headerBytes);
  const mapRaw = await take(mapBytes(header), 'the page map');
  const map = decodeMap(mapRaw, header);
  const pad = await take(dataPadBytes(header, length + mapRaw.length), 'the padding before the data');
  check(pad.length <= ZERO_PAD.length && Buffer.compare(pad, ZERO_PAD.subarray(0, pad.length)) === 0, 'ECORRUPT', 'the padding before the data is not zero');
  const head = { header, map, headerCrc: storedCrc(headerBytes), mapCrc: storedCrc(mapRaw), headBytes: length + mapRaw.length + pad.length };
  return { head, unused: probe.subarray(at) };
}

/**
 * `source` after readHead: its unused probe bytes first. Only images older
 * than version 3 leave any; they load through read() and a copy (no
 * readInto, which cannot start from bytes already read).
 */
function afterHead(source: ImageSource, unused: Uint8Array): ImageSource {
  if (unused.length === 0) return source;
  let back = unused;
  return {
    read: async (n) => {
      const first = back.subarray(0, n);
      back = back.subarray(first.length);
      if (first.length === n) return first;
      const more = await source.read(n - first.length);
      const out = new Uint8Array(first.length + more.length);
      out.set(first);
      out.set(more, first.length);
      return out;
    },
    close: () => source.close(),
  };
}

/**
 * Frames a load of `h` allocates: root (and meta page), inner tables, pages.
 * Exact, from the map, when every leaf gets an order-9 frame (a leaf needs
 * no level-1 table); each leaf that falls back to 4 KiB pages needs one more.
 */
export function framesNeeded(h: ImageHeader, map: ImageMap): number {
  const runs = map.runs;
  if (h.order === 0) return 1 + (h.fixedAddress !== null ? 1 : 0);
  let frames = 1 + (h.fixedAddress !== null ? 1 : 0) + h.populatedPages - map.leaves.length;
  for (let level = 1; level < h.order; level++) {
    const span = levelSpan(level + 1) / PAGE_SIZE; // pages under one level-`level` table
    let lastKey = -1;
    for (const r of runs) {
      const firstKey = Math.floor(r.firstPage / span);
      const endKey = Math.floor((r.firstPage + r.pageCount - 1) / span);
      frames += endKey - Math.max(firstKey, lastKey + 1) + 1;
      lastKey = endKey;
    }
  }
  return frames;
}

/** A cursor over the populated pages of a map, in virtual order. */
class PageCursor {
  private run = 0;
  private inRun = 0;

  constructor(private readonly runs: readonly PageRun[]) {}

  next(): number {
    const r = this.runs[this.run];
    const page = r.firstPage + this.inRun;
    if (++this.inRun === r.pageCount) {
      this.run++;
      this.inRun = 0;
    }
    return page;
  }
}

/** A chunk's frames (in page order) and the order-0 frames among them (the rest lie in 2 MiB leaves). */
interface PendingChunk {
  frames: Frame[];
  small: Frame[];
}

/**
 * Builds the tables of a fresh private morsel from pages in virtual order:
 * keeps the path of tables to the current page, so each table is created by
 * one ensureChild, pages come a whole allocator child at a time, and each
 * run of pages in one table is linked by plain stores (linkPrivate: no CAS
 * per page on a tree no one else sees; plus one copy when the source cannot
 * read into frames). A leaf of the map costs one order-9 alloc and one CAS,
 * when an order-9 frame is free.
 */
class TreeBuilder {
  private readonly tables: Frame[] = [];
  private readonly keys: number[] = [];
  /** chunks allocated and not linked yet, oldest first (the current and up to READ_AHEAD_CHUNKS more): abandon() frees them */
  private readonly pending: PendingChunk[] = [];
  /** order-0 frames of pending[0] already linked (link() is under way or was interrupted) */
  private linkedInOldest = 0;
  /** order-9 frames allocated and not linked yet, by their leaf's first page: abandon() frees them */
  private readonly hugeFrames = new Map<number, Frame>();
  private readonly allocCursor: PageCursor;
  private readonly linkCursor: PageCursor;
  /** the next leaf of the map that allocate() meets */
  private nextLeaf = 0;
  /** order-0 frames taken in a batch and not handed out yet, used from the end: abandon() and finish() free them */
  private readonly spare: Frame[] = [];
  /** pages of the map, and those frameFor has handed a frame out for */
  private readonly pageCount: number;
  private handedOut = 0;

  constructor(
    private readonly walker: Walker,
    private readonly alloc: FrameAllocator,
    readonly region: Region,
    private readonly root: Frame,
    private readonly order: Order,
    private readonly map: ImageMap,
  ) {
    this.tables[order] = root;
    this.allocCursor = new PageCursor(map.runs);
    this.linkCursor = new PageCursor(map.runs);
    this.pageCount = map.runs.reduce((n, r) => n + r.pageCount, 0);
  }

  /** Frames for the next `n` pages: fresh ones (held until linked), or the root itself for order 0. */
  allocate(n: number): Frame[] {
    if (this.order === 0) {
      assert(n === 1, 'an order-0 image holds its one page');
      return [this.root];
    }
    const chunk: PendingChunk = { frames: [], small: [] };
    this.pending.push(chunk); // before the first alloc: an ENOSPC part-way leaves them to abandon()
    if (this.nextLeaf === this.map.leaves.length && this.hugeFrames.size === 0) {
      // No 2 MiB leaf from here on: every page is a 4 KiB page (the cursor is needed for leaves only).
      chunk.small = chunk.frames;
      for (let i = 0; i < n; i++) {
        this.handedOut++;
        if (this.spare.length === 0) this.takeSpare();
        chunk.frames.push(this.spare.pop()!);
      }
      return chunk.frames;
    }
    for (let i = 0; i < n; i++) chunk.frames.push(this.frameFor(this.allocCursor.next(), chunk.small));
    return chunk.frames;
  }

  /** The frame for `page`: inside its leaf's order-9 frame (allocated at the leaf's first page), else a fresh order-0 frame. */
  private frameFor(page: number, small: Frame[]): Frame {
    this.handedOut++;
    const leafPage = page - (page % HUGE_FRAMES);
    if (page === this.map.leaves[this.nextLeaf]) {
      this.nextLeaf++;
      this.allocHuge(page);
    }
    const leaf = this.hugeFrames.size === 0 ? undefined : this.hugeFrames.get(leafPage); // most images have no leaves: no lookup per page
    if (leaf !== undefined) return (leaf + page - leafPage) as Frame;
    if (this.spare.length === 0) this.takeSpare();
    const frame = this.spare.pop()!;
    small.push(frame);
    return frame;
  }

  /**
   * Refills `spare` with up to one child's worth of frames (512: one
   * counter CAS, allocSmallBatch), never more than the 4 KiB pages left: the
   * pages after this one minus those of the 2 MiB leaves not reached yet
   * (which take order-9 frames; one that falls back takes spares when it
   * is reached). Reversed, so pop() hands them out in ascending order: a
   * chunk's pages land in contiguous frames, read by one large iovec.
   */
  private takeSpare(): void {
    const smallLeft = this.pageCount - this.handedOut + 1 - (this.map.leaves.length - this.nextLeaf) * HUGE_FRAMES;
    const want = Math.min(CHILD_FRAMES, smallLeft);
    assert(want > 0, 'the page being allocated is a 4 KiB page');
    this.alloc.allocSmallBatch(want, this.spare); // ENOSPC part-way: what it took is in spare, for abandon()
    this.spare.reverse();
  }

  /** Frees the spare frames left over (pages that went into 2 MiB leaves instead); after the last chunk. */
  finish(): void {
    for (const frame of this.spare) this.alloc.free(frame);
    this.spare.length = 0;
  }

  /** An order-9 frame for the leaf at `leafPage`, held in hugeFrames; none (4 KiB fallback) when no order-9 frame is free. */
  private allocHuge(leafPage: number): void {
    try {
      this.hugeFrames.set(leafPage, this.alloc.alloc(HUGE_ALLOC_ORDER));
    } catch (e) {
      if (!isMorselError(e, 'ENOSPC')) throw e;
    }
  }

  /** Copies page i of `data` into frames[i], for every frame (one copy per run of contiguous frames). */
  fill(frames: readonly Frame[], data: Uint8Array): void {
    let at = 0;
    for (const part of frameViews(this.region, frames, 0, frames.length)) {
      part.set(data.subarray(at, at + part.length));
      at += part.length;
    }
  }

  /**
   * Links filled `frames` as the next pages of the map: each run of pages in
   * one level-1 table by plain stores (walker.linkPrivate: the tree is ours
   * alone until commitCreate publishes it), a leaf by one CAS at its last page.
   */
  link(frames: readonly Frame[]): void {
    if (this.order === 0) return; // the root is the page
    assert(this.pending[0]?.frames === frames, 'chunks are linked in the order they were allocated');
    this.linkedInOldest = 0;
    // The run not linked yet: entries first.. of `table`, frames[start, start + n).
    let table = 0 as Frame;
    let first = 0;
    let start = 0;
    let n = 0;
    const flush = (): void => {
      assert(this.walker.linkPrivate(table, first, frames, start, n), 'a page of a private morsel is linked once');
      this.linkedInOldest += n;
      n = 0;
    };
    for (let i = 0; i < frames.length; i++) {
      const page = this.linkCursor.next();
      const leafPage = page - (page % HUGE_FRAMES);
      const leaf = this.hugeFrames.size === 0 ? undefined : this.hugeFrames.get(leafPage);
      if (leaf === undefined) {
        const t = this.tableAt(page, 1);
        const idx = page % ENTRIES_PER_TABLE;
        if (n > 0 && (t !== table || idx !== first + n)) flush();
        if (n === 0) {
          table = t;
          first = idx;
          start = i;
        }
        n++;
      } else if (page === leafPage + HUGE_FRAMES - 1) {
        if (n > 0) flush();
        assert(this.walker.link(this.tableAt(page, HUGE_LEVEL), (leafPage / HUGE_FRAMES) % ENTRIES_PER_TABLE, leaf, true), 'a leaf of a private morsel is linked once');
        this.hugeFrames.delete(leafPage);
      }
    }
    if (n > 0) flush();
    this.pending.shift();
    this.linkedInOldest = 0;
  }

  /** Frees the frames allocated and not linked (the linked ones go with the morsel). No read may still be filling them. */
  abandon(): void {
    if (this.order === 0) return; // the root is freed with the morsel
    this.pending.forEach((chunk, c) => {
      for (let i = c === 0 ? this.linkedInOldest : 0; i < chunk.small.length; i++) this.alloc.free(chunk.small[i]);
    });
    for (const leaf of this.hugeFrames.values()) this.alloc.free(leaf, HUGE_ALLOC_ORDER);
    this.hugeFrames.clear();
    this.finish();
    this.pending.length = 0;
    this.linkedInOldest = 0;
  }

  /** The level-`level` table holding `page`, creating the tables above it that changed since the last page. */
  private tableAt(page: number, level: number): Frame {
    for (let l = this.order - 1; l >= level; l--) {
      const key = Math.floor(page / (levelSpan(l + 1) / PAGE_SIZE));
      if (this.keys[l] === key) continue;
      this.tables[l] = this.walker.ensureChild(this.tables[l + 1], key % ENTRIES_PER_TABLE, 'populate:before-link', 'populate:lost-race');
      this.keys[l] = key;
    }
    return this.tables[level];
  }
}

/**
 * Loads the image from `source` into a new morsel named `opts.name` (or the
 * image's name). Typed errors: ECORRUPT, EVERSION, ENOSPC, EEXIST, ERANGE
 * (an address no space can map), EINVAL (no name); every frame returned.
 */
export async function load(memory: Memory, source: ImageSource, opts: LoadOptions = {}): Promise<LoadResult> {
  const started = performance.now();
  try {
    const probed = await readHead(source);
    const head = probed.head;
    const input = afterHead(source, probed.unused);
    const { header } = head;
    const path = opts.name ?? header.name?.path;
    check(path !== undefined, 'EINVAL', 'the image carries no name (saved from a handle): give one with --name');
    checkNameFree(memory, path);
    const need = framesNeeded(header, head.map);
    const free = memory.alloc.freeFrames();
    check(need <= free, 'ENOSPC', () => `the image needs ${need} frames, the region has ${free} free`);
    const createOpts: CreateOptions = { sizeBytes: header.sizeBytes, order: header.order, mode: opts.mode ?? header.name?.mode, fixedAddress: header.fixedAddress ?? undefined, huge: header.huge };
    const names = memory.names;
    const h = names.beginCreate(path, createOpts);
    const builder = new TreeBuilder(memory.morsels.walker, memory.alloc, memory.region, h.dataRoot as Frame, h.dataOrder, head.map);
    let bytes: number;
    try {
      bytes = head.headBytes + (await readData(input, head, builder, opts.onProgress));
      builder.finish();
    } catch (e) {
      builder.abandon();
      names.close(h); // the only use of a PENDING morsel: destroys it
      throw e;
    }
    names.commitCreate(h, createOpts); // EEXIST (a name or reservation taken meanwhile) destroys it
    names.close(h);
    const seconds = (performance.now() - started) / 1000;
    return { name: path, handle: formatHandle(h), bytes, pages: header.populatedPages, seconds, bytesPerSecond: bytes / seconds };
  } catch (e) {
    throw hostError(e, 'load failed');
  }
}

function checkNameFree(memory: Memory, path: string): void {
  check(!memory.names.exists(path), 'EEXIST', () => `${path} exists`);
}

/** One chunk on its way in: its frames, where its trailing checksum lands (versions 1-2; empty since), and the read. */
interface Incoming {
  frames: Frame[];
  crcBytes: Uint8Array;
  /** resolves when the chunk's bytes are in `frames` (readInto; with their crc32c when the source computed it) or in `copy`; readahead: they came from the device through the page cache */
  done: Promise<{ copy: Uint8Array | null; crc: number | null; readahead: boolean }>;
}

/**
 * Starts reading chunk `c`: straight into freshly allocated frames when the
 * source can scatter (files), else into a buffer copied in later.
 */
function startChunk(source: ImageSource, builder: TreeBuilder, n: number, c: number, tailBytes: number): Incoming {
  const frames = builder.allocate(n);
  const crcBytes = new Uint8Array(tailBytes);
  let done: Incoming['done'];
  if (source.readInto !== undefined) {
    const parts = frameViews(builder.region, frames, 0, n);
    if (tailBytes > 0) parts.push(crcBytes);
    done = source.readInto(parts).then((got) => {
      check(got.bytes === n * PAGE_SIZE + tailBytes, 'ECORRUPT', () => `truncated image: chunk ${c} ends after ${got.bytes} bytes`);
      return { copy: null, crc: tailBytes === 0 ? got.crc32c : null, readahead: got.fromDisk && !got.direct }; // with a trailing checksum the read's crc covers it too
    });
  } else {
    done = readExact(source, n * PAGE_SIZE + tailBytes, `chunk ${c}`).then((copy) => ({ copy, crc: null, readahead: false }));
  }
  done.catch(() => {}); // awaited later; never an unhandled rejection meanwhile
  return { frames, crcBytes, done };
}

/**
 * Chunks read ahead of the one being linked while the image comes from the
 * page cache. A file source reads and checksums each on a thread-pool thread
 * (readInto: the addon's readvCrc), and a cached read is a memcpy, so reads
 * in flight together use both cores: 64 MiB cached, 4 MiB chunks, here:
 * load / the one-thread read limit 0.48-0.63 with 1 ahead, 0.62-0.66 with 2,
 * 0.73-0.78 with 4 (the pool has 4 threads). Reads from the device with
 * direct I/O (the file source's O_DIRECT descriptor: no readahead, no
 * page-cache copy) keep 4 in flight too. Once a buffered read had to wait
 * for the device (no direct I/O here), one at a time: concurrent reads of
 * one file defeat the kernel's sequential readahead (uncached: 0.50-0.59 of
 * plain reads with 2 or 4 in flight, 0.91-1.09 with 1).
 */
const READ_AHEAD_CHUNKS = 4;

/**
 * Reads the chunks (up to READ_AHEAD_CHUNKS ahead of the one being linked,
 * one while the reads come from the device), checks each checksum before
 * linking, then the trailer and the end of the input. Returns the bytes
 * read. On failure no read is left filling a frame.
 */
async function readData(source: ImageSource, head: Head, builder: TreeBuilder, onProgress?: (done: number, total: number) => void): Promise<number> {
  const h = head.header;
  const chunkCount = chunkCountOf(h);
  const tailBytes = chunkTailBytes(h);
  const crcOf = (c: number, tail: Uint8Array): number => head.map.chunkCrcs?.[c] ?? storedCrc(tail);
  const pagesIn = (c: number): number => Math.min(h.chunkPages, h.populatedPages - c * h.chunkPages);
  const total = h.populatedPages * PAGE_SIZE;
  const ahead: Incoming[] = []; // chunks c+1.. in order
  let depth = 1; // read() calls must not overlap; readInto ones may while the page cache serves them
  let started = 0;
  const readAhead = (): void => {
    for (; started < chunkCount && ahead.length < depth; started++) ahead.push(startChunk(source, builder, pagesIn(started), started, tailBytes));
  };
  let chunksCrc = 0;
  try {
    readAhead();
    for (let c = 0; c < chunkCount; c++) {
      const cur = ahead[0];
      const { copy, crc: readCrc, readahead } = await cur.done;
      ahead.shift();
      depth = source.readInto === undefined || readahead ? 1 : READ_AHEAD_CHUNKS;
      readAhead();
      const n = pagesIn(c);
      if (copy !== null) {
        builder.fill(cur.frames, copy);
        cur.crcBytes.set(copy.subarray(n * PAGE_SIZE));
      }
      let crc = readCrc ?? 0;
      if (readCrc === null) for (const part of frameViews(builder.region, cur.frames, 0, n)) crc = crc32c(part, crc);
      check(crc === crcOf(c, cur.crcBytes), 'ECORRUPT', () => `chunk ${c} checksum mismatch`);
      builder.link(cur.frames);
      chunksCrc = foldCrc(chunksCrc, crc);
      onProgress?.(Math.min(total, (c * h.chunkPages + n) * PAGE_SIZE), total);
    }
  } catch (e) {
    for (const chunk of ahead) await chunk.done.catch(() => {}); // their frames are freed next: no read may still fill them
    throw e;
  }
  const trailer = await readExact(source, TRAILER_BYTES, 'the trailer');
  checkTrailer(trailer, { populatedPages: h.populatedPages, chunkCount, headerCrc: head.headerCrc, mapCrc: head.mapCrc, chunksCrc });
  check((await source.read(1)).length === 0, 'ECORRUPT', 'bytes after the trailer: not one image');
  return total + chunkCount * tailBytes + TRAILER_BYTES;
}
