/**
 * What `morsel web` shows, read from a region opened read-only: the region
 * and its allocator, the namespace tree, one page table of one morsel at a
 * time, the frame map by 2 MiB block and a cheap change summary. Nothing
 * here writes: every table is read through the walker (src/paging/walk.ts),
 * frames are classified by the tolerant scanner (src/recovery/reachable.ts)
 * and the allocator's read-only view, names through Names (rights checked
 * as for the user running the server). Every answer is bounded: at most
 * MAX_TREE_NODES names, one table (ENTRIES_PER_TABLE entries), at most
 * MAX_MAP_CELLS frame-map cells.
 */
import { createHash } from 'node:crypto';
import { AllocatorView } from '../alloc/llfree.js';
import { MorselError, check, isMorselError } from '../errors.js';
import { formatHandle, parseHandle, type MorselRef } from '../manage/handle.js';
import type { NameStat } from '../manage/names.js';
import type { Memory } from '../memory.js';
import { decodeIdBits, hex, type DecodedId } from '../morsel/id.js';
import { orderBytes } from '../morsel/order.js';
import { A, D, G, HI_META, HI_MORSEL_TOP, HI_NX, P, PCD, PS, PWT, RW, TAG_MASK, TAG_SHIFT, US, entryToBigInt, pfnOf } from '../paging/entry.js';
import { ENTRIES_PER_TABLE, HUGE_FRAMES, HUGE_LEVEL, isLeafEntry, levelSpan } from '../paging/walk.js';
import { CHILD_FRAMES, USER_SLOTS, firstAllocatableFrame } from '../physical/layout.js';
import { FORMAT_VERSION } from '../physical/superblock.js';
import { KIND_DATA, KIND_REGISTRY, KIND_TABLE, scanRegion } from '../recovery/reachable.js';
import { PAGE_SIZE, type Frame } from '../units.js';

/** Names in one /api/names answer (the rest is cut off, `truncated`). */
export const MAX_TREE_NODES = 2000;
/** Directory depth the tree descends. */
export const MAX_TREE_DEPTH = 64;
/** Cells of one frame-map answer: larger regions group several 2 MiB blocks per cell. */
export const MAX_MAP_CELLS = 16384;
/** The classes of the frame map, in the order of each cell's counts. */
export const FRAME_CLASSES = ['free', 'table', 'data', 'registry', 'reserved', 'other'] as const;
const C_FREE = 0;
const C_TABLE = 1;
const C_DATA = 2;
const C_REGISTRY = 3;
const C_RESERVED = 4;
const C_OTHER = 5;
const KIND_CLASS: Record<number, number> = { [KIND_TABLE]: C_TABLE, [KIND_DATA]: C_DATA, [KIND_REGISTRY]: C_REGISTRY };

type Json = Record<string, unknown>;

// --- region ------------------------------------------------------------------------

/** Size, frames (as `morsel stat` counts them), allocator counters and the live users of the region. */
export function regionInfo(m: Memory): Json {
  const view = new AllocatorView(m.region);
  const total = m.region.frameCount;
  const allocatable = m.alloc.totalAllocatable();
  const free = m.alloc.freeFrames();
  return {
    path: m.region.path,
    version: FORMAT_VERSION,
    sizeBytes: total * PAGE_SIZE,
    frames: { total, allocatable, free, used: allocatable - free, reserved: total - allocatable },
    allocator: { children: view.children, childFrames: CHILD_FRAMES, freeByChildCounters: view.childFreeSum(), hugeChildren: view.hugeChildren().length, firstAllocatableFrame: view.first },
    morsels: m.morsels.list().length,
    users: liveUsers(m),
  };
}

/** The user slots held by live processes: slot and pid. */
function liveUsers(m: Memory): { slot: number; pid: number }[] {
  const out: { slot: number; pid: number }[] = [];
  for (let slot = 0; slot < USER_SLOTS; slot++) {
    const pid = m.region.slotPid(slot);
    if (pid !== 0 && m.region.slotAlive(slot)) out.push({ slot, pid });
  }
  return out;
}

// --- names -------------------------------------------------------------------------

export interface NameNode {
  name: string;
  path: string;
  kind: 'dir' | 'morsel';
  mode: string;
  uid: number;
  gid: number;
  sizeBytes: number;
  /** morsels: */
  handle?: string;
  order?: number;
  dataPages?: number;
  tableFrames?: number;
  users?: number;
  fixedAddress?: number | null;
  stale?: boolean;
  /** directories: */
  children?: NameNode[];
  /** a directory this user may not list, or a name that failed to stat: code and message */
  error?: { code: string; message: string };
}

