/**
 * Reachability: the set of frames the live structures use. The allocator's
 * state after a crash is rebuilt from this set (thesis 2.4.5): every frame
 * reachable from the region's roots is allocated, every other one is free,
 * so frames in transit at the crash (allocated, not yet linked; unlinked, not
 * yet freed) come back and nothing is lost.
 *
 * One tolerant scanner serves both recovery and `morsel check`: it never
 * throws on bad data, never follows a reference twice (so a cycle or a
 * shared subtree cannot loop), and records every violated invariant as a
 * Finding with what, where, and, when a safe one exists, a fix. Recovery
 * refuses (ECORRUPT) if there is any finding; check reports and repairs.
 *
 * What is reachable:
 *   root slot 0  the live-morsel registry; each value is a morsel ID whose
 *                subtree (and, for a meta morsel, its data morsel's
 *                subtree) is reachable; a child shared by copy-on-write
 *                (write-protected entries) is walked once, its other
 *                references counted (Scan.shared: the true reference counts)
 *   root slot 1  the reference-count table: header and storage frames
 *   root slots 2, 3  owned by src/manage (namespace, reservations): walked
 *                by the visitor registered for the slot, else the top table
 *                alone (opaque)
 *   user slots   each slot's address-space registry (SLOT_SPACES_ROOT) and
 *                usage registries (SLOT_USAGE_ROOTS), when `spaces` is set:
 *                per-process state, which recovery drops
 *   visitors     anything else a layer above registers (registerReachVisitor)
 *
 * Tables are read through the walker's geometry (src/paging/walk.ts); the
 * scanner keeps its own tolerant loop because it must report, not throw.
 */
import { MorselError, assert } from '../errors.js';
import { firstAllocatableFrame } from '../physical/layout.js';
import { OWNED_ROOT_SLOTS, ROOT_SLOT_LIVE_TABLE, ROOT_SLOT_NAMES, ROOT_SLOT_REFCOUNTS, ROOT_SLOT_RESERVATIONS, ROOT_SLOTS } from '../physical/superblock.js';
import { CHILD_FRAMES, CHILD_SHIFT, SLOT_SPACES_ROOT, SLOT_USAGE_ROOTS, USER_SLOTS } from '../physical/layout.js';
import { ENTRIES_PER_TABLE, HUGE_FRAMES, isLeafEntry } from '../paging/walk.js';
import { levelKeySpan, registryDepth } from '../morsel/registry.js';
import type { Region } from '../physical/region.js';
import { HI_MORSEL_TOP, HI_PFN_MASK, INNER_FLAGS, LAZY_BITS, LAZY_REF, P, PS, RW, entryToBigInt, isHugeLeafFlags, isInnerFlags, isPresent, pfnOf } from '../paging/entry.js';
import { decodeIdBits, hex, type DecodedId } from '../morsel/id.js';
import { META_DATA_ID_ENTRY, readMetaPage } from '../morsel/meta.js';
import { orderBytes } from '../morsel/order.js';
import type { Morsels } from '../morsel/morsels.js';
import { SPACE_LEVELS5 } from '../space/address-space.js';
import { forEachRefCountStorageFrame } from '../alloc/refcount/index.js';
import { FrameAllocator } from '../alloc/llfree.js';
import { forEachLazyTable } from '../morsel/lazy.js';
import type { Frame } from '../units.js';

export type ProblemCode =
  | 'ROOT_SLOT' // a superblock root slot holds no valid table frame
  | 'ENTRY_RANGE' // an entry references a frame outside the allocatable range
  | 'ENTRY_FLAGS' // an inner entry has other flags than P|RW|US or stray high bits
  | 'ENTRY_PS' // the page-size bit outside a morsel's level-2 table, or on an entry there that is not an aligned block of 512 frames
  | 'ENTRY_NOT_ZERO' // a non-present entry is not all zero
  | 'CYCLE' // an entry references a table on its own path (an ancestor)
  | 'DUPLICATE' // a frame is referenced from two places
  | 'BAD_ID' // a live-table value is not a valid morsel ID
  | 'REGISTRY_KEY' // a live-table value sits under another key than its root frame
  | 'BAD_META' // a meta morsel's page or data ID is invalid
  | 'META_NO_DATA' // a live meta morsel whose data ID was cleared (interrupted destroy)
  | 'SPACE_VALUE' // an address-space registry value is malformed
  | 'SPACE_MAPPING' // a space maps something that is not a live morsel of that order
  | 'VISITOR' // a registered visitor failed (its frames may be unaccounted)
  | 'USER_SLOT_ROOT' // a user-slot record's registry root is not an allocatable frame
  | 'REFCOUNT_TABLE'; // the reference-count table's header or directory cannot be read (recovery recomputes it)

