/**
 * Serialization (issue 14): save and load whole morsels against the disk's
 * own sequential bandwidth, against a page-by-page serializer, and the
 * pointer-based map (src/serial/pmap.ts) against v8.deserialize and JSON.
 * Everything in one run on the same bytes, in one scratch directory.
 *
 *   limit      plain 4 MiB fs writes (+ fsync + rename, as save does) and
 *              reads of a file of the image's size
 *   cached /   load and read with the file in the page cache, and after
 *   uncached   `sync; echo 3 > /proc/sys/vm/drop_caches` (root only: the
 *              results say which ran)
 *   naive      one write per populated page with a per-page header (found
 *              by a walk from the root per page); load: one read and one
 *              names.write per page
 *   sizes      64 MiB and 1 GiB (quick), + 8 GiB (--full: the disk's
 *              variants only, see MEMORY_VARIANTS_MAX_BYTES), each dense
 *              and 1% sparse, each on a region of its own
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import { basename, dirname, join } from 'node:path';
import * as v8 from 'node:v8';
import type { Memory } from '../src/memory.js';
import { MiB, GiB, PAGE_SIZE, type Frame } from '../src/units.js';
import { HUGE_ALLOC_ORDER, HUGE_FRAMES } from '../src/paging/walk.js';
import { save } from '../src/serial/save.js';
import { load } from '../src/serial/load.js';
import { PMap } from '../src/serial/pmap.js';
import { fileSink, fileSource } from '../src/serial/streams.js';
import { balance, checkNoLeak, collectGarbage, persistentMemory, tempDir } from './env.js';
import { MIN_REPS, REPS, claim, gibPerS, medianOf, ticker, variant, type RunOptions } from './measure.js';
import { nowNs, type Claim, type ExperimentResult, type VariantResult } from './stats.js';

export interface SerialParams {
  /** sizes of the saved and loaded morsels, each dense and sparse (the issue's: 64 MiB and 1 GiB quick, 8 GiB full) */
  sizesBytes: number[];
  /** fraction of pages populated in the sparse morsel */
  sparseFraction: number;
  reps: number;
  /** repetitions of the runs that wait for the disk (fsync'd saves, uncached loads) */
  uncachedReps: number;
  /** bytes of each pmap value */
  valueBytes: number;
  /** size of the pmap (the pointer-based map): its goal is stated at 1 GiB, so both profiles use that */
  pmapBytes: number;
  /** also measure with the page cache dropped (root only; off in smoke tests: it slows every other process) */
  uncached: boolean;
}

/**
 * Sizes above this run the disk's variants only (fsync'd saves, uncached
 * loads): beside a region of 2.3x the size (source and loaded copy), the
 * page-cache variants' three files in tmpfs, the cached image and the read
 * limit's buffer of the image's size do not fit in this machine's 24 GiB.
 */
const MEMORY_VARIANTS_MAX_BYTES = 1 * GiB;
/** The share of the available memory a size's region may take (the rest: page cache, buffers, this process). */
const MEMORY_HEADROOM = 0.95;

export function serialParams(quick: boolean): SerialParams {
  return { sizesBytes: quick ? [64 * MiB, 1 * GiB] : [64 * MiB, 1 * GiB, 8 * GiB], sparseFraction: 0.01, reps: REPS, uncachedReps: MIN_REPS, valueBytes: 1000, pmapBytes: 1 * GiB, uncached: true };
}

/** A region for one size: its source and loaded copy (dense, then the sparse pair), and slack for tables. */
function sizeRegionBytes(sizeBytes: number): number {
  return Math.ceil(2.3 * sizeBytes) + 64 * MiB;
}

/** A region for the pmap and its small twin (one at a time), and slack for tables. */
function pmapRegionBytes(p: SerialParams): number {
  return Math.ceil(1.2 * p.pmapBytes) + 64 * MiB;
}

const IO_BYTES = 4 * MiB;
const NAIVE_HEADER_BYTES = 8;
const PMAP_SMALL_DIVISOR = 16;
/** pmaps live here and at +1 TiB (fixed addresses, away from anything else a suite reserves). */
const PMAP_BASE = 2 ** 44;
const PMAP_SMALL_BASE = PMAP_BASE + 2 ** 40;
/** Where the suite's region file lives: memory (tmpfs), so region pages never compete with the images for the disk. */
const SHM_DIR = '/dev/shm';
/** JSON strings have a hard length limit in V8 (~2^29 characters): JSON runs only up to this much data. */
const JSON_MAX_BYTES = 256 * MiB;