const octal = (mode: number): string => '0' + mode.toString(8).padStart(3, '0');
const childPath = (dir: string, name: string): string => (dir === '/' ? `/${name}` : `${dir}/${name}`);

/**
 * The namespace from `/` as a tree, depth first, at most `maxNodes`
 * (default MAX_TREE_NODES) names (then `truncated`). `deep`: each morsel is also walked for its
 * populated pages and table frames (O(its frames)); without, only the
 * records and usage counts are read (the change summary).
 */
export function namesTree(m: Memory, opts: { deep: boolean; maxNodes?: number }): { root: NameNode; nodes: number; truncated: boolean } {
  const maxNodes = opts.maxNodes ?? MAX_TREE_NODES;
  const budget = { left: maxNodes, truncated: false };
  const rootStat = m.names.stat('/');
  const root: NameNode = { name: '/', path: '/', kind: 'dir', mode: octal(rootStat.mode), uid: rootStat.uid, gid: rootStat.gid, sizeBytes: 0 };
  fillDir(m, root, opts.deep, budget, MAX_TREE_DEPTH);
  return { root, nodes: maxNodes - budget.left, truncated: budget.truncated };
}

function fillDir(m: Memory, dir: NameNode, deep: boolean, budget: { left: number; truncated: boolean }, depthLeft: number): void {
  dir.children = [];
  let entries: ReturnType<Memory['names']['list']>;
  try {
    entries = m.names.list(dir.path);
  } catch (e) {
    dir.error = errorOf(e);
    return;
  }
  entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  for (const { name, rec } of entries) {
    if (budget.left <= 0 || depthLeft <= 0) {
      budget.truncated = true;
      return;
    }
    budget.left--;
    const path = childPath(dir.path, name);
    const node: NameNode = { name, path, kind: rec.kind, mode: octal(rec.mode), uid: rec.uid, gid: rec.gid, sizeBytes: rec.sizeBytes };
    dir.children.push(node);
    if (rec.kind === 'dir') fillDir(m, node, deep, budget, depthLeft - 1);
    else Object.assign(node, deep ? morselOfName(m, path) : shallowMorsel(m, rec.id, rec.generation, rec.fixedAddress));
  }
}

/** A named morsel's full stat (walks its tree). */
function morselOfName(m: Memory, path: string): Partial<NameNode> {
  let s: NameStat;
  try {
    s = m.names.stat(path);
  } catch (e) {
    return { error: errorOf(e) };
  }
  return { handle: s.handle, order: s.order, dataPages: s.dataPages, tableFrames: s.tableFrames, users: s.users, fixedAddress: s.fixedAddress, stale: s.stale };
}

/** A named morsel's identity and usage count, without walking its tree. */
function shallowMorsel(m: Memory, id: bigint, generation: number, fixedAddress: number | null): Partial<NameNode> {
  const handle = formatHandle({ id: decodeIdBits(id).id, generation });
  try {
    const data = m.morsels.dataOf(m.morsels.decodeHandle(id, generation));
    return { handle, fixedAddress, users: m.morsels.usage.total(data.rootFrame) };
  } catch (e) {
    if (isMorselError(e, 'ESTALE')) return { handle, fixedAddress, stale: true };
    return { handle, error: errorOf(e) };
  }
}

const errorOf = (e: unknown): { code: string; message: string } =>
  e instanceof MorselError ? { code: e.code, message: e.message } : { code: 'EINTERNAL', message: String(e) };

// --- one morsel, one table at a time -----------------------------------------------------

export interface TableQuery {
  /** a /path or a handle 0x…@generation (exactly one) */
  name?: string;
  handle?: string;
  /** entry indices from the data morsel's root table down to the table shown (empty: the root) */
  path: number[];
  /** decode every entry's bits */
  bits: boolean;
}