export interface Problem {
  code: ProblemCode | string;
  what: string;
  where: string;
  /** whether `--repair` can fix it */
  repairable: boolean;
}

/** Clear entry `index` of `table` iff it still is (lo, hi). The only structural repair. */
export interface EntryFix {
  table: number;
  index: number;
  lo: number;
  hi: number;
}

/** Which kind of structure a finding lies in: repair treats them differently. */
export type Area = 'registry' | 'morsel' | 'space' | 'other';

export interface Finding {
  problem: Problem;
  area: Area;
  /** the morsel (ID, hex) whose subtree holds the finding, when area is 'morsel' */
  morsel: string | null;
  fix: EntryFix | null;
  /**
   * False when the finding means some frames may be referenced in a way the
   * scan could not follow (a root or ID it could not decode): then reclaiming
   * "unreachable" frames could free live data, so repair must not.
   */
  reachTrusted: boolean;
}

/**
 * What a reached frame holds (Scan.kinds): registry tables and other
 * metadata of the layers (live table, names, reservations, usage counts),
 * page tables (of morsels and address spaces), data pages (a morsel's pages;
 * an order-0 morsel's root and a meta morsel's page count as data, as
 * Morsels.stats counts them). KIND_NONE: not reached.
 */
export const KIND_NONE = 0;
export const KIND_REGISTRY = 1;
export const KIND_TABLE = 2;
export const KIND_DATA = 3;

export interface Scan {
  /** 1 for every frame some live structure references (USED_REBUILT: the reference-count table's storage) */
  used: Uint8Array;
  /** frames shared by copy-on-write (referenced by 2 or more write-protected morsel entries) -> references */
  shared: Map<number, number>;
  /** shared frames -> how many of their references are not counted yet (LAZY_REF entries, src/morsel/lazy.ts) */
  lazyRefs: Map<number, number>;
  /** morsel tables holding lazy bits (LAZY_REF or LAZY_SRC): recovery clears them */
  lazyTables: number[];
  /** KIND_* of every frame (KIND_NONE where used is 0) */
  kinds: Uint8Array;
  /** first frames of the 2 MiB leaves (order-9 blocks) live morsels reference */
  hugeLeaves: number[];
  frames: number;
  morsels: number;
  spaces: number;
  findings: Finding[];
}

/**
 * A visitor a layer above registers so that its persistent frames are
 * reachable (else recovery frees them). `rootSlot`: it owns that superblock
 * root slot and is called with its table; otherwise it finds its own roots.
 * `perProcess`: state of live processes only (dropped by recovery, walked
 * by `check`). It reports through the context and must never throw.
 */
export interface ReachVisitor {
  name: string;
  rootSlot?: number;
  perProcess?: boolean;
  visit(ctx: ScanContext, rootFrame: number | null): void;
}

const visitors: ReachVisitor[] = [];

/**
 * Registers a visitor for every later scan in this process (layers call it
 * once, at import; code, not region state). Returns its unregistration.
 */
export function registerReachVisitor(v: ReachVisitor): () => void {
  if (!visitors.some((w) => w.name === v.name)) visitors.push(v);
  return () => {
    const i = visitors.indexOf(v);
    if (i >= 0) visitors.splice(i, 1);
  };
}

/** What a visitor gets: the scanner's tolerant reference tracking. */
/**
 * Where a reference or finding is, for the report: a string, or a function
 * that builds it (hot walks pass one closure per table, so the text is only
 * built when there is a finding).
 */
