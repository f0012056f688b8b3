/**
 * The namespace: a persistent, crash-consistent hierarchy of names
 * (`/models/llama`) stored in the region, rooted in superblock root slot
 * ROOT_SLOT_NAMES. Lookups are lock-free (atomic loads and re-checks only)
 * and safe for concurrent threads and processes; every update has a
 * single-CAS commit point, and no lock is ever held (so none survives a crash).
 *
 * ## Layout (little-endian int32 words)
 *
 * Header frame (in root slot 2): magic, log2 of the hash-table capacity (fixed
 * at creation: the next power of two >= 4 x frames, clamped to 2^12..2^22, so
 * there is never a resize), the count of non-empty slots (load bound), the
 * root directory's record (0 = the default root: uid 0, gid 0, mode 0o755) and
 * its directory object, the number of record pages, a free-page hint, the
 * creation time, the change epoch (changes begun, changes ended: see
 * changing()), the count of removed names that keep their key, the
 * directory epoch (the same pair, for changes that can alter a directory:
 * resolveDir); then two inline radix tops: 256 words for the bucket tables
 * and 512 for the record pages. Everything below is built lazily by the
 * lock-free install pattern (allocate, zero, CAS into a zero word, free on
 * loss: `installTable`), and no namespace frame is ever freed, so a frame
 * number, once read, stays valid: per-instance caches of those frame numbers
 * (leafFrames, pageFrames) are safe.
 *
 *  - Records: 512 bytes, 8 per record page, numbered from 1 (page*8+cell+1).
 *    Record pages sit in mid tables of 512 (frame, bitmap) word pairs: bit i
 *    of the bitmap claims cell i (claimed by CAS before the record is
 *    written). A record is immutable while published: it is written while its
 *    sequence word (word 0) is even, published by making it odd, and freed by
 *    making it even again, then clearing its bit. Kinds: morsel name, directory
 *    name, and directory object (the identity of a directory and its child
 *    count word; a directory's name record points at it, so renaming or
 *    chmod-ing a directory, which replaces the name record, keeps its
 *    children).
 *  - One hash table keyed by (parent directory object, its sequence, name
 *    bytes): open addressing with linear probing over 64-bit slots in 4 KiB
 *    leaf tables (512 slots) under mid tables (1024 leaves). Slot hi word = a
 *    28-bit hash tag (never 0, fixed once the slot is filled); slot lo word =
 *    record number | 6 bits of its sequence (against ABA) | state. Empty =
 *    (0, 0). A slot is filled once by a 64-bit CAS from empty and never becomes
 *    empty again (only collectGarbage rebuilds the table), so every slot keeps
 *    one name for its whole life, and all later changes are 32-bit CASes of
 *    the lo word:
 *        LIVE(r)     the name maps to record r
 *        MOVING(r')  the name is being renamed; r' is the new record, still
 *                    showing the old one (r'.fromRec) until the commit
 *        PENDING(r') the new name of a rename: visible iff the old slot
 *                    (r'.fromSlot) holds TOMB(r'), i.e. the rename committed
 *        TOMB(r)     removed (tombstone); r is not read again
 *        GONE(r)     removed, but the slot keeps its key: r stays published
 *                    (the name's key only) until the same name is created
 *                    again in this slot (revival) or collectGarbage runs
 *
 * ## Lookups (lock-free, O(path components))
 * Per component: hash the name, probe (tag filter), read the record, compare
 * parent and name, re-check the record's sequence and the slot's lo word.
 * A record is freed only after it is unpublished, and every reuse changes its
 * sequence, so a reader racing a remove/update/rename sees the old or the new
 * state, never a torn or reused record (it retries, bounded). Plain loads
 * between two sequence loads are ordered on x86-64 (TSO), the only target.
 *
 * ## Commit points (one CAS each)
 *  - create: empty slot -> LIVE(r). Before it: the parent's child count is
 *    raised and r is claimed and written (a crash leaves an unreachable record
 *    and an over-count, both fixed by collectGarbage).
 *  - unlink: LIVE(r) -> GONE(r) (TOMB(r) once capacity / KEPT_DEN GONE slots exist);
 *    then the parent's count is lowered (r freed after TOMB).
 *  - create or rename of a name whose slot is GONE(r): GONE(r) -> LIVE(r2)
 *    (or PENDING), then r freed. Without revival, every create of a name
 *    removed before took a new slot and lengthened its chain: create+unlink
 *    of one name slowed down linearly and filled the table (ENOSPC).
 *  - rmdir: the directory object's count word 0 -> DYING (refused, ENOTEMPTY,
 *    unless the count is 0; a create raises the count only if not DYING, so
 *    rmdir and create in that directory cannot both succeed), then
 *    LIVE -> TOMB (the commit). Roll-forward: a DYING directory is removed by
 *    the next rmdir of it or by collectGarbage; creates in it fail (ENOENT).
 *  - update: LIVE(r) -> LIVE(r2) with r2 a full copy carrying the new
 *    attributes; then r is freed. `change` may run more than once (retries).
 *  - rename: LIVE(r) -> MOVING(r') marks the old name (still visible as r);
 *    PENDING(r') is inserted under the new name (invisible); the commit is
 *    MOVING(r') -> TOMB(r') on the old slot: from then on the old name is gone
 *    and the new one visible, atomically. Any inserter that finds an undecided
 *    PENDING for its name commits it (helping); an update, remove or rename
 *    of the old name that finds MOVING aborts it (MOVING(r') -> LIVE(r)), and
 *    the renamer retries. The committer frees r and lowers the old parent's
 *    count; PENDING -> LIVE is cleanup anyone may do. Roll-forward after a
 *    crash (collectGarbage): MOVING with its PENDING inserted commits, without
 *    it rolls back.
 *
 * Uniqueness: an insert CASes only the first empty slot of the chain after
 * comparing every visible entry before it; slots never become empty, so two
 * inserts of one name cannot both succeed. A slot's key never changes
 * (GONE and revival keep it; TOMB has none for good), and a name gets a
 * new slot only when its chain holds no slot keyed by it, so a name has at
 * most one keyed slot: inserts of a GONE name all CAS that slot. Tombstones stay until
 * collectGarbage (which rebuilds the table when they pass a quarter of the
 * used slots): the used-slot count (live + tombstones) is bounded by 3/4 of
 * the capacity (ENOSPC beyond), which keeps probe chains short.
 *
 * ## What a process that dies mid-operation leaves, and who clears it
 *  - MOVING: read through by lookups (old name visible); aborted by the next
 *    update, remove or rename of the old name; settled by collectGarbage.
 *  - undecided PENDING: invisible; committed by the next insert of that name
 *    (create or rename to it); settled by collectGarbage.
 *  - DYING directory: creates in it fail (ENOENT); the next rmdir of it or
 *    collectGarbage removes it.
 *  - a claimed but unpublished record, a child count raised for a create that
 *    never committed (rmdir then says ENOTEMPTY), a table frame allocated but
 *    not linked: only recovery clears them (collectGarbage, and the allocator
 *    rebuilt from forEachFrame), because a live process's in-flight create
 *    looks the same.
 *
 * ## Recovery (src/recovery wires it)
 * With the region held alone: mark every frame forEachFrame visits as used
 * when rebuilding the allocator, then call collectGarbage() (it frees records
 * inside record pages, never frames). forEachFrame only reads, so `check` may
 * use it on a region in use.
 *
 * ## Costs
 * 512 bytes of record per name (a directory also has a directory object);
 * bucket tables at most 8 bytes x 4 slots = 32 bytes per region frame (0.8%),
 * populated as names spread over the table (a few hundred names already touch
 * that many 4 KiB leaves); list() scans the table, O(capacity). One Namespace
 * per thread: an instance keeps scratch state (parsers, last hit) and is not
 * re-entrant across threads; `update`'s callback may call back into it.
 *
 * # Warning
 * Two concurrent directory renames that would move each into the other
 * (rename /a /b/x and rename /b /a/y at once) are not detected: each checks
 * its own target path before the other commits. Both succeed and leave a
 * cycle unreachable from '/'; collectGarbage removes unreachable names.
 *
 * Limits: 2^21 records (names + directories, each directory counts twice),
 * 2^24 - 1 entries per directory, 3/4 of the table capacity in used slots
 * (10^6 names need a table of 2^21 slots: a region of at least 2 GiB).
 */
import { MorselError, assert, check, isMorselError } from '../errors.js';
import type { FrameAllocator } from '../alloc/llfree.js';
import type { Region } from '../physical/region.js';
import { ROOT_SLOT_NAMES } from '../physical/superblock.js';
import { crashPoint } from '../crash-point.js';
import type { Frame } from '../units.js';
import { PathParser } from './path.js';
import { entryToBigInt } from '../paging/entry.js';

export type NodeKind = 'dir' | 'morsel';

export interface NameRecord {
  kind: NodeKind;
  /** raw morsel ID (entry bits) and its generation; 0n / 0 for a directory */
  id: bigint;
  generation: number;
  /** logical byte length (0 for directories) */
  sizeBytes: number;
  uid: number;
  gid: number;
  /** permission bits 0o7777 */
  mode: number;
  ctimeMs: number;
  mtimeMs: number;
  fixedAddress: number | null;
}

/**
 * A directory resolved by resolveDir: its path, the records from the root to
 * it (for search and write permission checks) and its directory object
 * (0: the root's, not created yet). Immutable; current while the directory
 * epoch stands (see resolveDir).
 */
export interface DirRef {
  readonly path: string;
  readonly recs: readonly NameRecord[];
  readonly obj: number;
  readonly objSeq: number;
}

/** The directory object a running rmdir marked DYING (0: none). */
interface DyingMark {
  obj: number;
  objSeq: number;
}

/** What collectGarbage found and fixed. */
export interface GarbageReport {
  freedRecords: number;
  renamesCommitted: number;
  renamesRolledBack: number;
  dyingRemoved: number;
  orphansRemoved: number;
  countsFixed: number;
  tombstonesDropped: number;
  /** GONE slots made keyless (their records freed) */
  keysDropped: number;
}

// --- header ------------------------------------------------------------------
const HEADER_MAGIC = 0x314d534e; // "NSM1"
const H_MAGIC = 0;
const H_CAP_LOG2 = 1;
const H_USED_SLOTS = 2;
const H_ROOT_REC = 3;
const H_ROOT_DIR = 4;
const H_PAGES = 5;
const H_FREE_HINT = 6;
const H_CTIME = 8; // float64
const H_EPOCH = 10; // changes begun (see changing())
const H_EPOCH_DONE = 11; // changes ended
const H_KEPT = 12; // GONE slots: removed names whose slot keeps its key (bounded, see KEPT_DEN)
const H_DIR_EPOCH = 13; // changes begun that can alter a directory's resolution or rights (see changing())
const H_DIR_EPOCH_DONE = 14; // such changes ended
/** Directory resolutions a Namespace instance caches (resolveDir), dropped whole when full. */
const DIR_CACHE_ENTRIES = 4096;
const H_BUCKET_TOP = 256;
const BUCKET_TOP_ENTRIES = 256;
const H_PAGE_TOP = 512;
const PAGE_TOP_ENTRIES = 512;
const MIN_CAP_LOG2 = 12;
const MAX_CAP_LOG2 = 22;
const SLOTS_PER_FRAME_OF_REGION = 4;
const LOAD_NUM = 3;
const LOAD_DEN = 4;

// --- bucket tables -------------------------------------------------------------
const LEAF_SHIFT = 9; // 512 slots of 8 bytes per leaf
const LEAF_MASK = (1 << LEAF_SHIFT) - 1;
const MID_SHIFT = 10; // 1024 leaf frames per mid table
const MID_MASK = (1 << MID_SHIFT) - 1;

// --- record pages --------------------------------------------------------------
const RECORD_WORDS = 128;
const RECORDS_PER_PAGE = 8;
const PAGE_SHIFT = 3;
const FULL_PAGE = 0xff;
const PAGES_PER_MID = 512; // (frame, bitmap) pairs
const PAGE_MID_SHIFT = 9;
const MAX_PAGES = PAGE_TOP_ENTRIES * PAGES_PER_MID;
const MAX_RECORDS = MAX_PAGES * RECORDS_PER_PAGE;
/** Pages an allocation scans (from its hint) before it grows a new page. */
const SCAN_PAGES = 64;