/** Tries to drop the page cache (root); false when not permitted. */
function dropCaches(): boolean {
  try {
    fs.writeFileSync('/proc/sys/vm/drop_caches', '3');
    return true;
  } catch {
    return false;
  }
}

/** Flushes dirty pages everywhere first, so a drop really empties the cache. */
function syncAll(): void {
  spawnSync('sync');
}

/** The durability protocol every writer here ends with, as save does: fsync, rename, fsync the directory. */
function commitFile(fd: number, tmp: string, file: string): void {
  fs.fsyncSync(fd);
  fs.closeSync(fd);
  fs.renameSync(tmp, file);
  const dirFd = fs.openSync(dirname(file), 'r');
  fs.fsyncSync(dirFd);
  fs.closeSync(dirFd);
}

/** Plain large writes of `bytes` to `file`. */
function diskWrite(file: string, bytes: number, buf: Uint8Array, durable: boolean): void {
  const tmp = `${file}.tmp`;
  const fd = fs.openSync(tmp, 'w');
  for (let done = 0; done < bytes; done += IO_BYTES) fs.writeSync(fd, buf, 0, Math.min(IO_BYTES, bytes - done));
  if (durable) commitFile(fd, tmp, file);
  else fs.closeSync(fd);
}

/**
 * Plain large direct (O_DIRECT) writes of `bytes` (rounded up to a page) to
 * `file` from `parts` (page-aligned memory: region frames), then the same
 * fsync, rename and directory fsync: the device's own write bandwidth, past
 * the page cache. False where the file system has no direct I/O.
 */
function diskWriteDirect(file: string, bytes: number, parts: Uint8Array[]): boolean {
  const tmp = `${file}.tmp`;
  let fd: number;
  try {
    fd = fs.openSync(tmp, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_TRUNC | (fs.constants.O_DIRECT ?? 0));
  } catch {
    return false;
  }
  const per = parts.reduce((n, p) => n + p.length, 0);
  for (let done = 0; done < bytes; done += per) {
    let rest = Math.ceil(Math.min(per, bytes - done) / PAGE_SIZE) * PAGE_SIZE; // the last write: only what is left, in whole pages
    const take = parts.map((p) => {
      const n = Math.min(p.length, rest);
      rest -= n;
      return p.subarray(0, n);
    });
    fs.writevSync(fd, take.filter((p) => p.length > 0), done);
  }
  commitFile(fd, tmp, file);
  return true;
}

/**
 * Plain large direct (O_DIRECT) reads of all of `file` into `parts`
 * (page-aligned memory: region frames, reused), one at a time: the device's
 * own read bandwidth past the page cache. -1 where the file system has no
 * direct I/O.
 */
function diskReadDirect(file: string, parts: Uint8Array[]): number {
  let fd: number;
  try {
    fd = fs.openSync(file, fs.constants.O_RDONLY | (fs.constants.O_DIRECT ?? 0));
  } catch {
    return -1;
  }
  let total = 0;
  for (let n = 1, i = 0; n > 0 && i < 2 ** 31; i++) {
    n = fs.readvSync(fd, parts, total);
    total += n;
  }
  fs.closeSync(fd);
  return total;
}

/**
 * Plain large reads of all of `file` into `dest`: as big as the file (the
 * bytes land in memory, as a load's do), or smaller for a file read from the
 * device (its reads wrap around: the device is the limit).
 */
function diskRead(file: string, dest: Uint8Array): number {
  const fd = fs.openSync(file, 'r');
  let total = 0;
  for (let n = 1, i = 0; n > 0 && i < 2 ** 31; i++) {
    const at = total % dest.length;
    n = fs.readSync(fd, dest, at, Math.min(IO_BYTES, dest.length - at), null);
    total += n;
  }
  fs.closeSync(fd);
  return total;
}

/** The naive serializer: per page of the virtual range a walk from the root; per populated page one write of header + page. */
function naiveSave(m: Memory, name: string, file: string, durable: boolean): void {
  const h = m.names.open(name);
  const tmp = `${file}.tmp`;
  const fd = fs.openSync(tmp, 'w');
  const rec = new Uint8Array(NAIVE_HEADER_BYTES + PAGE_SIZE);
  const view = new DataView(rec.buffer);
  try {
    for (let page = 0; page < h.sizeBytes / PAGE_SIZE; page++) {
      const frame = m.morsels.lookupPage(h.dataRoot as Frame, h.dataOrder, page * PAGE_SIZE);
      if (frame < 0) continue;
      view.setFloat64(0, page, true);
      rec.set(m.region.frame(frame as Frame), NAIVE_HEADER_BYTES);
      fs.writeSync(fd, rec);
    }
    if (durable) commitFile(fd, tmp, file);
    else fs.closeSync(fd);
  } finally {
    m.names.close(h);
  }
}

