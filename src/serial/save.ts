/**
 * save: one morsel to an image (format.ts) in large sequential writes.
 *
 * Consistency: the bytes come from a SnapshotSource, a copy-on-write clone
 * taken at the start (snapshotSource): other users keep reading and writing
 * the morsel while it is saved, and the image is the morsel as it was when
 * the save began.
 */
import { crc32c } from './crc.js';
import type { Memory } from '../memory.js';
import type { MorselHandle, MorselRef } from '../manage/handle.js';
import type { Region } from '../physical/region.js';
import { HUGE_FRAMES, isLeafEntry, levelSpan, type Walker } from '../paging/walk.js';
import type { Order } from '../morsel/order.js';
import { PAGE_SIZE, type Frame } from '../units.js';
import { DEFAULT_CHUNK_PAGES, IMAGE_VERSION, chunkCountOf, dataPadBytes, encodeHeader, encodeMap, encodeTrailer, foldCrc, mapBytes, storedCrc, type ImageHeader, type PageRun } from './format.js';
import { assert } from '../errors.js';
import { hostError, type ImageSink } from './streams.js';

/** A consistent view of one morsel's populated pages for as long as it is open. */
export interface SnapshotSource {
  readonly region: Region;
  /** what the image header says about the morsel (page counts are the writer's) */
  readonly morsel: Pick<ImageHeader, 'order' | 'sizeBytes' | 'fixedAddress' | 'name' | 'huge'>;
  /** populated page numbers in virtual order, and the frame holding each */
  readonly pages: number[];
  readonly frames: number[];
  /** first pages of the 2 MiB leaves, ascending */
  readonly leaves: number[];
  close(): void;
}

/**
 * The populated pages of the subtree at `root` (a morsel of `order`), in
 * virtual order, through the walker; a 2 MiB leaf gives its 512 pages (its
 * contiguous frames) and its first page in `leaves`.
 */
export function collectPages(walker: Walker, root: Frame, order: Order): { pages: number[]; frames: number[]; leaves: number[] } {
  const pages: number[] = [];
  const frames: number[] = [];
  const leaves: number[] = [];
  if (order === 0) return { pages: [0], frames: [root], leaves };
  const visit = (table: Frame, level: number, firstPage: number): void => {
    const pagesPerEntry = levelSpan(level) / PAGE_SIZE;
    walker.forEachPresent(table, (idx, lo, hi) => {
      const page = firstPage + idx * pagesPerEntry;
      if (isLeafEntry(level, lo)) {
        const leaf = walker.followHuge(table, idx, lo, hi);
        leaves.push(page);
        for (let i = 0; i < HUGE_FRAMES; i++) (pages.push(page + i), frames.push(leaf + i));
        return;
      }
      const child = walker.follow(table, idx, lo, hi);
      if (level === 1) {
        pages.push(page);
        frames.push(child);
      } else visit(child, level - 1, page); // depth bounded by `order`
    });
  };
  visit(root, order, 0);
  return { pages, frames, leaves };
}

/** Runs of consecutive page numbers. */
export function runsOf(pages: readonly number[]): PageRun[] {
  const runs: PageRun[] = [];
  for (const page of pages) {
    const last = runs[runs.length - 1];
    if (last !== undefined && last.firstPage + last.pageCount === page) last.pageCount++;
    else runs.push({ firstPage: page, pageCount: 1 });
  }
  return runs;
}

/**
 * The snapshot source: opens `target` (a path: read permission checked; or
 * a handle), takes a copy-on-write clone of it (src/morsel/cow.ts: O(1),
 * unnamed and PENDING, so a crash leaves nothing recovery does not reap)
 * and reads the clone: writers keep writing the source meanwhile and never
 * reach the image. Access sections of this Memory's spaces that were open
 * during the clone are waited for (Names.sharing); see Names.clone for
 * writers elsewhere. close() gives the clone's only use back: it is
 * destroyed, returning the references it held.
 */
export function snapshotSource(memory: Memory, target: string | MorselRef): SnapshotSource {
  const names = memory.names;
  const morsels = memory.morsels;
  const h: MorselHandle = typeof target === 'string' ? names.open(target) : names.openRef(target);
  try {
    const d = morsels.decodeHandle(h.id, h.generation);
    const huge = morsels.dataOf(d).huge;
    const fixedAddress = d.meta ? morsels.metaOf(d).address : null;
    // The record, not stat(): stat counts the subtree's frames (a walk of the whole morsel).
    const rec = typeof target === 'string' ? names.ns.lookup(target) : null;
    const name = rec === null ? null : { path: target as string, mode: rec.mode, uid: rec.uid, gid: rec.gid, mtimeMs: rec.mtimeMs };
    names.sharing.check();
    const snapshot = morsels.clone(h.id, { pending: true });
    const snapRoot = morsels.decode(snapshot).rootFrame;
    try {
      names.sharing.wait();
      const { pages, frames, leaves } = collectPages(morsels.walker, snapRoot as Frame, h.dataOrder);
      return {
        region: memory.region,
        morsel: { order: h.dataOrder, sizeBytes: h.sizeBytes, fixedAddress, name, huge },
        pages,
        frames,
        leaves,
        close: () => morsels.release(snapRoot),
      };
    } catch (e) {
      morsels.release(snapRoot);
      throw e;
    }
  } finally {
    names.close(h); // the snapshot stands alone
  }
}