// --- record words --------------------------------------------------------------
const R_SEQ = 0;
const R_KIND = 1;
const R_COUNT = 2; // directory objects: the count word
const R_PARENT = 3;
const R_PARENT_SEQ = 4;
const R_DIR = 5; // directory names: their directory object and its sequence
const R_DIR_SEQ = 6;
const R_FROM_REC = 7; // rename: the old record and the old slot
const R_FROM_SLOT = 8;
const R_ID_LO = 9;
const R_ID_HI = 10;
const R_GEN = 11;
const R_UID = 12;
const R_GID = 13;
const R_MODE = 14;
const R_NAME_LEN = 15;
const R_SIZE = 16; // float64
const R_CTIME = 18; // float64
const R_MTIME = 20; // float64
const R_FIXED = 22; // float64
const R_HAS_FIXED = 24;
/** The name right after the words: a lookup of a name up to 28 bytes reads one 128-byte line pair. */
const NAME_BYTE = 100;
const KIND_MORSEL = 1;
const KIND_DIR = 2;
const KIND_DIROBJ = 3;

// --- directory object count word -------------------------------------------------
const COUNT_MASK = (1 << 24) - 1;
const DYING = 1 << 24;
const INC_SHIFT = 25; // 6 bits of the object's sequence: an undo cannot hit a reused object
const INC_MASK = 0x3f;

// --- slot lo word ----------------------------------------------------------------
const REC_MASK = (1 << 22) - 1;
const ABA_SHIFT = 22;
const ABA_MASK = 0x3f;
const STATE_SHIFT = 28;
const LIVE = 0;
const MOVING = 1;
const PENDING = 2;
const TOMB = 3;
const GONE = 4;
const STATE_BITS = 7 << STATE_SHIFT;
/** At most capacity / KEPT_DEN removed names keep their key (and their 512-byte record) in a GONE slot. */
const KEPT_DEN = 16;
const TAG_MASK = 0x0fffffff;
const TAG_SET = 0x10000000;

// --- retry bounds ------------------------------------------------------------------
/** Re-reads of one slot racing writers before a lookup gives up (EBUSY). */
const MAX_READ_RETRIES = 100_000;
/** Attempts of one update operation racing others before it gives up (EBUSY). */
const MAX_OP_RETRIES = 1000;

/** removeOnce: the name names another incarnation than the one expected (removeIf). */
const NOT_EXPECTED = Symbol('not expected');

// match results
const NOMATCH = 0;
const MATCH = 1;
const RETRY = 2;

const DEFAULT_ROOT_MODE = 0o755;
const MODE_MASK = 0o7777;
const U32 = 2 ** 32;
const U64_MAX = (1n << 64n) - 1n;

const f64 = new Float64Array(1);
const f64w = new Int32Array(f64.buffer);
const decoder = new TextDecoder('utf-8', { fatal: false });

function putF64(w: Int32Array, i: number, v: number): void {
  f64[0] = v;
  w[i] = f64w[0];
  w[i + 1] = f64w[1];
}

function getF64(w: Int32Array, i: number): number {
  f64w[0] = w[i];
  f64w[1] = w[i + 1];
  return f64[0];
}

function fmix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** Hash of (directory object d, its sequence sd, name bytes[start, end)). */
function hashName(d: number, sd: number, bytes: Uint8Array, start: number, end: number): number {
  let h = Math.imul(d ^ 0x9e3779b9, 0x85ebca6b) ^ Math.imul(sd, 0xc2b2ae35) ^ 0x811c9dc5;
  for (let i = start; i < end; i++) h = Math.imul(h ^ bytes[i], 0x01000193);
  return fmix32(h);
}

const tagOf = (h: number): number => (fmix32(h ^ 0x5bd1e995) & TAG_MASK) | TAG_SET;
const enc = (rec: number, seq: number, state: number): number => rec | (((seq >>> 1) & ABA_MASK) << ABA_SHIFT) | (state << STATE_SHIFT);
const stateOf = (lo: number): number => lo >>> STATE_SHIFT;
/** A removed name's slot: TOMB (keyless) or GONE (keeps its key). Lookups skip both. */
const isDead = (lo: number): boolean => stateOf(lo) >= TOMB;
/** Slot word `lo` with its state replaced (record and sequence bits kept). */
const withState = (lo: number, state: number): number => (lo & ~STATE_BITS) | (state << STATE_SHIFT);
const recOf = (lo: number): number => lo & REC_MASK;

/** Whether `path`, whose last '/' is at `cut`, names an entry of the directory `dirPath` (no slice). */
function isEntryOf(path: string, cut: number, dirPath: string): boolean {
  return cut <= 0 ? dirPath === '/' : cut === dirPath.length && path.startsWith(dirPath);
}

function busy(what: string): never {
  throw new MorselError('EBUSY', `namespace ${what}: too much contention, retry`);
}

function corrupt(what: string): never {
  throw new MorselError('ECORRUPT', `namespace: ${what}`);
}

const u32 = (v: unknown): boolean => Number.isInteger(v) && (v as number) >= 0 && (v as number) < U32;

/** Validates a record handed in by a caller (EINVAL). */
function validateRecord(rec: NameRecord): void {
  check(typeof rec === 'object' && rec !== null, 'EINVAL', 'name record must be an object');
  check(rec.kind === 'dir' || rec.kind === 'morsel', 'EINVAL', () => `kind must be 'dir' or 'morsel', got ${String(rec.kind)}`);
  check(typeof rec.id === 'bigint' && rec.id >= 0n && rec.id <= U64_MAX, 'EINVAL', 'id must be a bigint in [0, 2^64)');
  check(u32(rec.generation) && u32(rec.uid) && u32(rec.gid), 'EINVAL', 'generation, uid and gid must be integers in [0, 2^32)');
  check(Number.isInteger(rec.mode) && rec.mode >= 0 && rec.mode <= MODE_MASK, 'EINVAL', () => `mode ${rec.mode} outside 0..0o7777`);
  check(Number.isSafeInteger(rec.sizeBytes) && rec.sizeBytes >= 0, 'EINVAL', () => `sizeBytes ${rec.sizeBytes} is not a non-negative safe integer`);
  check(Number.isFinite(rec.ctimeMs) && Number.isFinite(rec.mtimeMs), 'EINVAL', 'times must be finite numbers');
  check(rec.fixedAddress === null || (Number.isSafeInteger(rec.fixedAddress) && rec.fixedAddress >= 0), 'EINVAL', 'fixedAddress must be null or a non-negative safe integer');
  if (rec.kind === 'dir') {
    check(rec.id === 0n && rec.generation === 0 && rec.sizeBytes === 0 && rec.fixedAddress === null, 'EINVAL', 'a directory has id 0n, generation 0, size 0 and no fixed address');
  }
}

export class Namespace {
  private readonly p1 = new PathParser();
  private readonly p2 = new PathParser();
  /** header frame, 0 until the namespace exists (never changes once set) */
  private hdr = 0;
  private capMask = 0;
  private limitSlots = 0;
  /** frame of each bucket leaf / record page, 0 = not looked up yet */
  private leafFrames = new Int32Array(0);
  private readonly pageFrames: Int32Array;
  private pageHint = 0;
  /** set by base(): the window holding the record */
  private w!: Int32Array;
  /** set by slotIndex(): the window holding the slot */
  private sw!: Int32Array;
  /** set by find()/insert() on a hit: slot, its lo word, the visible record and its sequence */
  private hitSlot = -1;
  private hitLo = 0;
  private hitRec = 0;
  private hitSeq = 0;
  /** The last insert() revived a GONE slot (took no empty slot). */
  private revived = false;
  /** set by find(..., noteGone): the slot keyed by the name, found GONE (-1: none), and its lo word then */
  private goneSlot = -1;
  private goneLo = 0;
  /** changing() nesting depth, and whether the running change has begun (bumped H_EPOCH) */
  private changeDepth = 0;
  private changeBegun = false;
  /** whether the running change can alter directories (changing()'s `dirs`), and whether it bumped H_DIR_EPOCH */
  private changeDirs = false;
  private dirChangeBegun = false;
  /**
   * The last lookupIn's result and where it was found, used by a removeIf
   * handed that very record object (`seen`: the same operation) instead of
   * a second probe, then dropped. # Warning: it is a lookup from a moment
   * ago, like any walk before a commit: removeOnce re-validates the
   * record's sequence and its CAS expects the slot word seen then, so a
   * change in between fails the CAS and the retry probes afresh.
   */
  private found: { dir: DirRef; rec: NameRecord; slot: number; lo: number; recNo: number; seq: number; snapDir: number; snapDirSeq: number } | null = null;
  /** resolveDir's cache: directory path -> resolution, all filled under directory epoch dirCacheEpoch */
  private readonly dirCache = new Map<string, DirRef>();
  /** resolveParent's last answer (an entry of dirCache, under the same epoch) */
  private lastParent: DirRef | null = null;
  private dirCacheEpoch = -1;
  /** the header frame's int32 window and the index of its word 0 (set with hdr) */
  private hw: Int32Array | null = null;
  private hi = 0;
  /** set by snapshot()/walk(): the directory object of the last directory record read */
  private snapDir = 0;
  private snapDirSeq = 0;

  constructor(
    private readonly region: Region,
    private readonly alloc: FrameAllocator,
  ) {
    this.pageFrames = new Int32Array(Math.min(MAX_PAGES, region.frameCount));
  }

  // --- public API --------------------------------------------------------------

  /** Records of every component, root first. ENOENT, ENOTDIR, EINVAL, ENAMETOOLONG. */
  resolve(path: string): NameRecord[] {
    const out: NameRecord[] = [];
    this.walk(this.p1, this.p1.parse(path), out, 0);
    return out;
  }

  /** The record `path` names. */
  lookup(path: string): NameRecord {
    return this.walk(this.p1, this.p1.parse(path), null, 0);
  }

  /**
   * The directory `path` names (ENOENT, ENOTDIR), cached per instance like
   * the kernel's dcache: a hit is returned while the directory epoch (the
   * changes that can alter a directory's resolution or rights: rmdir,
   * rename, update, collectGarbage, but not a morsel name's removal nor any
   * create) has not moved since the walk that filled it, which makes it
   * exactly as current as a fresh walk (the argument at changing(), with the
   * directory epoch's words). One atomic load and a map lookup on a hit.
   */
  resolveDir(path: string): DirRef {
    const epoch = this.headerLoad(H_DIR_EPOCH);
    if (epoch !== this.dirCacheEpoch) {
      this.dirCache.clear();
      this.lastParent = null;
      this.dirCacheEpoch = epoch;
    } else {
      const hit = this.dirCache.get(path);
      if (hit !== undefined) return hit;
    }
    const settled = this.headerLoad(H_DIR_EPOCH_DONE) === epoch; // read BEFORE the walk
    const recs = this.resolve(path);
    check(recs[recs.length - 1].kind === 'dir', 'ENOTDIR', () => `${path} is not a directory`);
    const ref: DirRef = { path, recs, obj: this.snapDir, objSeq: this.snapDirSeq };
    if (settled && ref.obj !== 0) {
      if (this.dirCache.size >= DIR_CACHE_ENTRIES) {
        this.dirCache.clear();
        this.lastParent = null;
      }
      this.dirCache.set(path, ref);
    }
    return ref;
  }

  /**
   * resolveDir of the directory part of `path` (before its last '/', at
   * `cut`; '/' when cut <= 0). The last answer is kept: the next entry of
   * the same directory, while the directory epoch stands, costs a compare
   * (no slice, no map lookup).
   */
  resolveParent(path: string, cut: number): DirRef {
    const last = this.lastParent;
    if (last !== null && this.headerLoad(H_DIR_EPOCH) === this.dirCacheEpoch && isEntryOf(path, cut, last.path)) {
      return last;
    }
    const ref = this.resolveDir(cut <= 0 ? '/' : path.slice(0, cut));
    this.lastParent = this.dirCache.get(ref.path) === ref ? ref : null; // kept only as long as the cache keeps it
    return ref;
  }