/** The morsel a query names, as a validated incarnation: ENOENT/EACCES for names, ESTALE for a destroyed handle. */
function resolveMorsel(m: Memory, q: TableQuery): { ref: MorselRef; d: DecodedId; name?: string; sizeBytes: number } {
  check((q.name === undefined) !== (q.handle === undefined), 'EINVAL', 'give exactly one of name=/path and handle=0x…@generation');
  if (q.name !== undefined) {
    check(q.name.startsWith('/'), 'EINVAL', () => `name must be an absolute path, got ${JSON.stringify(q.name)}`);
    const s = m.names.stat(q.name);
    check(s.kind === 'morsel', 'EISDIR', () => `${q.name} is a directory`);
    const ref = parseHandle(s.handle!);
    return { ref, d: m.morsels.decodeHandle(ref.id, ref.generation), name: q.name, sizeBytes: s.sizeBytes };
  }
  const ref = parseHandle(q.handle!);
  const d = m.morsels.decodeHandle(ref.id, ref.generation);
  return { ref, d, sizeBytes: d.meta ? m.morsels.metaOf(d).sizeBytes : orderBytes(d.order) };
}

/**
 * One page table of a morsel: the data morsel's root table, or the table
 * `q.path` leads to (each index must name a present entry: ENOENT
 * otherwise; deeper than the leaf tables or into a 2 MiB leaf: ERANGE).
 * Per present entry: the frame it references, whether it is shared with
 * other morsels by copy-on-write (its reference count), for tables above
 * the leaves how many of the child's entries are present (a 2 MiB leaf:
 * `hugeLeaf` and its frame range instead, never followed as a table), and
 * with `q.bits` the entry's bits decoded.
 */
export function morselTable(m: Memory, q: TableQuery): Json {
  const { ref, d, name, sizeBytes } = resolveMorsel(m, q);
  const data = m.morsels.dataOf(d);
  const walker = m.morsels.walker;
  const morsel = { name, handle: formatHandle(ref), id: hex(d.id), order: data.order, meta: d.meta, rootFrame: d.rootFrame, dataRootFrame: data.rootFrame, sizeBytes, users: m.morsels.usage.total(data.rootFrame) };
  if (data.order === 0) {
    check(q.path.length === 0, 'ERANGE', 'an order-0 morsel is one data page: it has no tables');
    return { morsel, table: null };
  }
  check(q.path.length < data.order, 'ERANGE', () => `an order-${data.order} morsel has ${data.order} level(s) of tables: a path of at most ${data.order - 1} indices`);
  let table = data.rootFrame as Frame;
  for (let i = 0; i < q.path.length; i++) {
    const index = q.path[i];
    check(Number.isInteger(index) && index >= 0 && index < ENTRIES_PER_TABLE, 'EINVAL', () => `index ${index} is not in 0..${ENTRIES_PER_TABLE - 1}`);
    const lo = m.region.loadLo(table, index);
    check(!isLeafEntry(data.order - i, lo), 'ERANGE', () => `entry ${index} of the level-${HUGE_LEVEL} table (frame ${table}) is a 2 MiB leaf: no table below it`);
    const child = walker.child(table, index);
    check(child >= 0, 'ENOENT', () => `entry ${index} of the level-${data.order - i} table (frame ${table}) is not present`);
    table = child as Frame;
  }
  const level = data.order - q.path.length;
  const entries: Json[] = [];
  walker.forEachPresent(table, (index, lo, hi) => {
    const leaf = isLeafEntry(level, lo);
    const frame = walker.followChild(table, index, lo, hi, level);
    // Copy-on-write: a write-protected entry whose child more than one table references (refs: the
    // stored count plus the clones' references not counted yet, src/morsel/lazy.ts; `uncounted` those).
    const uncounted = (lo & RW) === 0 ? m.morsels.cow.lazy.uncountedRefs(table, index, lo) : 0;
    const refs = ((lo & RW) === 0 ? m.morsels.cow.refs.get(frame) : 1) + uncounted;
    const entry: Json = { index, frame, shared: refs > 1, refs };
    if (uncounted > 0) entry.uncounted = uncounted;
    if (leaf) Object.assign(entry, { hugeLeaf: true, lastFrame: frame + HUGE_FRAMES - 1 });
    else if (level > 1) entry.childPresent = presentIn(m, frame);
    if (q.bits) entry.bits = decodeEntry(lo, hi);
    entries.push(entry);
  });
  const shared = entries.filter((e) => e.shared === true).length;
  const hugeLeaves = entries.filter((e) => e.hugeLeaf === true).length;
  return { morsel, table: { frame: table, level, path: q.path, entrySpanBytes: levelSpan(level), entriesPerTable: ENTRIES_PER_TABLE, present: entries.length, shared, hugeLeaves, entries } };
}

function presentIn(m: Memory, table: Frame): number {
  let n = 0;
  m.morsels.walker.forEachPresent(table, () => n++);
  return n;
}