export type Where = string | (() => string);
const whereText = (w: Where): string => (typeof w === 'string' ? w : w());

export interface ScanContext {
  readonly region: Region;
  /** Records a reference to `frame` from `where`; whether to descend (false: out of range, cycle or second reference, already reported). */
  ref(frame: number, where: Where, fix: EntryFix | null): boolean;
  /** Validates a present-or-not inner entry; the child frame, or null if not present. */
  inner(table: number, idx: number, lo: number, hi: number, where: Where): number | null;
  /** Walks a registry-shaped radix tree (src/morsel/registry.ts) whose top table is `top` (already referenced). */
  registryTree(top: number, name: string, value: (key: number, lo: number, hi: number, table: number, idx: number) => void): void;
  report(code: string, what: string, where: string, fix: EntryFix | null, reachTrusted?: boolean): void;
}

class Scanner implements ScanContext {
  readonly used: Uint8Array;
  readonly kinds: Uint8Array;
  readonly findings: Finding[] = [];
  frames = 0;
  morsels = 0;
  spaces = 0;
  private readonly first: number;
  private area: Area = 'registry';
  private morsel: string | null = null;
  /** Tables on the current walk's path, for cycle detection. */
  private readonly path: number[] = [];
  /** Data-morsel roots (frame -> order), to validate space mappings. */
  private readonly roots = new Map<number, number>();
  /** Frames referenced by write-protected morsel entries (copy-on-write) -> how many such entries. */
  readonly sharedRefs = new Map<number, number>();
  /** Of those, references through LAZY_REF entries (not counted yet) -> how many. */
  readonly lazyRefs = new Map<number, number>();
  readonly lazyTables: number[] = [];
  readonly hugeLeaves: number[] = [];

  constructor(readonly region: Region) {
    this.used = new Uint8Array(region.frameCount);
    this.kinds = new Uint8Array(region.frameCount);
    this.first = firstAllocatableFrame(region.frameCount);
  }

  private find(code: ProblemCode, what: string, where: Where, fix: EntryFix | null, reachTrusted = true): void {
    this.report(code, what, whereText(where), fix, reachTrusted);
  }

  report(code: string, what: string, where: string, fix: EntryFix | null, reachTrusted = true): void {
    this.findings.push({ problem: { code, what, where, repairable: fix !== null }, area: this.area, morsel: this.morsel, fix, reachTrusted });
  }

  /** Runs `fn` with findings attributed to `area` (and `morsel`). */
  private within(area: Area, morsel: string | null, fn: () => void): void {
    const saved = [this.area, this.morsel] as const;
    this.area = area;
    this.morsel = morsel;
    try {
      fn();
    } finally {
      [this.area, this.morsel] = saved;
    }
  }

  /**
   * Records a reference to `frame` from `where` (cleared by `fix` if the
   * reference must go). Returns whether the caller should descend: false for
   * out-of-range frames, cycles and second references.
   */
  ref(frame: number, where: Where, fix: EntryFix | null): boolean {
    if (!(frame >= this.first && frame < this.region.frameCount)) {
      this.find('ENTRY_RANGE', `references frame ${frame}, outside the allocatable range [${this.first}, ${this.region.frameCount})`, where, fix);
      return false;
    }
    if (this.path.includes(frame)) {
      // A table cannot contain its own ancestor; the ancestor keeps its real parent, so clearing this entry loses nothing.
      this.find('CYCLE', `references frame ${frame}, a table on its own path`, where, fix);
      return false;
    }
    if (this.used[frame]) {
      // Which of the two references is the wrong one is unknowable: report, never guess.
      this.find('DUPLICATE', `references frame ${frame}, which is already referenced elsewhere`, where, null);
      return false;
    }
    this.used[frame] = 1;
    this.kinds[frame] = KIND_REGISTRY; // page tables and data pages are re-marked by their walks
    this.frames++;
    return true;
  }