  /**
   * The record `path` names, its directory `dir` already resolved
   * (resolveDir of its parent). Remembers where it found it for a removeIf
   * of it in the same operation (see `found`).
   */
  lookupIn(dir: DirRef, path: string): NameRecord {
    const n = this.parseIn(dir, path);
    if (dir.obj === 0) return this.walk(this.p1, n, null, 0);
    const rec = this.component(dir.obj, dir.objSeq, this.p1, n - 1);
    this.found = { dir, rec, slot: this.hitSlot, lo: this.hitLo, recNo: this.hitRec, seq: this.hitSeq, snapDir: this.snapDir, snapDirSeq: this.snapDirSeq };
    return rec;
  }

  /**
   * Whether `path`, an entry of the resolved directory `dir`, names anything
   * now: lookupIn's answer without the throw of a missing name (~20 us). A
   * hint only: the name can be taken or freed right after.
   */
  hasEntry(dir: DirRef, path: string): boolean {
    const n = this.parseIn(dir, path);
    if (dir.obj === 0) {
      try {
        this.walk(this.p1, n, null, 0); // as lookupIn: the directory had no object when resolved
        return true;
      } catch (e) {
        if (isMorselError(e, 'ENOENT')) return false;
        throw e;
      }
    }
    return this.find(dir.obj, dir.objSeq, this.p1.bytes, this.p1.starts[n - 1], this.p1.ends[n - 1], false) >= 0;
  }

  /** Parses `path` into p1, asserting that it names an entry of `dir`. Returns the component count. */
  private parseIn(dir: DirRef, path: string): number {
    const n = this.p1.parse(path);
    assert(n > 0 && isEntryOf(path, path.lastIndexOf('/'), dir.path), 'an entry of the directory it is resolved in');
    return n;
  }

  /** Header word `word` (an epoch counter), one atomic load; 0 before the namespace exists. */
  private headerLoad(word: number): number {
    if (this.hw === null && this.header(false) === 0) return 0;
    return Atomics.load(this.hw!, this.hi + word);
  }

  /**
   * The change epoch: how many changes that can alter an existing
   * resolution (remove, rename, update, collectGarbage) have begun,
   * region-wide (0 before the namespace exists). Creates do not count: they
   * only add names. One atomic load.
   */
  changeEpoch(): number {
    return this.headerLoad(H_EPOCH);
  }

  /**
   * The change epoch if no change is in flight (every change begun has
   * ended), else null. A lookup that reads a non-null epoch E BEFORE it
   * walks, and whose result is then used only while changeEpoch() is still
   * E, is as current as a fresh walk at the time of that use (proof at
   * changing()).
   */
  settledEpoch(): number | null {
    const begun = this.headerLoad(H_EPOCH);
    return this.headerLoad(H_EPOCH_DONE) === begun ? begun : null;
  }

  /**
   * Runs a change that can alter an existing resolution. Its first commit
   * step calls beginChange() (H_EPOCH += 1, BEFORE the CAS that can make the
   * change visible); when it returns or throws after that, H_EPOCH_DONE += 1.
   * A change refused before any commit step (ENOENT, EEXIST, EACCES...)
   * changes no byte. Nests (update's callback may call back in). `dirs`:
   * the change can alter a directory's resolution or rights, so it counts
   * in the directory epoch too (H_DIR_EPOCH / H_DIR_EPOCH_DONE, the same
   * pair for resolveDir's cache); only a morsel name's removal passes false.
   *
   * # Warning: why a cached lookup is never stale (per-process caches,
   * Names' lookup cache). A cache entry is filled by a walk that read
   * settledEpoch() = E (not null) at t0 before walking, and used at tu
   * only if changeEpoch() = E at tu. The begin count is monotonic, so no
   * change began in (t0, tu). At t0 the ended count equalled the begun
   * count, so every change begun before t0 had also ended (ends follow
   * their own begins, and none began in between), i.e. committed before
   * the walk. So no change commits in (t0, tu) and every earlier one is
   * seen by the walk: the entry equals a walk at tu (linearizable; atomics
   * are sequentially consistent). A change racing the use begins after tu:
   * the use is ordered before it, as a walk just before it would be.
   * A process that dies inside a change leaves ended < begun: lookups then
   * stop filling caches (correct, slower) until recovery's collectGarbage
   * settles the epoch. The counts wrap at 2^32: a stale hit needs exactly
   * 2^32 changes between a fill and a use.
   */
  private changing<T>(op: () => T, dirs = true): T {
    const outer = this.changeDepth++ === 0;
    const dirsBefore = this.changeDirs;
    this.changeDirs = outer ? dirs : dirsBefore || dirs;
    try {
      return op();
    } finally {
      this.changeDirs = dirsBefore;
      if (--this.changeDepth === 0) this.endChange();
    }
  }

  /** The end of the outermost change: counts what it began as ended. */
  private endChange(): void {
    this.changeDirs = false;
    if (this.dirChangeBegun) {
      this.dirChangeBegun = false;
      const { w, i } = this.headerWord(H_DIR_EPOCH_DONE);
      Atomics.add(w, i, 1);
    }
    if (this.changeBegun) {
      this.changeBegun = false;
      const { w, i } = this.headerWord(H_EPOCH_DONE);
      Atomics.add(w, i, 1);
    }
  }

  /**
   * Inside changing(), before a CAS that may make the change visible: counts
   * the change as begun (once), in the directory epoch too when it can alter
   * directories (a nested change that can counts itself when it begins).
   */
  private beginChange(): void {
    assert(this.changeDepth > 0, 'a change begins inside changing()');
    if (this.changeDirs && !this.dirChangeBegun) {
      const { w, i } = this.headerWord(H_DIR_EPOCH);
      Atomics.add(w, i, 1);
      this.dirChangeBegun = true;
    }
    if (this.changeBegun) return;
    const { w, i } = this.headerWord(H_EPOCH);
    Atomics.add(w, i, 1);
    this.changeBegun = true;
  }

  /**
   * Creates a morsel name or a directory. EEXIST, ENOENT (parent), ENOTDIR.
   * `parent`: its directory, already resolved (resolveDir). Commit: empty slot -> LIVE.
   */
  create(path: string, rec: NameRecord, parent?: DirRef): void {
    validateRecord(rec);
    const p = this.p1;
    let n: number;
    if (parent !== undefined && parent.obj !== 0) {
      n = this.parseIn(parent, path);
      this.snapDir = parent.obj;
      this.snapDirSeq = parent.objSeq;
    } else {
      n = p.parse(path);
      check(n > 0, 'EEXIST', 'the root directory exists');
      const dir = this.walk(p, n - 1, null, 0);
      check(dir.kind === 'dir', 'ENOTDIR', () => `${prefix(p, n - 1)} is not a directory`);
    }
    let d = this.snapDir;
    let sd = this.snapDirSeq;
    const s = p.starts[n - 1];
    const e = p.ends[n - 1];
    check(d === 0 || this.find(d, sd, p.bytes, s, e, false, true) < 0, 'EEXIST', () => `${prefix(p, n)} exists`); // before any byte changes
    const gone = d === 0 ? -1 : this.goneSlot;
    const goneLo = this.goneLo;
    if (d === 0) [d, sd] = this.rootDir(true);
    this.reserveSlot();
    let entered = false;
    let obj = 0;
    let r = 0;
    try {
      this.enterDir(d, sd, p, n - 1);
      entered = true;
      crashPoint('names:after-count');
      let objSeq = 0;
      if (rec.kind === 'dir') [obj, objSeq] = this.newDirObj();
      r = this.claimRecord();
      const b = this.base(r);
      this.writeAttrs(this.w, b, rec);
      this.writeKey(r, d, sd, p.bytes, s, e);
      this.w[b + R_DIR] = obj;
      this.w[b + R_DIR_SEQ] = objSeq;
      const seq = this.publish(r);
      crashPoint('names:after-claim');
      // The name's GONE slot seen by the check: revived with one CAS, no second probe (a changed word: insert probes).
      if (gone >= 0 && this.revive(gone, goneLo, enc(r, seq, LIVE))) {
        this.unreserveSlot();
        return;
      }
      if (this.insert(d, sd, p.bytes, s, e, enc(r, seq, LIVE)) >= 0) {
        if (this.revived) this.unreserveSlot();
        return;
      }
      throw new MorselError('EEXIST', `${prefix(p, n)} exists`);
    } catch (err) {
      if (r !== 0) this.freeRecord(r);
      if (obj !== 0) this.freeRecord(obj);
      if (entered) this.leaveDir(d, sd);
      this.unreserveSlot();
      throw err;
    }
  }

  /** Renames `from` to `to`. EEXIST if `to` exists, ENOENT, EINVAL (a directory into itself). Commit: MOVING -> TOMB of the old slot. */
  rename(from: string, to: string): void {
    this.changing(() => this.renameNow(from, to));
  }

  private renameNow(from: string, to: string): void {
    const pf = this.p1;
    const pt = this.p2;
    const nf = pf.parse(from);
    const nt = pt.parse(to);
    check(nf > 0, 'EBUSY', 'cannot rename the root directory');
    check(nt > 0, 'EEXIST', 'the root directory exists');
    if (pf.equals(pt)) {
      this.walk(pf, nf, null, 0);
      return;
    }
    for (let attempt = 0; attempt < MAX_OP_RETRIES; attempt++) {
      const x = this.walk(pf, nf, null, 0);
      const slot = this.hitSlot;
      const lo = this.hitLo;
      const xRec = this.hitRec;
      const xSeq = this.hitSeq;
      const xDir = x.kind === 'dir' ? this.snapDir : 0;
      if (this.settleForUpdate(slot, lo)) continue;
      check(!(xDir !== 0 && pt.isBelow(pf)), 'EINVAL', () => `cannot move ${prefix(pf, nf)} into itself`);
      if (xDir !== 0) check((this.countWord(xDir) & DYING) === 0, 'ENOENT', () => `${prefix(pf, nf)} is being removed`);
      const parent = this.walk(pt, nt - 1, null, xDir);
      check(parent.kind === 'dir', 'ENOTDIR', () => `${prefix(pt, nt - 1)} is not a directory`);
      let td = this.snapDir;
      let tsd = this.snapDirSeq;
      const s = pt.starts[nt - 1];
      const e = pt.ends[nt - 1];
      check(td === 0 || this.find(td, tsd, pt.bytes, s, e, false) < 0, 'EEXIST', () => `${prefix(pt, nt)} exists`);
      if (td === 0) [td, tsd] = this.rootDir(true);
      if (this.moveOnce(slot, lo, xRec, xSeq, td, tsd, pt, nt)) return;
    }
    busy('rename');
  }

  /** Removes a morsel name (kind 'morsel') or an empty directory ('dir'). EISDIR / ENOTDIR on a kind mismatch, ENOTEMPTY. */
  remove(path: string, kind: NodeKind): NameRecord {
    return this.changing(() => this.removeNow(path, kind, null), kind === 'dir')!;
  }

  /**
   * remove() of a morsel name only while it names incarnation `expect`
   * (id and generation); null, with nothing changed, when it names another
   * one now (renamed away and another moved in). ENOENT as remove().
   * `dir`: the directory of `path`, resolved (resolveDir); `seen`: the
   * record lookupIn(dir, path) just returned in this same operation, whose
   * probe is then reused (see `found`).
   */
  removeIf(path: string, expect: { id: bigint; generation: number }, dir?: DirRef, seen?: NameRecord): NameRecord | null {
    return this.changing(() => this.removeNow(path, 'morsel', expect, dir, seen), false);
  }

  /** `dir`: the directory of `path`, already resolved (resolveDir). */
  private removeNow(path: string, kind: NodeKind, expect: { id: bigint; generation: number } | null, dir?: DirRef, seen?: NameRecord): NameRecord | null {
    check(kind === 'dir' || kind === 'morsel', 'EINVAL', () => `kind must be 'dir' or 'morsel', got ${String(kind)}`);
    const p = this.p1;
    const at = dir !== undefined && dir.obj !== 0 ? dir : null;
    const n = at !== null ? this.parseIn(at, path) : p.parse(path);
    check(n > 0, kind === 'dir' ? 'EBUSY' : 'EISDIR', 'cannot remove the root directory');
    const mark: DyingMark = { obj: 0, objSeq: 0 };
    try {
      for (let attempt = 0; attempt < MAX_OP_RETRIES; attempt++) {
        const x = this.removeOnce(p, n, kind, mark, expect, at, seen); // `found` serves the first attempt only
        if (x === NOT_EXPECTED) return null;
        if (x !== null) return x;
      }
      busy('remove');
    } catch (err) {
      if (mark.obj !== 0) this.undoDying(mark.obj, mark.objSeq); // the directory left the path first
      throw err;
    }
  }