/** The naive loader: one read and one names.write (walk + populate) per page. */
function naiveLoad(m: Memory, file: string, name: string, sizeBytes: number): void {
  const h = m.names.create(name, { sizeBytes });
  const fd = fs.openSync(file, 'r');
  const rec = new Uint8Array(NAIVE_HEADER_BYTES + PAGE_SIZE);
  const view = new DataView(rec.buffer);
  try {
    for (let i = 0; i < sizeBytes / PAGE_SIZE && fs.readSync(fd, rec, 0, rec.length, null) === rec.length; i++) {
      m.names.write(h, view.getFloat64(0, true) * PAGE_SIZE, rec.subarray(NAIVE_HEADER_BYTES));
    }
  } finally {
    fs.closeSync(fd);
    m.names.close(h);
  }
}

/** Fills `name` (already created) with a deterministic pattern on `fraction` of its pages (spread evenly). */
function fill(m: Memory, name: string, sizeBytes: number, fraction: number): number {
  const h = m.names.open(name, { write: true });
  const page = new Uint8Array(PAGE_SIZE);
  const stride = Math.round(1 / fraction);
  let pages = 0;
  for (let p = 0; p < sizeBytes / PAGE_SIZE; p += stride) {
    page.fill(p & 255);
    m.names.write(h, p * PAGE_SIZE, page);
    pages++;
  }
  m.names.close(h);
  return pages;
}

interface Timed {
  ns: number[];
  cpuNs: number[];
}

/** One variant of an interleaved round: `before` runs untimed ahead of each timed `fn`. */
interface Timing {
  fn: () => unknown;
  before?: () => unknown;
}

/**
 * `reps` rounds after one warm-up round; each round runs every variant once,
 * in order (interleaved: a drifting VM or disk moves them all alike).
 */
async function timedRounds<K extends string>(reps: number, variants: Record<K, Timing>): Promise<Record<K, Timed>> {
  const keys = Object.keys(variants) as K[];
  const out = Object.fromEntries(keys.map((k) => [k, { ns: [], cpuNs: [] }])) as unknown as Record<K, Timed>;
  for (let i = -1; i < reps; i++) {
    for (const k of keys) {
      await variants[k].before?.();
      const cpu = process.cpuUsage();
      const t = nowNs();
      await variants[k].fn();
      const ns = nowNs() - t;
      const used = process.cpuUsage(cpu);
      if (i >= 0) {
        out[k].ns.push(ns);
        out[k].cpuNs.push((used.user + used.system) * 1000);
      }
    }
  }
  return out;
}

/** `reps` timed runs of `fn` after one warm-up; `before` runs untimed ahead of each. */
async function timed(reps: number, fn: () => unknown, before?: () => unknown): Promise<Timed> {
  return (await timedRounds(reps, { only: { fn, before } })).only;
}