  /**
   * Validates the (lo, hi) entry `idx` of `table` as an inner entry (registry,
   * morsel or space table). Returns the child frame if the entry is present;
   * flag problems are reported but the child is still followed, so the
   * reachable set stays a superset of what anything might use.
   */
  inner(table: number, idx: number, lo: number, hi: number, where: Where, inMorsel = false): number | null {
    if (!isPresent(lo)) {
      // Writers keep non-present entries all zero; a 32-bit CAS of lo would keep a stray hi.
      if (lo !== 0 || hi !== 0) this.find('ENTRY_NOT_ZERO', `non-present entry ${entryHex(lo, hi)} is not zero`, where, { table, index: idx, lo, hi });
      return null;
    }
    if (lo & PS) {
      // The MMU would read a huge leaf here: frames beyond the one the scan follows could be in use.
      this.find('ENTRY_PS', `entry ${entryHex(lo, hi)} has the page-size bit`, where, null, false);
    } else if (!(inMorsel ? isInnerFlags(lo & 0xfff) : (lo & 0xfff) === INNER_FLAGS) || (hi & ~HI_PFN_MASK) !== 0) {
      this.find('ENTRY_FLAGS', `entry ${entryHex(lo, hi)} has flags other than P|RW|US${inMorsel ? ' (or P|US, shared)' : ''}`, where, null);
    }
    return pfnOf(lo, hi);
  }

  // --- registries --------------------------------------------------------------------

  /** The table of owned root slot `slot` (checked by the superblock at open; re-checked here for `check`), referenced; null if unusable. */
  private rootTable(slot: number, name: string): number | null {
    const root = this.region.loadRoot(slot);
    const frame = Number(root);
    const where = `superblock root slot ${slot} (${name})`;
    if (root >> 32n !== 0n || !(frame >= this.first && frame < this.region.frameCount)) {
      // Nothing below can be trusted or reached: never reclaim, never guess.
      this.find('ROOT_SLOT', `root slot ${slot} holds ${hex(root)}, not an allocatable frame`, where, null, false);
      return null;
    }
    return this.ref(frame, where, null) ? frame : null;
  }

  /** References an owned root slot's table without walking below it. */
  rootTableOnly(slot: number, name: string): void {
    this.rootTable(slot, name);
  }

  /** Walks the registry rooted in superblock slot `slot`, calling `value` for every leaf entry. */
  private registry(slot: number, name: string, value: (key: number, lo: number, hi: number, table: number, idx: number) => void): void {
    const top = this.rootTable(slot, name);
    if (top !== null) this.registryTree(top, name, value);
  }

  registryTree(top: number, name: string, value: (key: number, lo: number, hi: number, table: number, idx: number) => void): void {
    const walk = (table: number, level: number, base: number): void => {
      this.path.push(table);
      let idx = 0;
      const where = (): string => `${name} table ${table}[${idx}]`; // built only for a finding
      for (; idx < ENTRIES_PER_TABLE; idx++) {
        const lo = this.region.loadLo(table as Frame, idx);
        const hi = this.region.loadHi(table as Frame, idx);
        const key = base + idx * levelKeySpan(level);
        if (level === 1) {
          if (isPresent(lo)) value(key, lo, hi, table, idx);
          else if (lo !== 0 || hi !== 0) this.find('ENTRY_NOT_ZERO', `non-present entry ${entryHex(lo, hi)} is not zero`, where, { table, index: idx, lo, hi });
          continue;
        }
        const child = this.inner(table, idx, lo, hi, where);
        if (child !== null && this.ref(child, where, { table, index: idx, lo, hi })) walk(child, level - 1, key);
      }
      this.path.pop();
    };
    walk(top, registryDepth(this.region.frameCount), 0);
  }

  // --- morsels -----------------------------------------------------------------------

  liveMorsels(): void {
    this.registry(ROOT_SLOT_LIVE_TABLE, 'live table', (key, lo, hi, table, idx) => {
      const where = `live table ${table}[${idx}] (key ${key})`;
      const unregister = { table, index: idx, lo, hi };
      let d: DecodedId;
      try {
        d = decodeIdBits(entryToBigInt(lo, hi));
      } catch (e) {
        this.find('BAD_ID', `value ${entryHex(lo, hi)} is not a morsel ID (${(e as Error).message})`, where, null, false);
        return;
      }
      if (d.rootFrame !== key) this.find('REGISTRY_KEY', `morsel ${hex(d.id)} has root frame ${d.rootFrame}, so decode never finds it`, where, null);
      this.morsels++;
      if (!this.ref(d.rootFrame, where, unregister)) return;
      this.within('morsel', hex(d.id), () => (d.meta ? this.meta(d, where, unregister) : this.subtree(d, `morsel ${hex(d.id)}`)));
    });
  }