/** Every field of a page-table entry (src/paging/entry.ts) by name. */
export function decodeEntry(lo: number, hi: number): Json {
  const flag = (bit: number): boolean => (lo & bit) !== 0;
  return {
    raw: hex(entryToBigInt(lo, hi)),
    P: flag(P), RW: flag(RW), US: flag(US), PWT: flag(PWT), PCD: flag(PCD), A: flag(A), D: flag(D), PS: flag(PS), G: flag(G),
    NX: (hi & HI_NX) !== 0,
    pfn: pfnOf(lo, hi),
    orderTag: (lo & TAG_MASK) >>> TAG_SHIFT,
    meta: (hi & HI_META) !== 0,
    morselTop: (hi & HI_MORSEL_TOP) !== 0,
  };
}

// --- frame map ----------------------------------------------------------------------

/**
 * The region's frames by 2 MiB block (CHILD_FRAMES frames), grouped into at
 * most MAX_MAP_CELLS cells: per cell, its frames of each FRAME_CLASSES
 * class. Free and allocated come from the allocator's bitfields; what an
 * allocated frame holds from one scan of everything reachable; `other` is
 * allocated but reached by nothing (in flight, order-9 blocks). A live
 * region may change during the scan: the counts are a snapshot.
 */
export function frameMap(m: Memory): Json {
  const startMs = performance.now();
  const view = new AllocatorView(m.region);
  const scan = scanRegion(m.region, { spaces: true });
  const frameCount = m.region.frameCount;
  const first = firstAllocatableFrame(frameCount);
  const blocks = view.children;
  const cellBlocks = Math.max(1, Math.ceil(blocks / MAX_MAP_CELLS));
  const cellCount = Math.ceil(blocks / cellBlocks);
  const counts = new Array<number>(cellCount * FRAME_CLASSES.length).fill(0);
  const totals = new Array<number>(FRAME_CLASSES.length).fill(0);
  for (let c = 0; c < blocks; c++) {
    const block = blockCounts(view, scan.kinds, c, first, frameCount);
    const base = Math.floor(c / cellBlocks) * FRAME_CLASSES.length;
    for (let k = 0; k < FRAME_CLASSES.length; k++) {
      counts[base + k] += block[k];
      totals[k] += block[k];
    }
  }
  return {
    classes: FRAME_CLASSES,
    blockFrames: CHILD_FRAMES,
    blocks,
    cellBlocks,
    cells: cellCount,
    counts,
    totals: Object.fromEntries(FRAME_CLASSES.map((name, k) => [name, totals[k]])),
    findings: scan.findings.length,
    costMs: Math.round(performance.now() - startMs),
  };
}

/** Frames of each class in block `c` (frames past the region's end are not counted). */
function blockCounts(view: AllocatorView, kinds: Uint8Array, c: number, first: number, frameCount: number): number[] {
  const out = new Array<number>(FRAME_CLASSES.length).fill(0);
  const lo = c * CHILD_FRAMES;
  const hi = Math.min(lo + CHILD_FRAMES, frameCount);
  const reserved = Math.max(0, Math.min(hi, first) - lo);
  const past = lo + CHILD_FRAMES - hi; // marked allocated by format, not part of the region
  out[C_RESERVED] = reserved;
  for (let f = Math.max(lo, first); f < hi; f++) {
    const cls = KIND_CLASS[kinds[f]];
    if (cls !== undefined) out[cls]++;
  }
  const allocated = view.allocatedInChild(c) - past;
  out[C_FREE] = hi - lo - allocated;
  out[C_OTHER] = Math.max(0, allocated - reserved - out[C_TABLE] - out[C_DATA] - out[C_REGISTRY]);
  return out;
}

// --- change summary -------------------------------------------------------------------

/**
 * What the page polls (through server-sent events): cheap to compute
 * (O(children + names), no tree walks) and changed by every allocation or
 * free in any process, every namespace change and every open or close of a
 * named morsel. `names` is a digest of the name records and usage counts.
 */
export function changeSummary(m: Memory): Json {
  const view = new AllocatorView(m.region);
  const tree = namesTree(m, { deep: false });
  return {
    freeByChildCounters: view.childFreeSum(),
    freeFrames: m.alloc.freeFrames(),
    names: createHash('sha256').update(JSON.stringify(tree)).digest('hex').slice(0, 16),
    nameCount: tree.nodes,
    users: liveUsers(m).map((u) => u.pid),
  };
}