/** Save/load of one morsel (dense or sparse) against the disk and the naive serializer. */
async function saveLoad(m: Memory, dir: string, memDir: string, p: SerialParams, sizeBytes: number, fraction: number, suffix: string, tick: () => void): Promise<{ results: VariantResult[]; uncached: boolean; directIo: boolean }> {
  const name = `/serial-src${suffix}`;
  m.names.close(m.names.create(name, { sizeBytes }));
  const pages = fill(m, name, sizeBytes, fraction);
  const data = pages * PAGE_SIZE;
  const image = join(dir, `image${suffix}.img`);
  const plain = join(dir, `plain${suffix}.bin`);
  const naive = join(dir, `naive${suffix}.bin`);
  const inMem = (f: string): string => join(memDir, `${basename(f)}.pc`); // the page-cache variants' files
  const buf = new Uint8Array(IO_BYTES).fill(7);
  const results: VariantResult[] = [];
  const rate = (v: string, t: Timed): void => void results.push(variant(v + suffix, 'GiB_per_s', t.ns.map((ns) => gibPerS(data, ns))));
  const loadOnce = async (): Promise<void> => {
    const src = fileSource(image);
    try {
      await load(m, src, { name: '/serial-copy' });
    } finally {
      src.close();
    }
  };
  const unlinkCopy = (): void => {
    try {
      m.names.unlink('/serial-copy');
    } catch {
      // absent before the first run
    }
  };
  let directIo = false;
  const inMemory = sizeBytes <= MEMORY_VARIANTS_MAX_BYTES;
  const hugeFrames = [m.alloc.alloc(HUGE_ALLOC_ORDER), m.alloc.alloc(HUGE_ALLOC_ORDER)]; // 4 MiB of page-aligned memory
  try {
    await save(m, name, fileSink(image)); // the image's size, for the limits
    const imageBytes = fs.statSync(image).size;
    const aligned = hugeFrames.map((f) => m.region.bytesOf(f).subarray(m.region.byteOffsetInWindow(f), m.region.byteOffsetInWindow(f) + HUGE_FRAMES * PAGE_SIZE));
    const direct = diskWriteDirect(plain, imageBytes, aligned);
    const durable = await timedRounds<string>(p.uncachedReps, {
      save: { fn: async () => void (directIo = (await save(m, name, fileSink(image))).directIo === true) },
      'disk write (limit)': { fn: () => diskWrite(plain, imageBytes, buf, true) },
      ...(direct ? { 'disk write (limit, direct)': { fn: () => void diskWriteDirect(plain, imageBytes, aligned) } } : {}),
      'naive save': { fn: () => naiveSave(m, name, naive, true) },
    });
    // The page-cache writers write to memDir (tmpfs where there is one:
    // memory only, no write-back), each starting without its file, untimed.
    // On this VM's ext4, write-back of the other variants' files throttled
    // whichever writer ran next (one variant 16-110 ms a round, alone 16-20),
    // and replacing a file (rename over it, or O_TRUNC and close) starts
    // write-back of the new data at once (auto_da_alloc).
    const absent = (f: string) => () => fs.rmSync(f, { force: true });
    const cached: Record<string, Timed> = !inMemory ? {} : await timedRounds(p.reps, {
      'save (page cache)': { fn: () => save(m, name, fileSink(inMem(image), { durable: false })), before: absent(inMem(image)) },
      'disk write (limit, page cache)': { fn: () => diskWrite(inMem(plain), imageBytes, buf, false), before: absent(`${inMem(plain)}.tmp`) },
      'naive save (page cache)': { fn: () => naiveSave(m, name, inMem(naive), false), before: absent(`${inMem(naive)}.tmp`) },
    });
    for (const [v, t] of [...Object.entries(durable), ...Object.entries(cached)]) rate(v, t);
  } finally {
    for (const f of hugeFrames) m.alloc.free(f, HUGE_ALLOC_ORDER);
  }
  // Touched once: the reads below do not pay first-touch faults. Past MEMORY_VARIANTS_MAX_BYTES only uncached reads use it.
  const dest = new Uint8Array(inMemory ? fs.statSync(image).size : IO_BYTES).fill(1);
  tick();
  // Into the page cache, untimed: the saves wrote image and plain file with O_DIRECT, and a load reads
  // what the cache lacks with O_DIRECT too, which leaves nothing cached for the next round.
  if (inMemory) for (const f of [image, plain, naive]) diskRead(f, dest);
  const loads = !inMemory ? null : await timedRounds(p.reps, {
    'load (cached)': { fn: loadOnce, before: unlinkCopy },
    'disk read (limit, cached)': { fn: () => diskRead(plain, dest) },
    'naive load (cached)': { fn: () => naiveLoad(m, naive, '/serial-copy', sizeBytes), before: unlinkCopy },
  });
  const cpuPerGB = (t: Timed): number[] => t.cpuNs.map((ns) => ns / 1e9 / (data / 1e9));
  if (loads !== null) {
    for (const [v, t] of Object.entries(loads)) rate(v, t);
    results.push(variant('load CPU' + suffix, 'cpu_s_per_GB', cpuPerGB(loads['load (cached)'])));
  }
  unlinkCopy();
  tick();
  const uncached = p.uncached && dropCaches();
  if (uncached) {
    const drop = (): void => {
      syncAll();
      dropCaches();
    };
    const frames = [m.alloc.alloc(HUGE_ALLOC_ORDER), m.alloc.alloc(HUGE_ALLOC_ORDER)]; // 4 MiB of page-aligned memory
    const aligned = frames.map((f) => m.region.bytesOf(f).subarray(m.region.byteOffsetInWindow(f), m.region.byteOffsetInWindow(f) + HUGE_FRAMES * PAGE_SIZE));
    let cold: Record<string, Timed>;
    try {
      cold = await timedRounds<string>(p.uncachedReps, {
        'load (uncached)': { fn: loadOnce, before: () => (unlinkCopy(), drop()) },
        'disk read (limit, uncached)': { fn: () => diskRead(plain, dest), before: drop },
        ...(diskReadDirect(plain, aligned) > 0 ? { 'disk read (limit, direct)': { fn: () => void diskReadDirect(plain, aligned), before: drop } } : {}),
      });
    } finally {
      for (const f of frames) m.alloc.free(f, HUGE_ALLOC_ORDER);
    }
    for (const [v, t] of Object.entries(cold)) rate(v, t);
    results.push(variant('load CPU (uncached)' + suffix, 'cpu_s_per_GB', cpuPerGB(cold['load (uncached)'])));
    results.push(variant('disk read CPU (uncached)' + suffix, 'cpu_s_per_GB', cpuPerGB(cold['disk read (limit, uncached)'])));
    unlinkCopy();
  }
  tick();
  m.names.unlink(name);
  for (const f of [image, plain, naive]) for (const g of [f, inMem(f), `${inMem(f)}.tmp`]) fs.rmSync(g, { force: true });
  return { results, uncached, directIo };
}