  /** A meta morsel: its page must be valid, then its data morsel is reachable through it. */
  private meta(d: DecodedId, where: string, unregister: EntryFix): void {
    const page = d.rootFrame;
    const what = `meta morsel ${hex(d.id)}`;
    if (d.order !== 0) {
      this.find('BAD_META', `${what} has order ${d.order}; meta morsels are order 0`, where, null, false);
      return;
    }
    if (this.region.loadLo(page, META_DATA_ID_ENTRY) === 0 && this.region.loadHi(page, META_DATA_ID_ENTRY) === 0) {
      // Only an interrupted destroy clears the data ID; finishing it (unregister) loses nothing more.
      this.find('META_NO_DATA', `${what} has no data morsel (interrupted destroy)`, where, unregister);
      return;
    }
    this.kinds[page] = KIND_DATA;
    let data: DecodedId;
    let address: number;
    let size: number;
    try {
      const info = readMetaPage(this.region, page);
      data = decodeIdBits(info.dataId);
      address = info.address;
      size = info.sizeBytes;
    } catch (e) {
      this.find('BAD_META', `${what}: ${(e as Error).message}`, `meta page ${page}`, null, false);
      return;
    }
    if (data.meta) {
      this.find('BAD_META', `${what} has a meta morsel as its data morsel`, `meta page ${page}`, null, false);
      return;
    }
    const span = orderBytes(data.order);
    if (!(Number.isSafeInteger(address) && address >= 0 && address % span === 0)) this.find('BAD_META', `${what}: fixed address ${address} is not an order-${data.order}-aligned integer`, `meta page ${page}`, null);
    if (!(Number.isSafeInteger(size) && size > 0 && size <= span)) this.find('BAD_META', `${what}: size ${size} does not fit an order-${data.order} morsel`, `meta page ${page}`, null);
    const dataWhere = `meta page ${page}[${META_DATA_ID_ENTRY}]`;
    if (!this.ref(data.rootFrame, dataWhere, null)) return;
    this.subtree(data, `data morsel ${hex(data.id)} of ${what}`);
  }

  /**
   * A reference from inside a morsel subtree. A write-protected entry may
   * share its child with other write-protected entries (copy-on-write): the
   * first such reference descends, the others only count. A frame that is
   * also referenced by a writable entry is a DUPLICATE (ref() reports it).
   */
  private morselRef(child: number, lo: number, where: Where, fix: EntryFix): boolean {
    const shared = (lo & RW) === 0;
    const seen = shared ? this.sharedRefs.get(child) : undefined;
    if (seen !== undefined && !this.path.includes(child)) {
      this.sharedRefs.set(child, seen + 1);
      return false;
    }
    if (!this.ref(child, where, fix)) return false;
    if (shared) this.sharedRefs.set(child, 1);
    return true;
  }

  /**
   * A 2 MiB leaf (PS entry of a morsel's level-2 table): valid flags, a
   * 2 MiB-aligned block inside the allocatable range; the first reference
   * marks all its frames (a shared leaf counts its references by its first
   * frame, like any shared child). False, reporting nothing, when the entry
   * is no aligned block of allocatable frames: the caller then treats it as
   * any entry with the page-size bit (ENTRY_PS, left for a human, and its
   * one frame still followed, so nothing it may point to counts as lost).
   */
  private hugeLeaf(lo: number, hi: number, where: Where, fix: EntryFix): boolean {
    const base = pfnOf(lo, hi);
    if (base % HUGE_FRAMES !== 0 || !(base >= this.first && base + HUGE_FRAMES <= this.region.frameCount)) return false;
    if (!isHugeLeafFlags(lo & 0xfff) || (hi & ~HI_PFN_MASK) !== 0) this.find('ENTRY_FLAGS', `2 MiB leaf ${entryHex(lo, hi)} has flags other than P|RW|US|PS (or P|US|PS, shared)`, where, null);
    if (!this.morselRef(base, lo, where, fix)) return true;
    this.kinds[base] = KIND_DATA;
    for (let f = base + 1; f < base + HUGE_FRAMES; f++) if (this.ref(f, where, null)) this.kinds[f] = KIND_DATA;
    this.hugeLeaves.push(base);
    return true;
  }