export interface SerialResult {
  bytes: number;
  pages: number;
  seconds: number;
  bytesPerSecond: number;
  /** save: whether the data went to the file with direct I/O (past the page cache; see fileSink) */
  directIo?: boolean;
}

export interface SaveOptions {
  chunkPages?: number;
  onProgress?: (doneBytes: number, totalBytes: number) => void;
}

/** Saves the morsel `target` (a path or a handle) to `sink`; the sink is committed only after the whole image and the consistency re-check. */
export async function save(memory: Memory, target: string | MorselRef, sink: ImageSink, opts: SaveOptions = {}): Promise<SerialResult> {
  const started = performance.now();
  let src: SnapshotSource | null = null;
  try {
    src = snapshotSource(memory, target);
    const bytes = await writeImage(src, sink, opts.chunkPages ?? DEFAULT_CHUNK_PAGES, opts.onProgress);
    await sink.commit();
    const seconds = (performance.now() - started) / 1000;
    return { bytes, pages: src.pages.length, seconds, bytesPerSecond: bytes / seconds, directIo: sink.directIo?.() ?? false };
  } catch (e) {
    sink.abort();
    throw hostError(e, 'save failed');
  } finally {
    src?.close();
  }
}

/**
 * Writes the whole image of `src` and returns its byte count. Data goes out
 * per chunk in one gather write of the frames themselves (views of the
 * region, no copy; one write in flight while the next chunk's views are
 * built). A positional sink (writeAt: files) gets the data first, each
 * chunk's crc32c computed while the chunk is being written, and header, map
 * (with those checksums) and the padding to the aligned data last, at
 * offset 0: the checksum pass costs no time of its own. A stream sink needs
 * the header first, so the checksums are a pass of their own before it.
 */
async function writeImage(src: SnapshotSource, sink: ImageSink, chunkPages: number, onProgress?: (done: number, total: number) => void): Promise<number> {
  const runs = runsOf(src.pages);
  const shape = { version: IMAGE_VERSION, populatedPages: src.pages.length, chunkPages };
  const chunkCount = chunkCountOf(shape);
  const header = encodeHeader({ ...src.morsel, ...shape, runCount: runs.length, leafCount: src.leaves.length });
  const headBytes = header.length + mapBytes({ ...shape, runCount: runs.length, leafCount: src.leaves.length });
  const pad = new Uint8Array(dataPadBytes(shape, headBytes));
  const dataAt = headBytes + pad.length;
  const dataBytes = src.pages.length * PAGE_SIZE;
  const chunkViews = (c: number): Uint8Array[] => frameViews(src.region, src.frames, c * chunkPages, Math.min(chunkPages, src.pages.length - c * chunkPages));
  const crcOf = (parts: readonly Uint8Array[]): number => parts.reduce((crc, part) => crc32c(part, crc), 0);
  const chunkCrcs = new Uint32Array(chunkCount);
  const writeAt = sink.writeAt?.bind(sink);
  if (writeAt === undefined) {
    for (let c = 0; c < chunkCount; c++) chunkCrcs[c] = crcOf(chunkViews(c));
    await sink.write([header, encodeMap({ runs, leaves: src.leaves, chunkCrcs }), pad]);
  }
  let inFlight: Promise<void> = Promise.resolve();
  for (let c = 0; c < chunkCount; c++) {
    const parts = chunkViews(c);
    await inFlight;
    inFlight = writeAt === undefined ? sink.write(parts) : writeAt(dataAt + c * chunkPages * PAGE_SIZE, parts);
    inFlight.catch(() => {}); // awaited on the next turn or below
    if (writeAt !== undefined) chunkCrcs[c] = crcOf(parts); // on this thread while the write runs on the pool
    onProgress?.(Math.min(dataBytes, (c + 1) * chunkPages * PAGE_SIZE), dataBytes);
  }
  await inFlight;
  const map = encodeMap({ runs, leaves: src.leaves, chunkCrcs });
  assert(header.length + map.length === headBytes, 'the map is as long as mapBytes says');
  const chunksCrc = chunkCrcs.reduce((running, crc) => foldCrc(running, crc), 0);
  const trailer = encodeTrailer({ populatedPages: src.pages.length, chunkCount, headerCrc: storedCrc(header), mapCrc: storedCrc(map), chunksCrc });
  if (writeAt === undefined) await sink.write([trailer]);
  else await writeAt(0, [header, map, pad]).then(() => writeAt(dataAt + dataBytes, [trailer]));
  return dataAt + dataBytes + trailer.length;
}

/** Views of frames[first, first + n) in the region, one per run of consecutive frames in one window. */
export function frameViews(region: Region, frames: readonly number[], first: number, n: number): Uint8Array[] {
  const views: Uint8Array[] = [];
  for (let i = 0; i < n; ) {
    const frame = frames[first + i] as Frame;
    const window = region.bytesOf(frame);
    let run = 1;
    while (i + run < n && frames[first + i + run] === frame + run && region.bytesOf((frame + run) as Frame) === window) run++;
    const at = region.byteOffsetInWindow(frame);
    views.push(window.subarray(at, at + run * PAGE_SIZE));
    i += run;
  }
  return views;
}