/** Entries that fill about 90% of a pmap of `sizeBytes`. */
function pmapShape(sizeBytes: number, valueBytes: number): { entries: number; buckets: number } {
  const entryBytes = 24 + 8 + Math.ceil(valueBytes / 8) * 8;
  const entries = Math.floor((0.9 * sizeBytes) / (entryBytes + 8));
  return { entries, buckets: 2 ** Math.ceil(Math.log2(entries)) };
}

const valueOf = (i: number, bytes: number): Uint8Array => new Uint8Array(bytes).fill(i & 255);

/** Time to the first lookup after a load, for a pmap of `sizeBytes` at `address`. */
async function pmapFirstLookup(m: Memory, dir: string, p: SerialParams, sizeBytes: number, address: number): Promise<number[]> {
  const { entries, buckets } = pmapShape(sizeBytes, p.valueBytes);
  const map = PMap.create(m, '/serial-pmap', { address, sizeBytes, buckets });
  for (let i = 0; i < entries; i++) map.set(`k${i}`, valueOf(i, p.valueBytes));
  map.close();
  const image = join(dir, 'pmap.img');
  await save(m, '/serial-pmap', fileSink(image));
  const key = `k${entries >> 1}`;
  let opened: PMap | null = null; // closed outside the timed part (unmap and space teardown are not the lookup's cost)
  const reload = async (): Promise<void> => {
    opened?.close();
    opened = null;
    m.names.unlink('/serial-pmap');
    const src = fileSource(image);
    await load(m, src);
    src.close();
    collectGarbage(); // the load's garbage is not collected inside the timed open
  };
  const t = await timed(p.reps, () => {
    opened = PMap.open(m, '/serial-pmap', { write: false });
    const v = opened.get(key);
    if (v === undefined || v.length !== p.valueBytes) throw new Error('pmap lost its entry');
  }, reload);
  (opened as PMap | null)?.close();
  m.names.unlink('/serial-pmap');
  fs.rmSync(image, { force: true });
  return t.ns;
}

/** The same data as a Map through v8.deserialize and as an object through JSON.parse; ns to the first lookup. */
async function heapFirstLookup(p: SerialParams): Promise<{ v8: number[]; json: number[] | null }> {
  const { entries } = pmapShape(p.pmapBytes, p.valueBytes);
  const key = `k${entries >> 1}`;
  let blob: Buffer;
  {
    const map = new Map<string, Uint8Array>();
    for (let i = 0; i < entries; i++) map.set(`k${i}`, valueOf(i, p.valueBytes));
    blob = v8.serialize(map);
  }
  const v8t = await timed(p.reps, () => {
    if ((v8.deserialize(blob) as Map<string, Uint8Array>).get(key)?.length !== p.valueBytes) throw new Error('v8 lost its entry');
  });
  if (p.pmapBytes > JSON_MAX_BYTES) return { v8: v8t.ns, json: null };
  let text: string;
  {
    const obj: Record<string, string> = {};
    for (let i = 0; i < entries; i++) obj[`k${i}`] = Buffer.from(valueOf(i, p.valueBytes)).toString('base64');
    text = JSON.stringify(obj);
  }
  const jsont = await timed(p.reps, () => {
    if ((JSON.parse(text) as Record<string, string>)[key] === undefined) throw new Error('JSON lost its entry');
  });
  return { v8: v8t.ns, json: jsont.ns };
}