  /** The tables and pages below an already-referenced morsel root. */
  private subtree(d: DecodedId, what: string): void {
    this.roots.set(d.rootFrame, d.order);
    this.kinds[d.rootFrame] = d.order === 0 ? KIND_DATA : KIND_TABLE;
    if (d.order === 0) return;
    const walk = (table: number, level: number): void => {
      this.path.push(table);
      let idx = 0;
      const where = (): string => `${what}: level-${level} table ${table}[${idx}]`; // built only for a finding
      let lazy = false;
      for (; idx < ENTRIES_PER_TABLE; idx++) {
        const lo = this.region.loadLo(table as Frame, idx);
        const hi = this.region.loadHi(table as Frame, idx);
        if ((lo & LAZY_BITS) !== 0) {
          lazy = true;
          this.noteLazyRef(lo, hi);
        }
        // A valid 2 MiB leaf is marked here; a PS entry that cannot be one goes to inner() below (ENTRY_PS) and is followed like any entry.
        if (isLeafEntry(level, lo) && this.hugeLeaf(lo, hi, where, { table, index: idx, lo, hi })) continue;
        const child = this.inner(table, idx, lo, hi, where, true);
        if (child === null || !this.morselRef(child, lo, where, { table, index: idx, lo, hi })) continue;
        this.kinds[child] = level > 1 ? KIND_TABLE : KIND_DATA;
        if (level > 1) walk(child, level - 1);
      }
      if (lazy) this.lazyTables.push(table);
      this.path.pop();
    };
    walk(d.rootFrame, d.order);
  }

  /** A present shared LAZY_REF entry's reference, noted as not counted yet. */
  private noteLazyRef(lo: number, hi: number): void {
    if ((lo & (P | RW | LAZY_REF)) !== (P | LAZY_REF)) return;
    const child = pfnOf(lo, hi);
    this.lazyRefs.set(child, (this.lazyRefs.get(child) ?? 0) + 1);
  }

  // --- address spaces ------------------------------------------------------------------

  /** A space-registry value: the space's root entry, levels in bit 26 of hi. */
  private spaceValue(name: string, key: number, lo: number, hi: number, table: number, idx: number): void {
    const where = `${name} ${table}[${idx}] (key ${key})`;
    const levels = hi & SPACE_LEVELS5 ? 5 : 4;
    if (pfnOf(lo, hi) !== key || (lo & 0xfff) !== INNER_FLAGS || (hi & ~(HI_PFN_MASK | SPACE_LEVELS5)) !== 0) {
      this.find('SPACE_VALUE', `value ${entryHex(lo, hi)} is not a space root entry for frame ${key}`, where, null, false);
      return;
    }
    this.spaces++;
    if (this.ref(key, where, { table, index: idx, lo, hi })) {
      this.kinds[key] = KIND_TABLE;
      this.space(key, levels);
    }
  }

  /**
   * Every user slot's per-process registries: address spaces (with their
   * tables) and usage counts (tables only: values are counts). Live state
   * for `check`; recovery drops it instead. Call after liveMorsels.
   */
  userSlotRegistries(): void {
    this.within('space', null, () => this.slotRegistries());
  }