  /** Component n of `p` in directory `at` (hit* and snapDir set), from lookupIn's memo when `seen` is the record it returned (consumed). */
  private findIn(at: DirRef, p: PathParser, n: number, seen: NameRecord | undefined): NameRecord {
    const f = this.found;
    this.found = null;
    if (f === null || seen === undefined || f.rec !== seen || f.dir !== at) return this.component(at.obj, at.objSeq, p, n - 1);
    this.hitSlot = f.slot;
    this.hitLo = f.lo;
    this.hitRec = f.recNo;
    this.hitSeq = f.seq;
    this.snapDir = f.snapDir;
    this.snapDirSeq = f.snapDirSeq;
    return f.rec;
  }

  /**
   * One removal attempt of component n of `p`; null: retry. For a directory,
   * DYING is set first (recorded in `mark` while this call owns it); a
   * directory some other rmdir marked (crashed or concurrent) is removed too
   * (roll-forward). The TOMB CAS is the commit point.
   */
  private removeOnce(p: PathParser, n: number, kind: NodeKind, mark: DyingMark, expect: { id: bigint; generation: number } | null, at: DirRef | null, seen: NameRecord | undefined): NameRecord | typeof NOT_EXPECTED | null {
    const x = at !== null ? this.findIn(at, p, n, seen) : this.walk(p, n, null, 0);
    if (expect !== null && x.kind === 'morsel' && (x.id !== expect.id || x.generation !== expect.generation)) return NOT_EXPECTED;
    const xObj = x.kind === 'dir' ? this.snapDir : 0;
    const xObjSeq = this.snapDirSeq;
    const [slot, lo, xRec, xSeq] = [this.hitSlot, this.hitLo, this.hitRec, this.hitSeq];
    check(!(x.kind === 'dir' && kind === 'morsel'), 'EISDIR', () => `${prefix(p, n)} is a directory`);
    check(!(x.kind === 'morsel' && kind === 'dir'), 'ENOTDIR', () => `${prefix(p, n)} is not a directory`);
    if (this.settleForUpdate(slot, lo)) return null;
    if (mark.obj !== 0 && (mark.obj !== xObj || mark.objSeq !== xObjSeq)) {
      // Another directory took the name meanwhile (possibly with our object's
      // record reused: the sequence tells incarnations apart).
      this.undoDying(mark.obj, mark.objSeq);
      mark.obj = 0;
    }
    if (kind === 'dir' && mark.obj === 0) {
      const c = this.countWord(xObj);
      if (!this.stillCurrent(xRec, xSeq) || this.loadRec(xObj, R_SEQ) !== xObjSeq) return null; // the name changed under us
      if ((c & DYING) === 0) {
        check((c & COUNT_MASK) === 0, 'ENOTEMPTY', () => `${prefix(p, n)} is not empty`);
        if (this.casRec(xObj, R_COUNT, c, c | DYING) !== c) return null;
        [mark.obj, mark.objSeq] = [xObj, xObjSeq];
        crashPoint('names:rmdir-after-dying');
      }
    }
    const si = this.slotIndex(slot, false);
    // # Warning: the parent is read BEFORE the commit. A GONE slot may be
    // revived the moment it is written, and the reviver frees xRec (which
    // may then be reused); a won CAS vouches for what was read here.
    const xb = this.base(xRec);
    const [pd, psd] = [this.w[xb + R_PARENT], this.w[xb + R_PARENT_SEQ]];
    // The slot word carries 6 bits of xRec's sequence: a slot revived 64 times
    // with xRec while we stalled would pass the CAS. The full sequence,
    // checked here, leaves only the few instructions up to the CAS.
    if (!this.stillCurrent(xRec, xSeq)) return null;
    const keep = this.reserveKept();
    this.beginChange();
    if (Atomics.compareExchange(this.sw, si, lo, enc(xRec, xSeq, keep ? GONE : TOMB)) === lo) {
      mark.obj = 0; // consumed: the object is freed with the name
      crashPoint('names:after-tomb');
      this.leaveDir(pd, psd);
      if (!keep) this.freeRecord(xRec);
      if (xObj !== 0) this.freeRecord(xObj);
      return x;
    }
    if (keep) this.releaseKept();
    const cur = Atomics.load(this.sw, si);
    if (!isDead(cur)) return null; // updated or being renamed: walk again
    if (recOf(cur) === xRec) mark.obj = 0; // another rmdir removed it (and freed the object)
    throw new MorselError('ENOENT', `${prefix(p, n)} was removed or renamed meanwhile`);
  }

  /**
   * Replaces the attributes of `path` with change(copy of the current record).
   * The kind cannot change. `change` may run more than once (a retry after a
   * race) and may call back into this Namespace; whatever it throws
   * propagates with nothing changed. Commit: LIVE(r) -> LIVE(r2).
   */
  update(path: string, change: (rec: NameRecord) => NameRecord): NameRecord {
    return this.changing(() => this.updateNow(path, change));
  }

  private updateNow(path: string, change: (rec: NameRecord) => NameRecord): NameRecord {
    const p = this.p1;
    for (let attempt = 0; attempt < MAX_OP_RETRIES; attempt++) {
      const n = p.parse(path); // again on a retry: `change` may have used the parser
      const cur = this.walk(p, n, null, 0);
      const slot = this.hitSlot;
      const lo = this.hitLo;
      const xRec = this.hitRec;
      const xSeq = this.hitSeq;
      const dir = this.snapDir;
      const dirSeq = this.snapDirSeq;
      if (n > 0 && this.settleForUpdate(slot, lo)) continue;
      const next = change({ ...cur });
      validateRecord(next);
      check(next.kind === cur.kind, 'EINVAL', 'update cannot change the kind of a name');
      if (n === 0 && this.updateRoot(lo, xRec, next)) return { ...next };
      if (n > 0 && this.swapRecord(slot, lo, xRec, xSeq, next, dir, dirSeq)) return { ...next };
    }
    busy('update');
  }