/**
 * Creates and unlinks every name and fixed address the suite uses once: the
 * namespace and reservation tables they need grow lazily and stay, so the
 * leak check's baseline is taken after them.
 */
function warmRegistries(m: Memory, p: SerialParams): void {
  for (const name of [...p.sizesBytes.flatMap((size) => [denseSuffix(size), sparseSuffix(size)].map((suffix) => `/serial-src${suffix}`)), '/serial-copy']) {
    m.names.close(m.names.create(name, { sizeBytes: PAGE_SIZE }));
    m.names.unlink(name);
  }
  for (const [address, sizeBytes] of [[PMAP_BASE, p.pmapBytes], [PMAP_SMALL_BASE, p.pmapBytes / PMAP_SMALL_DIVISOR]]) {
    m.names.close(m.names.create('/serial-pmap', { sizeBytes, fixedAddress: address }));
    m.names.unlink('/serial-pmap');
  }
}

/** A size as the variants and claims name it: `64 MiB`, `1 GiB`. */
const sizeLabel = (bytes: number): string => (bytes >= GiB ? `${bytes / GiB} GiB` : `${bytes / MiB} MiB`);
const denseSuffix = (bytes: number): string => ` (${sizeLabel(bytes)})`;
const sparseSuffix = (bytes: number): string => ` (1% sparse, ${sizeLabel(bytes)})`;

/** The claims about one size, dense and sparse. */
function sizeClaims(results: VariantResult[], size: number, uncached: boolean, directIo: boolean): Claim[] {
  const g = (v: string): number => medianOf(results, v, 'GiB_per_s');
  /** The disk's write limit: the faster of plain buffered and plain direct large writes (NaN-free: direct may be absent). */
  const writeLimit = (suffix: string): number => Math.max(g('disk write (limit)' + suffix), g('disk write (limit, direct)' + suffix) || 0);
  /** The disk's read limit, uncached: the faster of plain buffered and plain direct large reads. */
  const readLimit = (suffix: string): number => Math.max(g('disk read (limit, uncached)' + suffix), g('disk read (limit, direct)' + suffix) || 0);
  const at = sizeLabel(size);
  const d = denseSuffix(size);
  const sp = sparseSuffix(size);
  const inMemory = size <= MEMORY_VARIANTS_MAX_BYTES;
  const cpuOf = inMemory ? 'load CPU' : 'load CPU (uncached)';
  const cpu = medianOf(results, cpuOf + d, 'cpu_s_per_GB');
  const readCpu = medianOf(results, 'disk read CPU (uncached)' + d, 'cpu_s_per_GB');
  const disk = [
    claim(`serial: save / disk write limit (dense, ${at})`, g('save' + d) / writeLimit(d), { goal: 0.85, note: `limit: the faster of plain buffered and plain direct large writes + fsync; save used direct I/O: ${directIo ? 'yes' : 'no'}` }),
    ...(uncached ? [claim(`serial: load / disk read limit (dense, uncached, ${at})`, g('load (uncached)' + d) / readLimit(d), { goal: 0.85, note: 'limit: the faster of plain buffered and plain direct large reads, after drop_caches' })] : []),
    claim(`serial: save / page-by-page save (dense, both fsync'd, ${at})`, g('save' + d) / g('naive save' + d), { goal: 3 }),
    claim(`serial: save / page-by-page save (1% sparse, both fsync'd, ${at})`, g('save' + sp) / g('naive save' + sp), { goal: 3 }),
  ];
  const memory = !inMemory ? [] : [
    claim(`serial: load / disk read limit (dense, cached, ${at})`, g('load (cached)' + d) / g('disk read (limit, cached)' + d), { goal: 0.85 }),
    claim(`serial: save / page-by-page save (dense, page cache: no fsync, ${at})`, g('save (page cache)' + d) / g('naive save (page cache)' + d), { goal: 3 }),
    claim(`serial: save (page cache) / plain writes (page cache, ${at})`, g('save (page cache)' + d) / g('disk write (limit, page cache)' + d), { goal: 0.85 }),
    claim(`serial: load / page-by-page load (dense, cached, ${at})`, g('load (cached)' + d) / g('naive load (cached)' + d), { goal: 3 }),
    claim(`serial: save / page-by-page save (1% sparse, page cache, ${at})`, g('save (page cache)' + sp) / g('naive save (page cache)' + sp), { goal: 3 }),
    claim(`serial: load / page-by-page load (1% sparse, cached, ${at})`, g('load (cached)' + sp) / g('naive load (cached)' + sp), { goal: 3 }),
  ];
  return [
    ...disk,
    ...memory,
    ...(Number.isFinite(cpu) ? [claim(`serial: load CPU-seconds per GB (dense, ${at}${inMemory ? '' : ', uncached'}; lower is better)`, cpu, { anchor: 1.4, goal: 0.5, met: cpu <= 0.5, ...(inMemory ? {} : { note: `plain uncached reads of the same bytes alone: ${readCpu.toFixed(2)} CPU-s/GB` }) })] : []),
  ];
}