  private slotRegistries(): void {
    for (let slot = 0; slot < USER_SLOTS; slot++) {
      const fields: [number, string][] = [[SLOT_SPACES_ROOT, 'spaces'], ...SLOT_USAGE_ROOTS.map((f, lane): [number, string] => [f, lane === 0 ? 'usage' : `usage lane ${lane}`])];
      for (const [field, kind] of fields) {
        const frame = this.region.loadSlotRoot(slot, field);
        if (frame === 0) continue;
        const name = `user slot ${slot} ${kind} registry`;
        if (!(frame >= this.first && frame < this.region.frameCount)) {
          this.find('USER_SLOT_ROOT', `holds frame ${frame}, not an allocatable frame`, name, null, false);
          continue;
        }
        if (!this.ref(frame, name, null)) continue;
        this.registryTree(frame, name, kind === 'spaces' ? (key, lo, hi, table, idx) => this.spaceValue(name, key, lo, hi, table, idx) : () => {});
      }
    }
  }

  /** Root slots 2 and 3 (their visitor, or the top table alone), then every other registered visitor. */
  visitors(persistentOnly: boolean): void {
    for (const slot of [ROOT_SLOT_NAMES, ROOT_SLOT_RESERVATIONS]) {
      const v = visitors.find((w) => w.rootSlot === slot);
      const top = this.rootTable(slot, v?.name ?? `root slot ${slot}`);
      if (top !== null && v !== undefined) this.guarded(v, top);
    }
    for (const v of visitors) {
      if (v.rootSlot === undefined && !(persistentOnly && v.perProcess)) this.guarded(v, null);
    }
  }

  /** A visitor that throws is a bug in it; the scan reports it and never trusts reachability then. */
  private guarded(v: ReachVisitor, top: number | null): void {
    try {
      this.within('other', null, () => v.visit(this, top));
    } catch (e) {
      this.find('VISITOR', `${v.name} failed: ${(e as Error).message}`, v.name, null, false);
    }
  }

  private space(root: number, levels: number): void {
    const walk = (table: number, level: number): void => {
      this.path.push(table);
      let idx = 0;
      const where = (): string => `space ${root}: level-${level} table ${table}[${idx}]`; // built only for a finding
      for (; idx < ENTRIES_PER_TABLE; idx++) {
        const lo = this.region.loadLo(table as Frame, idx);
        const hi = this.region.loadHi(table as Frame, idx);
        const fix = { table, index: idx, lo, hi };
        if (isPresent(lo) && (hi & HI_MORSEL_TOP || level === 1)) {
          // A mapping: rights flags vary; its target must be a live morsel of the level's order.
          const target = pfnOf(lo, hi);
          if (!(hi & HI_MORSEL_TOP) || this.roots.get(target) !== level - 1) {
            this.find('SPACE_MAPPING', `maps frame ${target}, not the root of a live order-${level - 1} morsel`, where, fix);
          }
          continue;
        }
        const child = this.inner(table, idx, lo, hi, where);
        if (child !== null && this.ref(child, where, fix)) {
          this.kinds[child] = KIND_TABLE;
          walk(child, level - 1);
        }
      }
      this.path.pop();
    };
    walk(root, levels);
  }

  /**
   * Root slot 1: the reference-count table's header frame and its storage
   * (src/alloc/refcount). Storage frames are marked STORAGE (2) in `used`:
   * referenced for `check`, but recovery and repair rebuild the table from
   * the live trees (Cow.rebuildCounts), so they free the old storage.
   */
  refCounts(): void {
    const top = this.rootTable(ROOT_SLOT_REFCOUNTS, 'reference counts');
    if (top === null) return;
    this.within('other', null, () => {
      try {
        const rebuilt = (frame: number): void => {
          if (this.ref(frame, `reference-count storage of header ${top}`, null)) this.used[frame] = USED_REBUILT;
        };
        forEachRefCountStorageFrame(this.region, top as Frame, rebuilt);
        forEachLazyTable(this.region, new FrameAllocator(this.region), top as Frame, rebuilt); // src/morsel/lazy.ts: lives and dies with the counts
      } catch (e) {
        this.find('REFCOUNT_TABLE', `the reference-count table cannot be read: ${(e as Error).message}`, `root slot ${ROOT_SLOT_REFCOUNTS}`, null);
      }
    });
  }