  /** The entries of directory `dirPath`, sorted by name. O(table capacity). */
  list(dirPath: string): { name: string; rec: NameRecord }[] {
    const p = this.p1;
    const dirRec = this.walk(p, p.parse(dirPath), null, 0);
    check(dirRec.kind === 'dir', 'ENOTDIR', () => `${dirPath} is not a directory`);
    const d = this.snapDir;
    const sd = this.snapDirSeq;
    const out: { name: string; rec: NameRecord }[] = [];
    if (d === 0) return out;
    for (let slot = 0; slot <= this.capMask; slot++) {
      const si = this.slotIndex(slot, false);
      if (si < 0) {
        slot |= LEAF_MASK; // a whole leaf not populated yet
        continue;
      }
      this.listSlot(si, d, sd, out);
    }
    return out.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  /** Every frame the namespace owns: header, table frames, record pages. */
  forEachFrame(visit: (frame: number) => void): void {
    const root = this.region.loadRootFrame(ROOT_SLOT_NAMES);
    if (root === 0) return;
    visit(root); // owned from format on, initialized or not
    const h = this.header(false);
    if (h === 0) return;
    this.forEachTable(h, H_BUCKET_TOP, BUCKET_TOP_ENTRIES, 1 << MID_SHIFT, 1, visit);
    this.forEachTable(h, H_PAGE_TOP, PAGE_TOP_ENTRIES, PAGES_PER_MID, 2, visit);
  }

  /**
   * Recovery-time repair. The caller must hold the region alone (no other
   * thread or process uses the namespace). Rolls interrupted renames forward
   * (new name inserted) or back, finishes interrupted rmdirs, removes names
   * unreachable from '/', frees every claimed record no name references,
   * recounts directories, and rebuilds the table when tombstones reach a
   * quarter of the used slots (always with `compact`). Frees no frames, so it
   * composes with an allocator rebuilt from forEachFrame. Idempotent.
   */
  collectGarbage(opts: { compact?: boolean } = {}): GarbageReport {
    const report: GarbageReport = { freedRecords: 0, renamesCommitted: 0, renamesRolledBack: 0, dyingRemoved: 0, orphansRemoved: 0, countsFixed: 0, tombstonesDropped: 0, keysDropped: 0 };
    if (this.header(false) === 0) return report;
    const { w, i } = this.headerWord(0);
    Atomics.add(w, i + H_EPOCH, 1); // every resolution may change
    Atomics.add(w, i + H_DIR_EPOCH, 1);
    this.dropKeys(report);
    this.finishRenames(report);
    const { dirs, names } = this.reachFromRoot(report);
    this.sweepRecords(dirs, names, report);
    this.recount(dirs, report);
    this.dropTombstones(opts.compact === true, report);
    Atomics.store(w, i + H_EPOCH_DONE, Atomics.load(w, i + H_EPOCH)); // settles changes dead processes began
    Atomics.store(w, i + H_DIR_EPOCH_DONE, Atomics.load(w, i + H_DIR_EPOCH));
    return report;
  }

  /**
   * Counts for tests and tools: visible names and directories, claimed
   * records, used and tombstone slots, table capacity, and whether the root
   * has its directory object and its own record (after a first update).
   */
  stats(): { names: number; dirs: number; records: number; usedSlots: number; tombstones: number; keptKeys: number; capacity: number; rootObject: boolean; rootRecord: boolean } {
    const out = { names: 0, dirs: 0, records: 0, usedSlots: 0, tombstones: 0, keptKeys: 0, capacity: 0, rootObject: false, rootRecord: false };
    if (this.header(false) === 0) return out;
    out.capacity = this.capMask + 1;
    out.rootObject = this.rootDir(false)[0] !== 0;
    out.rootRecord = Atomics.load(this.headerWord(H_ROOT_REC).w, this.headerWord(H_ROOT_REC).i) !== 0;
    this.forEachSlot((_slot, lo) => {
      out.usedSlots++;
      if (isDead(lo)) out.tombstones++;
      if (stateOf(lo) === GONE) out.keptKeys++;
      const r = isDead(lo) ? 0 : this.visibleRec(lo);
      if (r === 0) return;
      out.names++;
      if (this.loadRec(r, R_KIND) === KIND_DIR) out.dirs++;
    });
    this.forEachClaimed(() => out.records++);
    return out;
  }

  // --- garbage collection (exclusive) ------------------------------------------------

  /** GONE -> TOMB, freeing the records the keys kept (a later create of such a name takes a new slot); H_KEPT = 0. */
  private dropKeys(report: GarbageReport): void {
    this.forEachSlot((slot, lo) => {
      if (stateOf(lo) !== GONE) return;
      this.storeSlot(slot, withState(lo, TOMB));
      this.freeRecord(this.checkedRec(recOf(lo)));
      report.keysDropped++;
    });
    const { w, i } = this.headerWord(H_KEPT);
    Atomics.store(w, i, 0);
  }

  /** Interrupted renames: MOVING with its PENDING inserted commits, without it rolls back; PENDING settles. */
  private finishRenames(report: GarbageReport): void {
    const pending = new Set<number>();
    this.forEachSlot((_slot, lo) => {
      if (stateOf(lo) === PENDING) pending.add(recOf(lo));
    });
    this.forEachSlot((slot, lo) => {
      if (stateOf(lo) !== MOVING) return;
      const r = recOf(lo);
      const b = this.base(r);
      const seq = Atomics.load(this.w, b + R_SEQ);
      if (pending.has(r)) {
        this.storeSlot(slot, enc(r, seq, TOMB));
        report.renamesCommitted++;
      } else {
        const x = this.checkedRec(this.w[b + R_FROM_REC]);
        this.storeSlot(slot, enc(x, this.loadRec(x, R_SEQ), LIVE));
        report.renamesRolledBack++;
      }
    });
    this.forEachSlot((slot, lo) => {
      if (stateOf(lo) !== PENDING) return;
      const r = recOf(lo);
      const b = this.base(r);
      const seq = Atomics.load(this.w, b + R_SEQ);
      const committed = this.loadSlot(this.w[b + R_FROM_SLOT]) === enc(r, seq, TOMB);
      this.storeSlot(slot, enc(r, seq, committed ? LIVE : TOMB));
    });
  }

  /**
   * Walks the live names from '/' (by parent key); tombs names of dying
   * directories (finishing their rmdir) and names not reached (orphans).
   * Returns the live child count per reached directory object, and the
   * reached name records.
   */
  private reachFromRoot(report: GarbageReport): { dirs: Map<number, number>; names: Set<number> } {
    const children = new Map<number, number[]>();
    const key = (d: number, sd: number): number => d * U32 + (sd >>> 0);
    this.forEachSlot((slot, lo) => {
      if (stateOf(lo) !== LIVE) return;
      const b = this.base(this.checkedRec(recOf(lo)));
      const k = key(this.w[b + R_PARENT], this.w[b + R_PARENT_SEQ]);
      const list = children.get(k);
      if (list === undefined) children.set(k, [slot]);
      else list.push(slot);
    });
    const counts = new Map<number, number>(); // directory object -> live children
    const [rootObj, rootSeq] = this.rootDir(false);
    const queue: [number, number][] = rootObj === 0 ? [] : [[rootObj, rootSeq]];
    const reached = new Set<number>();
    for (let qi = 0; qi < queue.length; qi++) {
      const [d, sd] = queue[qi];
      const kids = children.get(key(d, sd)) ?? [];
      children.delete(key(d, sd));
      let live = 0;
      for (const slot of kids) {
        const lo = this.loadSlot(slot);
        const r = recOf(lo);
        const b = this.base(r);
        if (this.w[b + R_KIND] !== KIND_DIR) {
          reached.add(r);
          live++;
          continue;
        }
        const obj = this.checkedRec(this.w[b + R_DIR]);
        const objSeq = this.w[b + R_DIR_SEQ];
        const ob = this.base(obj);
        const objOk = Atomics.load(this.w, ob + R_SEQ) === objSeq && this.w[ob + R_KIND] === KIND_DIROBJ;
        if (objOk && (this.w[ob + R_COUNT] & DYING) !== 0) {
          this.storeSlot(slot, enc(r, this.loadRec(r, R_SEQ), TOMB));
          report.dyingRemoved++; // its children, if any, become orphans below
          continue;
        }
        if (!objOk) corrupt(`directory record ${r} points at a bad directory object ${obj}`);
        reached.add(r);
        live++;
        queue.push([obj, objSeq]);
      }
      counts.set(d, live);
    }
    for (const slots of children.values()) {
      for (const slot of slots) {
        const lo = this.loadSlot(slot);
        this.storeSlot(slot, withState(lo, TOMB));
        report.orphansRemoved++;
      }
    }
    return { dirs: counts, names: reached };
  }

  /** Frees every claimed record that is not a reached name, a reached directory object or the root's record. */
  private sweepRecords(dirs: Map<number, number>, names: Set<number>, report: GarbageReport): void {
    const keep = new Set(names);
    for (const d of dirs.keys()) keep.add(d);
    const { w: hw, i: hi } = this.headerWord(0);
    const root = recOf(Atomics.load(hw, hi + H_ROOT_REC));
    if (root !== 0) keep.add(root);
    this.forEachClaimed((rec) => {
      if (keep.has(rec)) return;
      const b = this.base(rec);
      if ((Atomics.load(this.w, b + R_SEQ) & 1) === 1) Atomics.add(this.w, b + R_SEQ, 1);
      this.unclaim(rec);
      report.freedRecords++;
    });
  }

  /** Sets every reached directory's count word to its live children (clearing DYING). */
  private recount(dirs: Map<number, number>, report: GarbageReport): void {
    for (const [d, live] of dirs) {
      const b = this.base(d);
      const word = (((Atomics.load(this.w, b + R_SEQ) >>> 1) & INC_MASK) << INC_SHIFT) | live;
      if (Atomics.exchange(this.w, b + R_COUNT, word) !== word) report.countsFixed++;
    }
  }

  /** Recounts used slots; rebuilds the table without tombstones when they are >= 1/4 of the used slots (or `force`). */
  private dropTombstones(force: boolean, report: GarbageReport): void {
    const live: [number, number][] = [];
    let used = 0;
    this.forEachSlot((slot, lo) => {
      used++;
      if (!isDead(lo)) live.push([lo, Atomics.load(this.sw, this.slotIndex(slot, false) + 1)]);
    });
    const tombs = used - live.length;
    const { w: hw, i: hi } = this.headerWord(H_USED_SLOTS);
    if (tombs === 0 || (!force && tombs * 4 < used)) {
      Atomics.store(hw, hi, used);
      return;
    }
    this.forEachSlot((slot) => this.storeSlot(slot, 0, 0));
    for (const [lo, tag] of live) {
      const b = this.base(recOf(lo));
      const f = this.recFrame(recOf(lo)) as Frame;
      const off = this.region.byteOffsetInWindow(f) + ((recOf(lo) - 1) & (RECORDS_PER_PAGE - 1)) * RECORD_WORDS * 4 + NAME_BYTE;
      const h = hashName(this.w[b + R_PARENT], this.w[b + R_PARENT_SEQ], this.region.bytesOf(f), off, off + this.w[b + R_NAME_LEN]);
      let slot = h & this.capMask;
      for (let probe = 0; this.loadSlotOrCreate(slot) !== 0; probe++) {
        assert(probe <= this.capMask, 'rebuilt table has room');
        slot = (slot + 1) & this.capMask;
      }
      this.storeSlot(slot, lo, tag);
    }
    Atomics.store(hw, hi, live.length);
    report.tombstonesDropped = tombs;
  }

  private loadSlotOrCreate(slot: number): number {
    return Atomics.load(this.sw, this.slotIndex(slot, true));
  }

  /** Exclusive-access store of slot `slot` (lo; hi too when given). */
  private storeSlot(slot: number, lo: number, hi?: number): void {
    const si = this.slotIndex(slot, true);
    if (hi !== undefined) Atomics.store(this.sw, si + 1, hi);
    Atomics.store(this.sw, si, lo);
  }

  /** Visits every non-empty slot (slot, lo). */
  private forEachSlot(visit: (slot: number, lo: number) => void): void {
    for (let slot = 0; slot <= this.capMask; slot++) {
      const si = this.slotIndex(slot, false);
      if (si < 0) {
        slot |= LEAF_MASK;
        continue;
      }
      const lo = Atomics.load(this.sw, si);
      if (lo !== 0) visit(slot, lo);
    }
  }

  /** Visits every claimed record number. */
  private forEachClaimed(visit: (rec: number) => void): void {
    for (let page = 0; page < MAX_PAGES; page++) {
      const pf = this.pagePair(page, false);
      if (pf < 0) {
        page |= PAGES_PER_MID - 1;
        continue;
      }
      const bits = Atomics.load(this.w, pf + 1) & FULL_PAGE;
      for (let c = 0; c < RECORDS_PER_PAGE; c++) if ((bits & (1 << c)) !== 0) visit(page * RECORDS_PER_PAGE + c + 1);
    }
  }

  // --- walking ------------------------------------------------------------------

  /**
   * Resolves components [0, n) of `p` and returns the last record; pushes
   * every record to `out` if given. Leaves hit* (slot of the last component)
   * and snapDir/snapDirSeq (its directory object, 0 if none yet). EINVAL if
   * a directory on the way has directory object `avoid` (a move into itself).
   */
  private walk(p: PathParser, n: number, out: NameRecord[] | null, avoid: number): NameRecord {
    if (out === null && n > 0) return this.walkFast(p, n, avoid);
    let rec = this.rootRecord();
    out?.push(rec);
    for (let i = 0; i < n; i++) {
      check(rec.kind === 'dir', 'ENOTDIR', () => `${prefix(p, i)} is not a directory`);
      check(avoid === 0 || this.snapDir !== avoid, 'EINVAL', () => `cannot move a directory into itself (${prefix(p, i)})`);
      rec = this.component(this.snapDir, this.snapDirSeq, p, i);
      out?.push(rec);
    }
    check(avoid === 0 || rec.kind !== 'dir' || this.snapDir !== avoid, 'EINVAL', () => `cannot move a directory into itself (${prefix(p, n)})`);
    return rec;
  }

  /** walk() without building the records of the directories on the way (n > 0). */
  private walkFast(p: PathParser, n: number, avoid: number): NameRecord {
    for (let attempt = 0; attempt < MAX_READ_RETRIES; attempt++) {
      let d = this.rootObj();
      let sd = this.snapDirSeq;
      let i = 0;
      for (; i < n - 1; i++) {
        if (avoid !== 0 && d === avoid) intoItself(p, i);
        if (!this.step(d, sd, p, i)) break;
        d = this.snapDir;
        sd = this.snapDirSeq;
      }
      if (i < n - 1) continue; // a record changed under us
      if (avoid !== 0 && d === avoid) intoItself(p, n - 1);
      const rec = this.component(d, sd, p, n - 1);
      if (avoid !== 0 && rec.kind === 'dir' && this.snapDir === avoid) intoItself(p, n);
      return rec;
    }
    busy('lookup');
  }

  /**
   * Steps into directory component i of `p` in (d, sd): sets snapDir and
   * snapDirSeq to its directory object. ENOENT, ENOTDIR. Returns false if
   * the record changed under us: walk again.
   */
  private step(d: number, sd: number, p: PathParser, i: number): boolean {
    if (d === 0 || this.find(d, sd, p.bytes, p.starts[i], p.ends[i], false) < 0) {
      throw new MorselError('ENOENT', `no such file or directory: ${prefix(p, i + 1)}`);
    }
    const b = this.base(this.hitRec);
    const w = this.w;
    const kind = w[b + R_KIND];
    this.snapDir = w[b + R_DIR];
    this.snapDirSeq = w[b + R_DIR_SEQ];
    if (Atomics.load(w, b + R_SEQ) !== this.hitSeq) return false;
    if (kind !== KIND_DIR) throw new MorselError('ENOTDIR', `${prefix(p, i + 1)} is not a directory`);
    return true;
  }

  /** The visible record of component i of `p` in directory (d, sd). ENOENT. */
  private component(d: number, sd: number, p: PathParser, i: number): NameRecord {
    for (let attempt = 0; attempt < MAX_READ_RETRIES; attempt++) {
      if (d === 0 || this.find(d, sd, p.bytes, p.starts[i], p.ends[i], false) < 0) {
        throw new MorselError('ENOENT', `no such file or directory: ${prefix(p, i + 1)}`);
      }
      const rec = this.snapshot(this.hitRec, this.hitSeq);
      if (rec !== null) return rec;
    }
    busy('lookup');
  }

  /** The root directory's record; sets snapDir/snapDirSeq and hit* (hitLo = the header's root word). */
  private rootRecord(): NameRecord {
    const h = this.header(false);
    const hw = h === 0 ? null : this.region.words(h as Frame);
    const hi = h === 0 ? 0 : this.region.wordIndex(h as Frame, 0);
    for (let attempt = 0; attempt < MAX_READ_RETRIES; attempt++) {
      const lo = hw === null ? 0 : Atomics.load(hw, hi + H_ROOT_REC);
      this.hitSlot = -1;
      this.hitLo = lo;
      this.hitRec = recOf(lo);
      if (lo === 0) {
        [this.snapDir, this.snapDirSeq] = this.rootDir(false);
        const ctimeMs = hw === null ? 0 : getF64(hw, hi + H_CTIME);
        return { kind: 'dir', id: 0n, generation: 0, sizeBytes: 0, uid: 0, gid: 0, mode: DEFAULT_ROOT_MODE, ctimeMs, mtimeMs: ctimeMs, fixedAddress: null };
      }
      const b = this.base(this.checkedRec(recOf(lo)));
      const seq = Atomics.load(this.w, b + R_SEQ);
      this.hitSeq = seq;
      const rec = (seq & 1) === 1 && enc(recOf(lo), seq, LIVE) === lo ? this.snapshot(recOf(lo), seq) : null;
      if (rec !== null && Atomics.load(hw!, hi + H_ROOT_REC) === lo) return rec;
    }
    busy('root lookup');
  }

  // --- the hash table -----------------------------------------------------------

  /**
   * Probes for the visible entry of name bytes[s, e) in directory (d, sd).
   * Returns its slot (setting hit*) or -1. `help`: commit an undecided rename
   * found for this name (inserters must; pure lookups only read).
   */
  private find(d: number, sd: number, bytes: Uint8Array, s: number, e: number, help: boolean, noteGone = false): number {
    this.goneSlot = -1;
    const h = hashName(d, sd, bytes, s, e);
    const tag = tagOf(h);
    let slot = h & this.capMask;
    for (let probe = 0; probe <= this.capMask; probe++, slot = (slot + 1) & this.capMask) {
      const si = this.slotIndex(slot, false);
      if (si < 0) return -1;
      const sw = this.sw;
      for (let retry = 0; ; retry++) {
        if (retry >= MAX_READ_RETRIES) busy('lookup');
        const lo = Atomics.load(sw, si);
        if (lo === 0) return -1;
        if (Atomics.load(sw, si + 1) !== tag || (isDead(lo) && !(noteGone && stateOf(lo) === GONE))) break;
        const m = this.matchSlot(sw, si, lo, d, sd, bytes, s, e, help);
        if (m === NOMATCH) break;
        if (m === MATCH && stateOf(lo) === GONE) {
          // The name's one keyed slot, removed: the name is not visible (a create revives this slot).
          this.goneSlot = slot;
          this.goneLo = lo;
          return -1;
        }
        if (m === MATCH) {
          this.hitSlot = slot;
          this.hitLo = lo;
          return slot;
        }
      }
    }
    return -1;
  }

  /**
   * Inserts `newLo` for name bytes[s, e) of (d, sd) into the slot keyed by
   * the name if it is GONE (revival: sets `revived`, frees the kept record),
   * else into the first empty slot of its chain, unless the name is visible
   * (returns -1, hit* set). The CAS (64-bit from empty, or of the GONE lo
   * word) is a create's commit point.
   */
  private insert(d: number, sd: number, bytes: Uint8Array, s: number, e: number, newLo: number): number {
    this.revived = false;
    const h = hashName(d, sd, bytes, s, e);
    const tag = tagOf(h);
    let slot = h & this.capMask;
    for (let probe = 0; probe <= this.capMask; probe++, slot = (slot + 1) & this.capMask) {
      const si = this.slotIndex(slot, true);
      const sw = this.sw;
      for (let retry = 0; ; retry++) {
        if (retry >= MAX_READ_RETRIES) busy('insert');
        const lo = Atomics.load(sw, si);
        if (lo === 0) {
          if (this.region.casEntry(this.leaf(slot, false) as Frame, slot & LEAF_MASK, 0, 0, newLo, tag)) return slot;
          continue;
        }
        if (Atomics.load(sw, si + 1) !== tag || stateOf(lo) === TOMB) break;
        const m = this.matchSlot(sw, si, lo, d, sd, bytes, s, e, true);
        if (m === NOMATCH) break;
        if (m === MATCH && stateOf(lo) === GONE) {
          if (!this.revive(slot, lo, newLo)) continue;
          this.revived = true;
          return slot;
        }
        if (m === MATCH) {
          this.hitSlot = slot;
          this.hitLo = lo;
          return -1;
        }
      }
    }
    throw new MorselError('ENOSPC', 'namespace hash table full');
  }

  /**
   * GONE(r) -> `newLo` on slot `slot` if its word is still `lo` (the commit
   * of a create or rename of the name the slot keeps); the winner frees the
   * kept record r. A slot's key never changes, so a word still GONE is
   * still this name's, and the name is still not visible.
   */
  private revive(slot: number, lo: number, newLo: number): boolean {
    assert(stateOf(lo) === GONE, 'revive a GONE slot');
    const si = this.slotIndex(slot, false);
    assert(si >= 0, 'a slot found by a probe has its table');
    if (Atomics.compareExchange(this.sw, si, lo, newLo) !== lo) return false;
    this.releaseKept();
    this.freeRecord(recOf(lo));
    return true;
  }

  /**
   * Whether slot word sw[si] = `lo` is the visible entry of name bytes[s, e)
   * in (d, sd): MATCH (hitRec/hitSeq set), NOMATCH, or RETRY (it changed
   * under us, or we just helped commit a rename).
   */
  private matchSlot(sw: Int32Array, si: number, lo: number, d: number, sd: number, bytes: Uint8Array, s: number, e: number, help: boolean): number {
    const state = stateOf(lo);
    const rec = this.checkedRec(recOf(lo));
    let b = this.base(rec);
    const seq = Atomics.load(this.w, b + R_SEQ);
    if ((seq & 1) === 0 || enc(rec, seq, state) !== lo) return RETRY;
    let cand = rec;
    let candSeq = seq;
    if (state === MOVING) {
      cand = this.w[b + R_FROM_REC];
      if (Atomics.load(this.w, b + R_SEQ) !== seq) return RETRY;
      b = this.base(this.checkedRec(cand));
      candSeq = Atomics.load(this.w, b + R_SEQ);
      if ((candSeq & 1) === 0) return RETRY;
    }
    const w = this.w;
    const same = w[b + R_PARENT] === d && w[b + R_PARENT_SEQ] === sd && this.nameEquals(cand, bytes, s, e);
    const fromSlot = state === PENDING ? w[b + R_FROM_SLOT] : 0;
    if (Atomics.load(w, b + R_SEQ) !== candSeq || Atomics.load(sw, si) !== lo) return RETRY;
    if (!same) return NOMATCH;
    if (state === PENDING) {
      const old = this.loadSlot(fromSlot);
      if (old === enc(rec, seq, MOVING)) {
        if (!help) return NOMATCH; // undecided: not visible yet
        this.commitMove(fromSlot, rec, seq);
        return RETRY;
      }
      if (old !== enc(rec, seq, TOMB)) return NOMATCH; // aborted
    }
    this.hitRec = cand;
    this.hitSeq = candSeq;
    return MATCH;
  }

  private nameEquals(rec: number, bytes: Uint8Array, s: number, e: number): boolean {
    const b = this.base(rec);
    const len = this.w[b + R_NAME_LEN];
    if (len !== e - s) return false;
    const f = this.recFrame(rec);
    const win = this.region.bytesOf(f as Frame);
    const off = this.region.byteOffsetInWindow(f as Frame) + ((rec - 1) & (RECORDS_PER_PAGE - 1)) * RECORD_WORDS * 4 + NAME_BYTE;
    for (let i = 0; i < len; i++) if (win[off + i] !== bytes[s + i]) return false;
    return true;
  }

  /** Adds one to the used-slot count (ENOSPC at the load bound). */
  private reserveSlot(): void {
    if (this.tryCount(H_USED_SLOTS, this.limitSlots)) return;
    throw new MorselError('ENOSPC', `namespace table full (${this.limitSlots} used slots incl. tombstones; collectGarbage drops tombstones)`);
  }

  private unreserveSlot(): void {
    this.uncount(H_USED_SLOTS);
  }

  /** Adds one to header counter `word` if it stays below `limit`; whether it did. */
  private tryCount(word: number, limit: number): boolean {
    const { w, i } = this.headerWord(word);
    if (Atomics.add(w, i, 1) < limit) return true;
    Atomics.sub(w, i, 1);
    return false;
  }

  private uncount(word: number): void {
    const { w, i } = this.headerWord(word);
    Atomics.sub(w, i, 1);
  }

  // --- rename, remove, update steps ------------------------------------------------

  /**
   * If slot `slot` (holding `lo`) is in a rename, resolves that first: a
   * MOVING old name is aborted, a PENDING new name is settled. Returns whether
   * it did anything (the caller then walks again).
   */
  private settleForUpdate(slot: number, lo: number): boolean {
    if (slot < 0) return false;
    const state = stateOf(lo);
    if (state === MOVING) this.abortMove(slot, lo);
    else if (state === PENDING) this.settle(slot, lo);
    return state === MOVING || state === PENDING;
  }

  /** One rename attempt of slot `slot` (LIVE `lo`, record x) to component nt-1 of `pt` in (td, tsd). False: retry. */
  private moveOnce(slot: number, lo: number, x: number, xSeq: number, td: number, tsd: number, pt: PathParser, nt: number): boolean {
    const s = pt.starts[nt - 1];
    const e = pt.ends[nt - 1];
    this.reserveSlot();
    let entered = false; // td's count raised for r
    let r = 0; // the new record, while ours to free
    let seq = 0;
    let marked = false; // old slot MOVING(r)
    let inserted = false; // PENDING(r) took a slot
    try {
      this.enterDir(td, tsd, pt, nt - 1);
      entered = true;
      r = this.claimRecord();
      this.copyRecord(x, r);
      this.writeKey(r, td, tsd, pt.bytes, s, e);
      const b = this.base(r);
      this.w[b + R_FROM_REC] = x;
      this.w[b + R_FROM_SLOT] = slot;
      seq = this.publish(r);
      const si = this.slotIndex(slot, false);
      this.beginChange(); // the PENDING insert below makes the commit anyone's to do
      if (!this.stillCurrent(x, xSeq) || Atomics.compareExchange(this.sw, si, lo, enc(r, seq, MOVING)) !== lo) return false;
      marked = true;
      crashPoint('names:rename-after-mark');
      const ps = this.insert(td, tsd, pt.bytes, s, e, enc(r, seq, PENDING));
      check(ps >= 0, 'EEXIST', () => `${prefix(pt, nt)} exists`);
      inserted = true;
      if (this.revived) this.unreserveSlot();
      crashPoint('names:rename-after-pending');
      if (this.commitMove(slot, r, seq) || this.loadSlot(slot) === enc(r, seq, TOMB)) {
        this.settle(ps, enc(r, seq, PENDING));
        [r, entered] = [0, false];
        return true;
      }
      // aborted by a conflicting update/remove/rename of the old name: withdraw the new name
      const psi = this.slotIndex(ps, false);
      const withdrawn = Atomics.compareExchange(this.sw, psi, enc(r, seq, PENDING), enc(r, seq, TOMB)) === enc(r, seq, PENDING);
      assert(withdrawn, 'only the renamer withdraws an aborted new name');
      return false;
    } finally {
      if (marked && !inserted) {
        const si = this.slotIndex(slot, false);
        Atomics.compareExchange(this.sw, si, enc(r, seq, MOVING), lo); // abort (unless someone did)
      }
      if (r !== 0) this.freeRecord(r);
      if (entered) this.leaveDir(td, tsd);
      if (!inserted) this.unreserveSlot();
    }
  }

  /** Commits rename r' (seq): old slot MOVING(r') -> TOMB(r'). The winner frees the old record and lowers the old parent's count. */
  private commitMove(oldSlot: number, r: number, seq: number): boolean {
    const si = this.slotIndex(oldSlot, false);
    if (si < 0) corrupt(`rename source slot ${oldSlot} not populated`);
    // # Warning: r's old record is read BEFORE the commit. Once the old slot is
    // TOMB the new name is live: another thread may settle, update or remove
    // it and free r (and reuse it) before this thread reads on. r cannot be
    // freed before the commit (only an aborted renamer frees it), so a won
    // CAS vouches for what was read here.
    const from = this.loadRec(r, R_FROM_REC);
    if (Atomics.compareExchange(this.sw, si, enc(r, seq, MOVING), enc(r, seq, TOMB)) !== enc(r, seq, MOVING)) return false;
    crashPoint('names:rename-after-commit');
    const x = this.checkedRec(from);
    const xb = this.base(x);
    const pd = this.w[xb + R_PARENT];
    const psd = this.w[xb + R_PARENT_SEQ];
    this.leaveDir(pd, psd);
    this.freeRecord(x);
    return true;
  }

  /** Aborts the rename marked in `slot` (MOVING(r')): back to LIVE(old record). */
  private abortMove(slot: number, lo: number): void {
    const r = recOf(lo);
    const b = this.base(r);
    const seq = Atomics.load(this.w, b + R_SEQ);
    const from = this.w[b + R_FROM_REC];
    // Validated before it is trusted: r may have been freed and reused since `lo` was read.
    if (seq !== Atomics.load(this.w, b + R_SEQ) || enc(r, seq, MOVING) !== lo) return;
    const x = this.checkedRec(from);
    const xSeq = this.loadRec(x, R_SEQ);
    const si = this.slotIndex(slot, false);
    Atomics.compareExchange(this.sw, si, lo, enc(x, xSeq, LIVE));
  }

  /** A PENDING new name in `slot`: commit its rename if undecided, then PENDING -> LIVE if committed. */
  private settle(slot: number, lo: number): void {
    const r = recOf(lo);
    const b = this.base(r);
    const seq = Atomics.load(this.w, b + R_SEQ);
    const fromSlot = this.w[b + R_FROM_SLOT];
    if (seq !== Atomics.load(this.w, b + R_SEQ) || enc(r, seq, PENDING) !== lo) return;
    if (this.loadSlot(fromSlot) === enc(r, seq, MOVING)) this.commitMove(fromSlot, r, seq);
    if (this.loadSlot(fromSlot) !== enc(r, seq, TOMB)) return;
    const si = this.slotIndex(slot, false);
    Atomics.compareExchange(this.sw, si, lo, enc(r, seq, LIVE));
  }

  /** Counts one more GONE slot if fewer than capacity / KEPT_DEN exist (header word H_KEPT; recounted by collectGarbage). */
  private reserveKept(): boolean {
    return this.tryCount(H_KEPT, (this.capMask + 1) / KEPT_DEN);
  }

  private releaseKept(): void {
    this.uncount(H_KEPT);
  }

  /** One update attempt: LIVE(x) -> LIVE(copy of x with `next`). False: retry. */
  private swapRecord(slot: number, lo: number, x: number, xSeq: number, next: NameRecord, dir: number, dirSeq: number): boolean {
    const r = this.claimRecord();
    this.copyRecord(x, r);
    const b = this.base(r);
    this.writeAttrs(this.w, b, next);
    this.w[b + R_DIR] = next.kind === 'dir' ? dir : 0;
    this.w[b + R_DIR_SEQ] = next.kind === 'dir' ? dirSeq : 0;
    const seq = this.publish(r);
    const si = this.slotIndex(slot, false);
    this.beginChange();
    // x unchanged since the walk (copied from the incarnation we checked; see removeOnce on the 6-bit slot check)
    if (!this.stillCurrent(x, xSeq) || Atomics.compareExchange(this.sw, si, lo, enc(r, seq, LIVE)) !== lo) {
      this.freeRecord(r);
      return false;
    }
    crashPoint('names:update-after-swap');
    this.freeRecord(x);
    return true;
  }

  /** One update attempt of the root directory's record (header word H_ROOT_REC). */
  private updateRoot(lo: number, x: number, next: NameRecord): boolean {
    const [d, sd] = this.rootDir(true);
    const r = this.claimRecord();
    const b = this.base(r);
    this.writeAttrs(this.w, b, next);
    this.w[b + R_DIR] = d;
    this.w[b + R_DIR_SEQ] = sd;
    const seq = this.publish(r);
    const { w, i } = this.headerWord(H_ROOT_REC);
    this.beginChange();
    if (Atomics.compareExchange(w, i, lo, enc(r, seq, LIVE)) !== lo) {
      this.freeRecord(r);
      return false;
    }
    crashPoint('names:update-after-swap');
    if (x !== 0) this.freeRecord(x);
    return true;
  }

  // --- directory objects -----------------------------------------------------------

  private countWord(obj: number): number {
    return this.loadRec(obj, R_COUNT);
  }

  /** Raises directory (d, sd)'s child count unless it is dying or gone (ENOENT). */
  private enterDir(d: number, sd: number, p: PathParser, n: number): void {
    const b = this.base(d);
    const w = this.w;
    for (let attempt = 0; attempt < MAX_OP_RETRIES; attempt++) {
      const c = Atomics.load(w, b + R_COUNT);
      check(Atomics.load(w, b + R_SEQ) === sd && (c & DYING) === 0, 'ENOENT', () => `directory ${prefix(p, n)} is being removed`);
      check((c & COUNT_MASK) < COUNT_MASK, 'ENOSPC', () => `directory ${prefix(p, n)} is full`);
      if (Atomics.compareExchange(w, b + R_COUNT, c, c + 1) !== c) continue;
      if (Atomics.load(w, b + R_SEQ) === sd) return;
      Atomics.sub(w, b + R_COUNT, 1); // the object was reused under us
      throw new MorselError('ENOENT', `directory ${prefix(p, n)} was removed`);
    }
    busy('create');
  }

  private leaveDir(d: number, sd: number): void {
    const b = this.base(this.checkedRec(d));
    assert(Atomics.load(this.w, b + R_SEQ) === sd, 'a directory with children is not freed');
    const old = Atomics.sub(this.w, b + R_COUNT, 1);
    assert((old & COUNT_MASK) > 0, 'directory child count does not underflow');
  }

  /**
   * Clears DYING that this call's rmdir set on `obj` (sequence objSeq) when
   * the directory left the path first (renamed away).
   * # Warning
   * The sequence check and the CAS are two steps; the incarnation bits in the
   * count word make hitting a freed-and-reused object in between need 64
   * reuses of it in that window.
   */
  private undoDying(obj: number, objSeq: number): void {
    const b = this.base(obj);
    if (Atomics.load(this.w, b + R_SEQ) !== objSeq) return;
    const inc = ((objSeq >>> 1) & INC_MASK) << INC_SHIFT;
    Atomics.compareExchange(this.w, b + R_COUNT, inc | DYING, inc);
  }

  /** A new directory object (count 0). */
  private newDirObj(): [number, number] {
    const r = this.claimRecord();
    const b = this.base(r);
    const seq = Atomics.load(this.w, b + R_SEQ) + 1;
    this.w.fill(0, b + 1, b + RECORD_WORDS);
    this.w[b + R_KIND] = KIND_DIROBJ;
    Atomics.store(this.w, b + R_COUNT, ((seq >>> 1) & INC_MASK) << INC_SHIFT);
    return [r, this.publish(r)];
  }

  /** The root directory's object (0 if none yet), its sequence in snapDirSeq. No allocation. */
  private rootObj(): number {
    const h = this.header(false);
    const d = h === 0 ? 0 : Atomics.load(this.region.words(h as Frame), this.region.wordIndex(h as Frame, H_ROOT_DIR));
    this.snapDirSeq = d === 0 ? 0 : this.loadRec(this.checkedRec(d), R_SEQ);
    return d;
  }

  /** The root directory's object (created on demand when `create`); [0, 0] if none yet. */
  private rootDir(create: boolean): [number, number] {
    const h = this.header(create);
    if (h === 0) return [0, 0];
    const { w, i } = this.headerWord(H_ROOT_DIR);
    let d = Atomics.load(w, i);
    if (d === 0 && create) {
      const [fresh] = this.newDirObj();
      d = Atomics.compareExchange(w, i, 0, fresh);
      if (d === 0) d = fresh;
      else this.freeRecord(fresh);
    }
    if (d === 0) return [0, 0];
    return [d, this.loadRec(this.checkedRec(d), R_SEQ)];
  }

  // --- records ----------------------------------------------------------------------

  /** Word `word` of record `rec` (atomic load). */
  private loadRec(rec: number, word: number): number {
    const b = this.base(rec);
    return Atomics.load(this.w, b + word);
  }

  private casRec(rec: number, word: number, expect: number, next: number): number {
    const b = this.base(rec);
    return Atomics.compareExchange(this.w, b + word, expect, next);
  }

  /** Sets this.w to the window of record `rec` and returns the index of its word 0. */
  private base(rec: number): number {
    const f = this.recFrame(rec);
    this.w = this.region.words(f as Frame);
    return this.region.wordIndex(f as Frame, ((rec - 1) & (RECORDS_PER_PAGE - 1)) * RECORD_WORDS);
  }

  private checkedRec(rec: number): number {
    if (!(rec >= 1 && rec <= MAX_RECORDS)) corrupt(`record number ${rec} out of range`);
    return rec;
  }

  private recFrame(rec: number): number {
    const page = (rec - 1) >>> PAGE_SHIFT;
    const f = this.pageFrames[page];
    if (f !== 0) return f >>> 0;
    const pf = this.pagePair(page, false);
    const frame = pf < 0 ? 0 : Atomics.load(this.w, pf) >>> 0;
    if (!(frame > 0 && frame < this.region.frameCount)) corrupt(`record ${rec} lies in a page that does not exist`);
    this.pageFrames[page] = frame;
    return frame;
  }

  /** Index (in this.w) of the frame word of record page `page`'s (frame, bitmap) pair; -1 if its mid table is absent. */
  private pagePair(page: number, create: boolean): number {
    const h = this.header(create);
    if (h === 0) return -1;
    const top = H_PAGE_TOP + (page >>> PAGE_MID_SHIFT);
    const mid = create ? this.installTable(h, top) : this.loadTableWord(h, top);
    if (mid === 0) return -1;
    this.w = this.region.words(mid as Frame);
    return this.region.wordIndex(mid as Frame, 2 * (page & (PAGES_PER_MID - 1)));
  }

  /** Claims a free record (bit set, sequence even). ENOSPC when every page is full. */
  private claimRecord(): number {
    const { w: hw, i: hi } = this.headerWord(0);
    let pages = Atomics.load(hw, hi + H_PAGES);
    const hint = Atomics.load(hw, hi + H_FREE_HINT);
    let rec = hint < pages ? this.claimIn(hint) : 0;
    for (let k = 0; rec === 0 && k < SCAN_PAGES && k < pages; k++) rec = this.claimIn((this.pageHint + k) % pages);
    for (let attempt = 0; rec === 0 && attempt < MAX_OP_RETRIES && pages < MAX_PAGES; attempt++) {
      this.installTable(this.pagePairFrame(pages), this.pagePairWord(pages));
      Atomics.compareExchange(hw, hi + H_PAGES, pages, pages + 1);
      rec = this.claimIn(pages);
      pages = Atomics.load(hw, hi + H_PAGES);
    }
    for (let page = 0; rec === 0 && page < pages; page++) rec = this.claimIn(page);
    check(rec !== 0, 'ENOSPC', `namespace full (${MAX_RECORDS} records)`);
    this.pageHint = (rec - 1) >>> PAGE_SHIFT;
    return rec;
  }

  private pagePairFrame(page: number): number {
    this.pagePair(page, true);
    return this.loadTableWord(this.hdr, H_PAGE_TOP + (page >>> PAGE_MID_SHIFT));
  }

  private pagePairWord(page: number): number {
    return 2 * (page & (PAGES_PER_MID - 1));
  }

  /** Claims a free cell of record page `page` by CAS on its bitmap word; 0 if full. */
  private claimIn(page: number): number {
    const pf = this.pagePair(page, false);
    if (pf < 0 || Atomics.load(this.w, pf) === 0) return 0;
    const w = this.w;
    for (let attempt = 0; attempt < RECORDS_PER_PAGE * 4; attempt++) {
      const bits = Atomics.load(w, pf + 1);
      if ((bits & FULL_PAGE) === FULL_PAGE) return 0;
      const bit = ~bits & (bits + 1) & FULL_PAGE;
      if (Atomics.compareExchange(w, pf + 1, bits, bits | bit) === bits) return page * RECORDS_PER_PAGE + (31 - Math.clz32(bit)) + 1;
    }
    return 0;
  }

  /** Record `rec` is still the incarnation published with sequence `seq` (not freed since). */
  private stillCurrent(rec: number, seq: number): boolean {
    return this.loadRec(rec, R_SEQ) === seq;
  }

  /** Makes a written record valid (sequence even -> odd). Returns the new sequence. */
  private publish(rec: number): number {
    const b = this.base(rec);
    const old = Atomics.add(this.w, b + R_SEQ, 1);
    assert((old & 1) === 0, 'a record is published once');
    return old + 1;
  }

  /** Frees a record no slot references any more: sequence -> even, then its bit is cleared. */
  private freeRecord(rec: number): void {
    const b = this.base(rec);
    const old = Atomics.add(this.w, b + R_SEQ, 1);
    assert((old & 1) === 1, 'a freed record was valid');
    crashPoint('names:free-after-seq');
    this.unclaim(rec);
  }

  private unclaim(rec: number): void {
    const page = (rec - 1) >>> PAGE_SHIFT;
    const pf = this.pagePair(page, false);
    assert(pf >= 0, 'a claimed record has a page');
    const bit = 1 << ((rec - 1) & (RECORDS_PER_PAGE - 1));
    const old = Atomics.and(this.w, pf + 1, ~bit);
    assert((old & bit) !== 0, 'a freed record was claimed');
    const { w, i } = this.headerWord(H_FREE_HINT);
    Atomics.store(w, i, page);
  }

  private writeAttrs(w: Int32Array, b: number, rec: NameRecord): void {
    w[b + R_KIND] = rec.kind === 'dir' ? KIND_DIR : KIND_MORSEL;
    w[b + R_ID_LO] = Number(rec.id & 0xffffffffn) | 0;
    w[b + R_ID_HI] = Number(rec.id >> 32n) | 0;
    w[b + R_GEN] = rec.generation | 0;
    w[b + R_UID] = rec.uid | 0;
    w[b + R_GID] = rec.gid | 0;
    w[b + R_MODE] = rec.mode;
    putF64(w, b + R_SIZE, rec.sizeBytes);
    putF64(w, b + R_CTIME, rec.ctimeMs);
    putF64(w, b + R_MTIME, rec.mtimeMs);
    putF64(w, b + R_FIXED, rec.fixedAddress ?? 0);
    w[b + R_HAS_FIXED] = rec.fixedAddress === null ? 0 : 1;
  }

  /** Writes the parent key and the name bytes[s, e) of record `rec`. */
  private writeKey(rec: number, d: number, sd: number, bytes: Uint8Array, s: number, e: number): void {
    const b = this.base(rec);
    this.w[b + R_PARENT] = d;
    this.w[b + R_PARENT_SEQ] = sd;
    this.w[b + R_NAME_LEN] = e - s;
    const f = this.recFrame(rec) as Frame;
    const off = this.region.byteOffsetInWindow(f) + ((rec - 1) & (RECORDS_PER_PAGE - 1)) * RECORD_WORDS * 4 + NAME_BYTE;
    this.region.bytesOf(f).set(bytes.subarray(s, e), off);
  }

  /** Copies record `from` (valid) into claimed record `to`, all but the sequence word. */
  private copyRecord(from: number, to: number): void {
    const fb = this.base(from);
    const fw = this.w;
    const tb = this.base(to);
    const tw = this.w;
    for (let i = 1; i < RECORD_WORDS; i++) tw[tb + i] = fw[fb + i];
    tw[tb + R_FROM_REC] = 0;
    tw[tb + R_FROM_SLOT] = 0;
  }

  /** A consistent copy of record `rec` if its sequence is still `seq`, else null. Sets snapDir/snapDirSeq. */
  private snapshot(rec: number, seq: number): NameRecord | null {
    const b = this.base(rec);
    const w = this.w;
    const kind = w[b + R_KIND];
    const out: NameRecord = {
      kind: kind === KIND_DIR ? 'dir' : 'morsel',
      id: kind === KIND_DIR ? 0n : entryToBigInt(w[b + R_ID_LO], w[b + R_ID_HI]),
      generation: w[b + R_GEN] >>> 0,
      sizeBytes: getF64(w, b + R_SIZE),
      uid: w[b + R_UID] >>> 0,
      gid: w[b + R_GID] >>> 0,
      mode: w[b + R_MODE],
      ctimeMs: getF64(w, b + R_CTIME),
      mtimeMs: getF64(w, b + R_MTIME),
      fixedAddress: w[b + R_HAS_FIXED] === 0 ? null : getF64(w, b + R_FIXED),
    };
    const dir = kind === KIND_DIR ? w[b + R_DIR] : 0;
    const dirSeq = kind === KIND_DIR ? w[b + R_DIR_SEQ] : 0;
    if (Atomics.load(w, b + R_SEQ) !== seq) return null;
    if (kind !== KIND_DIR && kind !== KIND_MORSEL) corrupt(`record ${rec} has kind ${kind}`);
    this.snapDir = dir;
    this.snapDirSeq = dirSeq;
    return out;
  }

  private readName(rec: number): string {
    const f = this.recFrame(rec) as Frame;
    const b = this.base(rec);
    const len = this.w[b + R_NAME_LEN];
    const off = this.region.byteOffsetInWindow(f) + ((rec - 1) & (RECORDS_PER_PAGE - 1)) * RECORD_WORDS * 4 + NAME_BYTE;
    return decoder.decode(this.region.bytesOf(f).slice(off, off + len));
  }

  /** Appends slot si's visible entry to `out` if it is a child of (d, sd). */
  private listSlot(si: number, d: number, sd: number, out: { name: string; rec: NameRecord }[]): void {
    const sw = this.sw;
    for (let attempt = 0; attempt < MAX_READ_RETRIES; attempt++) {
      const lo = Atomics.load(sw, si);
      if (lo === 0 || isDead(lo)) return;
      const rec = this.visibleRec(lo);
      if (rec === 0) return;
      const b = this.base(rec);
      const seq = Atomics.load(this.w, b + R_SEQ);
      if (this.w[b + R_PARENT] !== d || this.w[b + R_PARENT_SEQ] !== sd) {
        if (Atomics.load(this.w, b + R_SEQ) === seq && Atomics.load(sw, si) === lo) return;
        continue;
      }
      const name = this.readName(rec);
      const snap = (seq & 1) === 1 ? this.snapshot(rec, seq) : null;
      if (snap !== null && Atomics.load(sw, si) === lo) {
        out.push({ name, rec: snap });
        return;
      }
    }
    busy('list');
  }

  /** The record a non-empty, non-tomb slot word shows (0 if none: an undecided or aborted PENDING). */
  private visibleRec(lo: number): number {
    const r = this.checkedRec(recOf(lo));
    const b = this.base(r);
    const seq = Atomics.load(this.w, b + R_SEQ);
    if (stateOf(lo) === LIVE) return r;
    if (stateOf(lo) === MOVING) return this.checkedRec(this.w[b + R_FROM_REC]);
    const fromSlot = this.w[b + R_FROM_SLOT];
    return this.loadSlot(fromSlot) === enc(r, seq, TOMB) ? r : 0;
  }

  // --- frames: header and tables ----------------------------------------------------

  /**
   * The header frame: root slot 2's table, created zeroed at format
   * (src/paging/walk.ts formatRootTables) and initialized in place on first
   * use (`create`); 0 while it is still all zero. Racing initializers write
   * the same capacity; the magic CAS publishes the header.
   */
  private header(create: boolean): number {
    if (this.hdr !== 0) return this.hdr;
    const f = this.region.loadRootFrame(ROOT_SLOT_NAMES);
    if (!(f > 0 && f < this.region.frameCount)) corrupt(`header frame ${f} outside the region`);
    const w = this.region.words(f as Frame);
    const i = this.region.wordIndex(f as Frame, 0);
    if (Atomics.load(w, i + H_MAGIC) === 0) {
      if (!create) return 0;
      const capLog2 = Math.min(MAX_CAP_LOG2, Math.max(MIN_CAP_LOG2, Math.ceil(Math.log2(SLOTS_PER_FRAME_OF_REGION * this.region.frameCount))));
      Atomics.store(w, i + H_CAP_LOG2, capLog2);
      putF64(w, i + H_CTIME, Date.now());
      crashPoint('names:before-link-table');
      Atomics.compareExchange(w, i + H_MAGIC, 0, HEADER_MAGIC);
    }
    this.adopt(f);
    return f;
  }

  /** Validates header frame `f` and sizes this instance's caches from it. */
  private adopt(f: number): void {
    if (!(f > 0 && f < this.region.frameCount)) corrupt(`header frame ${f} outside the region`);
    const w = this.region.words(f as Frame);
    const i = this.region.wordIndex(f as Frame, 0);
    const capLog2 = w[i + H_CAP_LOG2];
    if (Atomics.load(w, i + H_MAGIC) !== HEADER_MAGIC) corrupt(`header frame ${f} has a bad magic`);
    if (!(capLog2 >= MIN_CAP_LOG2 && capLog2 <= MAX_CAP_LOG2)) corrupt(`table capacity 2^${capLog2} out of range`);
    this.capMask = 2 ** capLog2 - 1;
    this.limitSlots = ((this.capMask + 1) / LOAD_DEN) * LOAD_NUM;
    this.leafFrames = new Int32Array((this.capMask + 1) >>> LEAF_SHIFT);
    this.hw = w;
    this.hi = i;
    this.hdr = f;
  }

  private headerWord(word: number): { w: Int32Array; i: number } {
    const h = this.header(true);
    return { w: this.region.words(h as Frame), i: this.region.wordIndex(h as Frame, word) };
  }

  private loadTableWord(frame: number, word: number): number {
    const v = Atomics.load(this.region.words(frame as Frame), this.region.wordIndex(frame as Frame, word)) >>> 0;
    if (v !== 0 && !(v < this.region.frameCount)) corrupt(`table frame ${v} outside the region`);
    return v;
  }

  /**
   * The lock-free install pattern: word `word` of `frame` holds a table
   * frame, installing a zeroed one by CAS if it is 0 (the loser frees its
   * own). Returns the table frame. (The lead may swap this for the shared
   * walker of src/paging.)
   */
  private installTable(frame: number, word: number): number {
    const cur = this.loadTableWord(frame, word);
    if (cur !== 0) return cur;
    const fresh = this.alloc.alloc(0);
    this.region.zeroFrame(fresh);
    crashPoint('names:before-link-table');
    const w = this.region.words(frame as Frame);
    const prev = Atomics.compareExchange(w, this.region.wordIndex(frame as Frame, word), 0, fresh) >>> 0;
    if (prev === 0) return fresh;
    this.alloc.free(fresh);
    return prev;
  }

  /** The leaf table holding slot `slot` (built when `create`); 0 if absent. */
  private leaf(slot: number, create: boolean): number {
    const li = slot >>> LEAF_SHIFT;
    const cached = this.leafFrames[li];
    if (cached !== 0) return cached >>> 0;
    const h = this.header(create);
    if (h === 0) return 0;
    const top = H_BUCKET_TOP + (li >>> MID_SHIFT);
    const mid = create ? this.installTable(h, top) : this.loadTableWord(h, top);
    if (mid === 0) return 0;
    const leaf = create ? this.installTable(mid, li & MID_MASK) : this.loadTableWord(mid, li & MID_MASK);
    if (leaf !== 0) this.leafFrames[li] = leaf;
    return leaf;
  }

  /** Sets this.sw and returns the index of slot `slot`'s lo word; -1 if its leaf is absent (and not `create`). */
  private slotIndex(slot: number, create: boolean): number {
    const leaf = this.leaf(slot, create);
    if (leaf === 0) return -1;
    this.sw = this.region.words(leaf as Frame);
    return this.region.wordIndex(leaf as Frame, 2 * (slot & LEAF_MASK));
  }

  private loadSlot(slot: number): number {
    if (!(slot >= 0 && slot <= this.capMask)) corrupt(`slot ${slot} out of range`);
    const si = this.slotIndex(slot, false);
    return si < 0 ? 0 : Atomics.load(this.sw, si);
  }

  /** Visits the mid tables under `entries` words of the header from `top`, and their children (`stride` words per child entry). */
  private forEachTable(h: number, top: number, entries: number, children: number, stride: number, visit: (frame: number) => void): void {
    for (let t = 0; t < entries; t++) {
      const mid = this.loadTableWord(h, top + t);
      if (mid === 0) continue;
      visit(mid);
      for (let c = 0; c < children; c++) {
        const child = this.loadTableWord(mid, c * stride);
        if (child !== 0) visit(child);
      }
    }
  }
}

function intoItself(p: PathParser, n: number): never {
  throw new MorselError('EINVAL', `cannot move a directory into itself (${prefix(p, n)})`);
}

/** The first n components of `p` as a path string (for messages). */
function prefix(p: PathParser, n: number): string {
  if (n === 0) return '/';
  return decoder.decode(p.bytes.subarray(0, p.ends[n - 1]));
}