/**
 * Runs `work` on a fresh mapped region file of `bytes` (in memory: /dev/shm,
 * like a user's region file: its frames are page-aligned, so a save can send
 * them with direct I/O), checks that it leaked nothing, and removes it: each
 * size gets a region of its own (the 8 GiB one and the others' page-cache
 * files would not fit in memory together).
 */
async function onRegion(bytes: number, p: SerialParams, work: (m: Memory) => Promise<void>): Promise<void> {
  const regionFile = persistentMemory(bytes, fs.existsSync(SHM_DIR) ? SHM_DIR : os.tmpdir());
  try {
    const m = regionFile.memory;
    warmRegistries(m, p);
    const before = balance(m);
    await work(m);
    checkNoLeak(m, before, 'serial');
  } finally {
    regionFile.dispose();
  }
}

export async function runSerial(opts: RunOptions & { params?: SerialParams }): Promise<ExperimentResult> {
  const p = opts.params ?? serialParams(opts.quick);
  const tick = ticker(6 * p.sizesBytes.length + 2, opts.progress);
  const scratch = tempDir('morsel-serial-');
  const memScratch = tempDir('morsel-serial-pc-', fs.existsSync(SHM_DIR) ? SHM_DIR : undefined);
  const results: VariantResult[] = [];
  let uncached = false;
  let directIo = false;
  const skipped: number[] = [];
  try {
    for (const size of p.sizesBytes) {
      // A region that does not fit in the memory left would end in the OOM killer: skipped, and said so
      // (after the last size's buffers are collected and, as root, the page cache it filled is dropped).
      collectGarbage();
      if (p.uncached) dropCaches();
      if (sizeRegionBytes(size) > MEMORY_HEADROOM * os.freemem()) {
        skipped.push(size);
        continue;
      }
      await onRegion(sizeRegionBytes(size), p, async (m) => {
        const dense = await saveLoad(m, scratch.dir, memScratch.dir, p, size, 1, denseSuffix(size), tick);
        uncached = dense.uncached;
        directIo = dense.directIo;
        results.push(...dense.results);
        results.push(...(await saveLoad(m, scratch.dir, memScratch.dir, p, size, p.sparseFraction, sparseSuffix(size), tick)).results);
      });
    }
    const ms = (ns: number[]): number[] => ns.map((n) => n / 1e6);
    await onRegion(pmapRegionBytes(p), p, async (m) => {
      results.push(variant('pmap open + first lookup after load', 'ms', ms(await pmapFirstLookup(m, scratch.dir, p, p.pmapBytes, PMAP_BASE))));
      results.push(variant(`pmap open + first lookup after load (1/${PMAP_SMALL_DIVISOR} size)`, 'ms', ms(await pmapFirstLookup(m, scratch.dir, p, p.pmapBytes / PMAP_SMALL_DIVISOR, PMAP_SMALL_BASE))));
    });
    const heap = await heapFirstLookup(p);
    results.push(variant('v8.deserialize + first lookup', 'ms', ms(heap.v8)));
    if (heap.json !== null) results.push(variant('JSON.parse + first lookup', 'ms', ms(heap.json)));
    tick();
  } finally {
    scratch.dispose();
    memScratch.dispose();
  }
  const t = (v: string): number => medianOf(results, v, 'ms');
  const pmapRatio = t('pmap open + first lookup after load') / t(`pmap open + first lookup after load (1/${PMAP_SMALL_DIVISOR} size)`);
  const memScratchNote = fs.existsSync(SHM_DIR) ? `tmpfs (${SHM_DIR}: memory only, no write-back)` : 'the scratch directory (no tmpfs here)';
  return {
    id: 'serial',
    title: 'Serialization: save/load whole morsels (issue 14)',
    anchor: 'CRIU image streamer: 0.1 CPU-s/GB to capture, 1.4 CPU-s/GB to restore; memcached warm restart rewrites every pointer',
    params: { ...p, directIo, pageCache: uncached ? 'cached and uncached (drop_caches as root)' : p.uncached ? 'cached only (drop_caches not permitted)' : 'cached only (uncached runs off)', ioBytes: IO_BYTES },
    results,
    claims: [
      ...p.sizesBytes.filter((size) => !skipped.includes(size)).flatMap((size) => sizeClaims(results, size, uncached, directIo)),
      claim(`serial: pmap first lookup at ${p.pmapBytes / MiB} MiB, v8.deserialize / pmap time`, t('v8.deserialize + first lookup') / t('pmap open + first lookup after load'), { goal: 100 }),
      claim(`serial: pmap first lookup, full / 1/${PMAP_SMALL_DIVISOR}-size time (size independence: ~1)`, pmapRatio, { goal: 2, met: pmapRatio <= 2 }),
    ],
    notes: [
      ...(skipped.length > 0 ? [`skipped: ${skipped.map(sizeLabel).join(', ')}: the region (2.3x the size, in memory) does not fit in the memory available (${(os.freemem() / GiB).toFixed(1)} GiB).`] : []),
      `Throughput = populated bytes / time, medians of ${p.reps} runs (${p.uncachedReps} for fsync\'d saves and uncached loads) after one warm-up round, interleaved: each round runs the variants compared with each other once (fsync'd writes; page-cache writes; cached reads; uncached reads); the image adds a header, a map (with 4 bytes per 4 MiB chunk) and up to 4 KiB of padding that aligns the data.`,
      `save = a copy-on-write snapshot, then per 4 MiB chunk one async fs.writev straight from the region frames (no copy; ${directIo ? 'O_DIRECT: the region is a mapped file, page-aligned' : 'buffered: direct I/O was not available'}), the chunk's crc32c computed while it is written, header and map written last at offset 0, + fsync + rename + dir fsync; the disk write limit = the faster of the same byte count in 4 MiB writeSync from one buffer and in 4 MiB O_DIRECT writev from page-aligned memory, + the same fsync, rename, dir fsync (naive save: buffered, as a naive serializer writes).`,
      `the region is a file in ${SHM_DIR} (memory), mapped as a user's region file is; the images and plain files go to ${os.tmpdir()}.`,
      'load = header, map and padding in one read, then per chunk one read straight into freshly allocated frames and its crc32c on a thread-pool thread (readvCrc; up to four chunks in flight while they come from the page cache, one once a read waits for the device), the chunk checked, then linked: one ensureChild per table, the pages of each table by plain stores (the tree is private until the name is published); then the name. The disk read limit = 4 MiB readSync into one pre-touched buffer of the image size.',
      uncached ? 'uncached: sync + echo 3 > /proc/sys/vm/drop_caches before each run (the file then comes from the disk); the read limit is the faster of 4 MiB buffered reads and 4 MiB O_DIRECT reads into page-aligned memory, one at a time; load reads what the page cache lacks with O_DIRECT straight into the frames, four chunks in flight.' : 'uncached runs skipped (off, or dropping the page cache is not permitted: not root).',
      `page cache variants: the same writers without fsync, into ${memScratchNote} (each round starts without its file): the serializer's own cost without the disk's, which dominates small fsync'd saves on this shared disk (on the disk's ext4, write-back of one variant's file throttled whichever writer ran next). save goes through fileSink({ durable: false }) (morsel save --no-sync): no direct I/O, no fsync, still written to a temporary file and renamed into place; the plain and naive writers write the file and close it.`,
      'naive = one 4104-byte write per populated page (8-byte page number + page) after a walk from the root per virtual page; naive load = one read and one names.write per page.',
      'load CPU = process.cpuUsage (user + system, all threads incl. the libuv read threads) per GB of populated bytes.',
      `pmap: ${p.pmapBytes / MiB} MiB in both profiles (the goal's size), ${pmapShape(p.pmapBytes, p.valueBytes).entries} entries of ${p.valueBytes} bytes (~90% of the morsel); timed = PMap.open (name, map at its fixed address, header check) + one get, right after a load (its close, i.e. unmap and space teardown, is not timed). v8/JSON: the same entries as a Map / an object of base64 strings${p.pmapBytes > JSON_MAX_BYTES ? ' (JSON skipped above 256 MiB: V8 string limit)' : ''}.`,
    ],
  };
}