  /** Root slots past the owned ones are reserved and must be zero. */
  otherRoots(): void {
    for (let slot = OWNED_ROOT_SLOTS; slot < ROOT_SLOTS; slot++) {
      const v = this.region.loadRoot(slot);
      if (v !== 0n) this.find('ROOT_SLOT', `reserved root slot ${slot} holds ${hex(v)}`, `superblock root slot ${slot}`, null, false);
    }
  }
}

const entryHex = (lo: number, hi: number): string => hex(entryToBigInt(lo, hi));

/** Scans every structure of `region`; `spaces`: also walk registered address spaces. Never throws on bad data, never writes. */
export function scanRegion(region: Region, opts: { spaces: boolean }): Scan {
  const s = new Scanner(region);
  s.liveMorsels();
  if (opts.spaces) {
    s.userSlotRegistries();
  }
  s.refCounts();
  s.visitors(!opts.spaces);
  s.otherRoots();
  const shared = new Map<number, number>();
  for (const [frame, refs] of s.sharedRefs) if (refs > 1) shared.set(frame, refs);
  return { used: s.used, shared, lazyRefs: s.lazyRefs, lazyTables: s.lazyTables, kinds: s.kinds, hugeLeaves: s.hugeLeaves, frames: s.frames, morsels: s.morsels, spaces: s.spaces, findings: s.findings };
}

/** The allocator children (src/alloc/llfree.ts) that are the order-9 blocks of 2 MiB leaves `leaves` (first frames). */
export function hugeChildrenOf(leaves: readonly number[]): number[] {
  assert(HUGE_FRAMES === CHILD_FRAMES, 'a 2 MiB leaf is exactly one allocator child');
  return leaves.map((f) => f >>> CHILD_SHIFT);
}

/** `used` value of a frame referenced only by a structure recovery rebuilds from scratch (the reference-count table's storage). */
export const USED_REBUILT = 2;

export interface Reachable {
  /** 1 for every reachable frame (USED_REBUILT: referenced, but freed by recovery's rebuild) */
  used: Uint8Array;
  /** copy-on-write frames with 2 or more references -> references (the true reference counts) */
  shared: Map<number, number>;
  /** morsel tables holding lazy bits (cleared once the counts are rebuilt) */
  lazyTables: number[];
  /** first frames of live 2 MiB leaves: rebuilt as allocated order-9 blocks */
  hugeLeaves: number[];
  morsels: number;
  frames: number;
}

/**
 * Marks every frame of the live table and of every live morsel (and a meta
 * morsel's data morsel) for crash recovery. Address spaces are not walked:
 * recovery drops them. Throws ECORRUPT, naming what and where, if any
 * invariant is violated: recovery then changes nothing (`morsel check
 * --repair` is the tool for a damaged region).
 */
export function collectReachable(morsels: Morsels): Reachable {
  const scan = scanRegion(morsels.region, { spaces: false });
  if (scan.findings.length > 0) {
    const p = scan.findings[0].problem;
    const more = scan.findings.length > 1 ? ` (and ${scan.findings.length - 1} more problem(s))` : '';
    throw new MorselError('ECORRUPT', `${p.where}: ${p.what}${more}; run \`morsel check --region <file>\` (--repair to fix)`);
  }
  return { used: scan.used, shared: scan.shared, lazyTables: scan.lazyTables, hugeLeaves: scan.hugeLeaves, morsels: scan.morsels, frames: scan.frames };
}

/**
 * Recovery and repair of a crashed region (exclusive: every other user is
 * dead, and this process has not used the region yet): the per-process
 * registries of every user slot (address spaces, usage counts) are dropped,
 * as recovery drops spaces. Their fields are cleared before the allocator
 * is rebuilt from reachability (which does not reach them), so no field is
 * left pointing at a freed frame. Returns how many fields it cleared.
 */
export function dropSlotRoots(region: Region): number {
  let cleared = 0;
  for (let slot = 0; slot < USER_SLOTS; slot++) {
    for (const field of [SLOT_SPACES_ROOT, ...SLOT_USAGE_ROOTS]) {
      const frame = region.loadSlotRoot(slot, field);
      if (frame !== 0 && region.casSlotRoot(slot, field, frame, 0)) cleared++;
    }
  }
  return cleared;
}
