/**
 * The management layer's facade (`memory.names`): named morsels with owner,
 * group and mode, handles that name an incarnation, region-wide usage counts
 * with unlink semantics, and fixed-address reservations.
 *
 * Example (process A stores, process B reads):
 *
 *   const a = Memory.open('/dev/shm/r');            // process A
 *   const h = a.names.create('/models/w', { sizeBytes: 4 * 1024 });
 *   a.names.write(h, 0, new Uint8Array(new Float32Array([1, 2, 3]).buffer));
 *   a.names.close(h); a.close();
 *
 *   const b = Memory.open('/dev/shm/r');            // process B
 *   const g = b.names.open('/models/w');
 *   const v = new Float32Array(b.names.read(g, 0, 12).buffer);   // 1, 2, 3
 *
 * Commit points (one CAS each; the namespace's are its own):
 *   create  = the name's CAS. The morsel is born PENDING and counted by the
 *             creator's handle; the flag is cleared once named. A crash before
 *             the name leaves a PENDING morsel nobody uses: reapPending
 *             destroys it. A crash after: reapPending sees the name and clears
 *             the flag.
 *   unlink  = the name's removal. Before it, the unlinker counts a use and
 *             marks the morsel PENDING; after it, it
 *             gives the use back: the last use anywhere destroys the morsel.
 *             A crash in between leaves PENDING on a named morsel: cleared.
 *   fixed   = the reservation's CAS (reservations.ts), before the name.
 */
import { MorselError, assert, check } from '../errors.js';
import type { Morsels } from '../morsel/morsels.js';
import { MAX_ORDER, orderBytes, type Order } from '../morsel/order.js';
import { MIN_HUGE_ORDER, decodeIdBits, type MorselId } from '../morsel/id.js';
import type { AddressSpace, Levels } from '../space/address-space.js';
import { PAGE_SIZE, type Frame } from '../units.js';
import { MorselHandle, formatHandle, type MorselRef } from './handle.js';
import { Reservations } from './reservations.js';
import { R_OK, W_OK, X_OK, checkAccess, checkMode, grantedBits, isSuperuser, processCredentials, type AccessRights, type Credentials } from './rights.js';
import { LookupCache } from './lookup-cache.js';
import { notifyWord, waitWord, type WaitResult } from './wait.js';
import type { DirRef, Namespace, NameRecord, NodeKind } from './namespace.js';
import { crashPoint } from '../crash-point.js';

export type { NameRecord, NodeKind } from './namespace.js';

export interface CreateOptions {
  /** logical byte length */
  sizeBytes: number;
  /** chosen from the size when omitted: the smallest order that holds it */
  order?: Order;
  /** permission bits, default 0o600 */
  mode?: number;
  /** a fixed mapping address: creates a meta morsel and reserves its range region-wide */
  fixedAddress?: number;
  /** the paging levels of the spaces it must map into (default 5); 4 refuses what only 5-level paging can map */
  levels?: Levels;
  /** populate 2 MiB leaves (huge pages) where order-9 frames are free; the order is then at least 2 (1 GiB) */
  huge?: boolean;
}

export interface MapRights {
  write?: boolean;
  execute?: boolean;
  /** fixed address (a fixed-address morsel always maps at its own) */
  address?: number;
}

export interface NameStat {
  path: string;
  kind: NodeKind;
  uid: number;
  gid: number;
  mode: number;
  ctimeMs: number;
  mtimeMs: number;
  sizeBytes: number;
  /** morsels only: */
  handle?: string;
  order?: Order;
  fixedAddress?: number | null;
  /** paging levels an address space needs to map it */
  pagingLevels?: Levels;
  dataPages?: number;
  /** the 2 MiB-leaf policy (create's `huge`), and the 2 MiB leaves among the data pages (each counts 512 of them) */
  huge?: boolean;
  hugeLeaves?: number;
  tableFrames?: number;
  /** frames shared with other morsels by copy-on-write, and the table frames per level (index 1..order) */
  sharedFrames?: number;
  tablesByLevel?: number[];
  /** open handles + mappings in all live processes */
  users?: number;
  /** the name points at a destroyed incarnation */
  stale?: boolean;
}

/** 4-level spaces end here; 5-level spaces of this implementation at 2^53 (JS numbers). */
const LIMIT_4_LEVEL = 2 ** 47;
const LIMIT_5_LEVEL = 2 ** 53;
const DEFAULT_FILE_MODE = 0o600;
const DEFAULT_DIR_MODE = 0o755;

/** The smallest order whose virtual size holds `sizeBytes`. */
export function orderForSize(sizeBytes: number): Order {
  check(Number.isSafeInteger(sizeBytes) && sizeBytes > 0, 'EINVAL', () => `size must be a positive integer, got ${sizeBytes}`);
  for (let order = 0; order <= MAX_ORDER; order++) if (orderBytes(order as Order) >= sizeBytes) return order as Order;
  throw new MorselError('ERANGE', `size ${sizeBytes} exceeds the largest morsel (${orderBytes(MAX_ORDER)} bytes)`);
}

export class Names {
  readonly reservations: Reservations;
  readonly cred: Credentials;
  /** this process's positive lookup cache for open() (lookup-cache.ts) */
  readonly lookups: LookupCache;

  constructor(
    readonly morsels: Morsels,
    readonly ns: Namespace,
    opts: { cred?: Credentials; lookupCacheEntries?: number } = {},
  ) {
    this.reservations = new Reservations(morsels.region, morsels.alloc);
    // Frozen: the lookup cache keeps rights per these credentials.
    const cred = opts.cred ?? processCredentials();
    this.cred = Object.freeze({ uid: cred.uid, gid: cred.gid, groups: Object.freeze([...cred.groups]) });
    this.lookups = new LookupCache(ns, opts.lookupCacheEntries);
  }

  // --- path rights ----------------------------------------------------------------

  /** Resolves `path` with search (x) permission on every directory above its last component. */
  private resolve(path: string): NameRecord[] {
    const recs = this.ns.resolve(path);
    this.checkSearch(recs, path);
    return recs;
  }

  /** Search permission on every directory of `recs` (root first) above its last record. */
  private checkSearch(recs: readonly NameRecord[], path: string): void {
    for (let i = 0; i < recs.length - 1; i++) checkAccess(this.cred, recs[i], X_OK, 'search', path);
  }

  /**
   * The directory that will hold `path`'s last component, with write and
   * search permission on it (resolved through the namespace's directory
   * cache: resolveDir).
   */
  private writableParent(path: string): DirRef {
    const dir = this.parentDir(path);
    this.checkWritableDir(dir, path);
    return dir;
  }

  /** The directory of `path`'s last component (EINVAL when it names none), resolved, no permission checked. */
  private parentDir(path: string): DirRef {
    check(typeof path === 'string', 'EINVAL', () => `path must be a string, got ${typeof path}`);
    const cut = path.lastIndexOf('/');
    check(cut < path.length - 1, 'EINVAL', () => `${JSON.stringify(path)} names no entry`);
    return this.ns.resolveParent(path, cut);
  }

  /** Search permission on every directory down to `dir`, and write permission on `dir`, for a change of `path` in it. */
  private checkWritableDir(dir: DirRef, path: string): void {
    this.checkSearch(dir.recs, path);
    checkAccess(this.cred, dir.recs[dir.recs.length - 1], W_OK | X_OK, 'modify', dir.path);
  }

  /**
   * The morsel `path` names and its directory, with write and search
   * permission on it (a missing name is ENOENT before the directory's
   * EACCES, as on Linux).
   */
  private morselInWritableDir(path: string): { rec: NameRecord; dir: DirRef } {
    const dir = this.parentDir(path);
    const rec = this.ns.lookupIn(dir, path);
    this.checkWritableDir(dir, path);
    check(rec.kind === 'morsel', 'EISDIR', () => `${path} is a directory`);
    return { rec, dir };
  }

  private morselAt(path: string): NameRecord {
    const recs = this.resolve(path);
    const rec = recs[recs.length - 1];
    check(rec.kind === 'morsel', 'EISDIR', () => `${path} is a directory`);
    return rec;
  }

  // --- create / open / close -------------------------------------------------------

  /**
   * Creates a morsel named `path` and returns a read-write handle to it (like
   * open with O_CREAT: the creator may write whatever mode it sets).
   */
  create(path: string, opts: CreateOptions): MorselHandle {
    return this.commitCreate(this.beginCreate(path, opts), opts);
  }

  /**
   * Whether `path` names anything now (no permission checked; ENOENT when its
   * directory does not exist). A hint for work that would end in a create:
   * the create itself decides (EEXIST).
   */
  exists(path: string): boolean {
    return this.ns.hasEntry(this.parentDir(path), path);
  }

  /**
   * The first half of create: checks everything create checks, then makes
   * the morsel PENDING and unnamed, counted only by the returned handle.
   * Fill it, then commitCreate names it; close(handle) instead destroys it
   * with every frame it holds. A crash in between leaves a PENDING morsel
   * whose only use died with this process: recovery reaps it.
   */
  beginCreate(path: string, opts: CreateOptions): MorselHandle {
    const sizeBytes = opts.sizeBytes;
    const order = opts.order ?? Math.max(orderForSize(sizeBytes), opts.huge ? MIN_HUGE_ORDER : 0) as Order;
    check(Number.isSafeInteger(sizeBytes) && sizeBytes > 0 && sizeBytes <= orderBytes(order), 'ERANGE', () => `size ${sizeBytes} does not fit an order-${order} morsel (${orderBytes(order)} bytes)`);
    const mode = checkMode(opts.mode ?? DEFAULT_FILE_MODE);
    const fixed = opts.fixedAddress ?? null;
    if (fixed !== null) checkMappable(fixed, order, opts.levels ?? 5);
    this.writableParent(path);
    const huge = !!opts.huge;
    const id = fixed === null ? this.morsels.create(order, { pending: true, huge }) : this.morsels.createMeta(order, { address: fixed, sizeBytes, pending: true, huge });
    // A pending create counted our use already (see Morsels.create); the ID is ours, fresh: no registry check.
    const d = decodeIdBits(id);
    const data = this.morsels.dataOf(d);
    const target = { id, generation: this.morsels.generationOf(d.rootFrame), dataRoot: data.rootFrame, dataOrder: data.order, wordFrame: d.rootFrame, sizeBytes };
    return new MorselHandle(target, { read: true, write: true, execute: (mode & 0o111) !== 0 }, path);
  }

  /**
   * The commit of create for a handle from beginCreate with the same `opts`:
   * reserves the fixed address, publishes the name (the commit point), clears
   * PENDING. On failure (EEXIST...) the handle is closed, which destroys the
   * morsel, and the error is thrown.
   */
  commitCreate(handle: MorselHandle, opts: CreateOptions): MorselHandle {
    const path = handle.path;
    assert(path !== undefined && handle.open, 'commitCreate of an open handle from beginCreate');
    const id = handle.id;
    const order = handle.dataOrder;
    const mode = checkMode(opts.mode ?? DEFAULT_FILE_MODE);
    const fixed = opts.fixedAddress ?? null;
    try {
      if (fixed !== null) this.reservations.reserve({ address: fixed, order, metaRoot: rootOf(id), generation: handle.generation });
      try {
        const now = Date.now();
        this.ns.create(path, { kind: 'morsel', id, generation: handle.generation, sizeBytes: handle.sizeBytes, uid: this.cred.uid, gid: this.cred.gid, mode, ctimeMs: now, mtimeMs: now, fixedAddress: fixed }, this.parentDir(path));
      } catch (e) {
        if (fixed !== null) this.reservations.release({ address: fixed, order, metaRoot: rootOf(id), generation: handle.generation });
        throw e;
      }
    } catch (e) {
      this.close(handle); // the last use of a PENDING morsel: destroys it
      throw e;
    }
    this.morsels.clearPending(rootOf(id), handle.generation);
    return handle;
  }

  /**
   * Opens the morsel named `path`: EACCES unless the mode grants read (and
   * write when asked). Resolutions are cached per process (lookup-cache.ts:
   * exact while the namespace's change epoch stands).
   */
  open(path: string, opts: { write?: boolean } = NO_OPTIONS): MorselHandle {
    const want = R_OK | (opts.write ? W_OK : 0);
    const hit = this.lookups.get(path);
    if (hit !== undefined && (hit.granted & want) === want) {
      if (this.morsels.useKnown(hit.dataRoot, hit.wordFrame, hit.generation)) {
        return new MorselHandle(hit, rightsFor(want, hit.granted), path);
      }
      this.lookups.forget(path); // destroyed or being destroyed: the full path gives ESTALE or waits
    }
    const epoch = this.lookups.begin(); // before the walk (see LookupCache)
    const rec = this.morselAt(path);
    checkAccess(this.cred, rec, want, 'open', path);
    const granted = grantedBits(this.cred, rec);
    const h = this.begin(rec.id, rec.generation, rightsFor(want, granted), rec.sizeBytes, path);
    // A literal, not a spread: a spread object keeps only 4 fields in-object, and a hit would chase its property array.
    const t = h.target;
    this.lookups.put(path, epoch, { id: t.id, generation: t.generation, dataRoot: t.dataRoot, dataOrder: t.dataOrder, wordFrame: t.wordFrame, sizeBytes: t.sizeBytes, granted });
    return h;
  }

  /**
   * Copy-on-write clone of `source` (a path, which needs read permission, an
   * open handle with read rights, or a ref) as a new morsel named `path`, in time
   * independent of its size (src/morsel/cow.ts). The clone is the caller's,
   * with `mode` (default 0o600): its rights never follow the source's. A
   * fixed-address source gives a clone without a fixed address (the
   * address stays reserved for the source). Returns an open handle.
   * EACCES, ESTALE, EEXIST; ENOSPC leaves everything as it was.
   * # Warning: writes inside access sections that were open during the
   * clone, in other processes or in threads whose spaces this Memory does
   * not own, may land in both copies; the shootdown makes every later
   * section write its own copy. Quiesce writers first for an exact snapshot.
   */
  clone(source: string | MorselRef, path: string, opts: { mode?: number } = {}): MorselHandle {
    const mode = checkMode(opts.mode ?? DEFAULT_FILE_MODE);
    const borrowed = source instanceof MorselHandle;
    const src = typeof source === 'string' ? this.open(source) : borrowed ? source : this.openRef(source);
    try {
      check(src.open, 'EBADF', () => `handle ${formatHandle(src)} is closed`);
      check(src.rights.read, 'EACCES', () => `clone of ${formatHandle(src)}: the handle has no read right`);
      const parent = this.writableParent(path);
      this.sharing.check();
      const id = this.morsels.clone(src.id, { pending: true });
      this.sharing.wait();
      const target = { id, generation: this.morsels.generationOf(rootOf(id)), dataRoot: rootOf(id), dataOrder: src.dataOrder, wordFrame: rootOf(id), sizeBytes: src.sizeBytes };
      const handle = new MorselHandle(target, { read: true, write: true, execute: (mode & 0o111) !== 0 }, path);
      try {
        const now = Date.now();
        this.ns.create(path, { kind: 'morsel', id, generation: handle.generation, sizeBytes: src.sizeBytes, uid: this.cred.uid, gid: this.cred.gid, mode, ctimeMs: now, mtimeMs: now, fixedAddress: null }, parent);
      } catch (e) {
        this.close(handle); // the last use of a PENDING morsel: destroys it, giving back its references
        throw e;
      }
      this.morsels.clearPending(rootOf(id), handle.generation);
      return handle;
    } finally {
      if (!borrowed) this.close(src);
    }
  }

  /**
   * Set by Memory for its address spaces: `check` before a clone (EBUSY if
   * this thread is inside an access section, which the wait would wait
   * for), `wait` after it write-protected the source: until every access
   * section that may hold a writable translation of it has ended.
   */
  sharing: { check(): void; wait(): void } = { check: () => {}, wait: () => {} };

  /**
   * Opens an incarnation by its handle text / ref, without a name. Raw refs
   * are the primitive's level: whoever holds one and the region file can
   * reach its bytes anyway, so no mode applies (see rights.ts).
   */
  openRef(ref: MorselRef, opts: { write?: boolean } = {}): MorselHandle {
    const d = this.morsels.decodeHandle(ref.id, ref.generation);
    const sizeBytes = d.meta ? this.morsels.metaOf(d).sizeBytes : orderBytes(d.order);
    return this.begin(ref.id, ref.generation, { read: true, write: !!opts.write, execute: true }, sizeBytes);
  }

  /** Counts the use and builds the handle (ESTALE when the incarnation is gone). */
  private begin(id: bigint, generation: number, rights: { read: boolean; write: boolean; execute: boolean }, sizeBytes: number, path?: string): MorselHandle {
    const use = this.morsels.use(id, generation);
    return new MorselHandle({ id: use.d.id, generation, dataRoot: use.data.rootFrame, dataOrder: use.data.order, wordFrame: use.d.rootFrame, sizeBytes }, rights, path);
  }

  /** Gives the handle's use back; the last use of an unlinked morsel destroys it. EBADF when already closed. */
  close(h: MorselHandle): void {
    if (!h.open) throw new MorselError('EBADF', `handle ${formatHandle(h)} is closed`); // not check(): its message closure would be allocated per close
    h.open = false;
    const t = h.target;
    this.morsels.releaseUse(t.dataRoot, t.wordFrame, t.generation);
  }

  // --- names ---------------------------------------------------------------------

  stat(path: string): NameStat {
    const recs = this.resolve(path);
    const rec = recs[recs.length - 1];
    const base: NameStat = { path, kind: rec.kind, uid: rec.uid, gid: rec.gid, mode: rec.mode, ctimeMs: rec.ctimeMs, mtimeMs: rec.mtimeMs, sizeBytes: rec.sizeBytes };
    if (rec.kind === 'dir') return base;
    const out: NameStat = { ...base, handle: formatHandle({ id: rec.id as MorselId, generation: rec.generation }), fixedAddress: rec.fixedAddress };
    try {
      const d = this.morsels.decodeHandle(rec.id, rec.generation);
      const s = this.morsels.stats(d.id);
      const data = s.data ?? s;
      return { ...out, order: data.order, pagingLevels: levelsFor(rec.fixedAddress, data.order), dataPages: s.dataPages, huge: data.huge, hugeLeaves: s.hugeLeaves, tableFrames: s.tableFrames, sharedFrames: s.sharedFrames, tablesByLevel: s.tablesByLevel, users: this.morsels.usage.total(data.rootFrame), stale: false };
    } catch (e) {
      if (e instanceof MorselError && e.code === 'ESTALE') return { ...out, stale: true };
      throw e;
    }
  }

  list(dirPath: string): { name: string; rec: NameRecord }[] {
    const recs = this.resolve(dirPath);
    const dir = recs[recs.length - 1];
    check(dir.kind === 'dir', 'ENOTDIR', () => `${dirPath} is not a directory`);
    checkAccess(this.cred, dir, R_OK, 'list', dirPath);
    return this.ns.list(dirPath);
  }

  mkdir(path: string, opts: { mode?: number } = {}): void {
    const mode = checkMode(opts.mode ?? DEFAULT_DIR_MODE);
    const parent = this.writableParent(path);
    const now = Date.now();
    this.ns.create(path, { kind: 'dir', id: 0n, generation: 0, sizeBytes: 0, uid: this.cred.uid, gid: this.cred.gid, mode, ctimeMs: now, mtimeMs: now, fixedAddress: null }, parent);
  }

  rmdir(path: string): void {
    this.writableParent(path);
    this.ns.remove(path, 'dir');
  }

  rename(from: string, to: string): void {
    this.writableParent(from);
    this.writableParent(to);
    this.ns.rename(from, to);
  }

  /**
   * Removes the name; the morsel is destroyed now if nobody uses it, else by
   * its last user (in any process). Returns whether it was destroyed now.
   */
  unlink(path: string): boolean {
    for (let attempt = 0; attempt < UNLINK_RETRIES; attempt++) {
      const { rec, dir } = this.morselInWritableDir(path);
      const fast = this.unlinkUnused(path, rec, dir);
      if (fast === 'destroyed') return true;
      if (fast === 'uncommitted') continue; // renamed away, another name moved in: again
      // In use (or being destroyed, or a dangling name): hold a use, remove the name, give the use back.
      const held = this.holdForUnlink(rec);
      let removed: NameRecord | null;
      try {
        // The commit point, only if the name still names what we hold: the
        // morsel that may have moved in under it gets its own hold first.
        removed = this.ns.removeIf(path, { id: rec.id, generation: rec.generation }, dir, rec);
      } catch (e) {
        if (held !== null) this.undoHold(rec, held);
        throw e;
      }
      if (removed !== null) return held !== null && this.finishUnlink(rec, held);
      if (held !== null) this.undoHold(rec, held); // renamed away, another name moved in: again
    }
    throw new MorselError('EBUSY', `unlink ${path}: the name kept changing`);
  }

  /**
   * `destroy` of a name: EBUSY while the morsel is open or mapped in any
   * process, else an unlink (a user racing in after the check defers it to
   * that user's last close). Returns whether it was destroyed now.
   */
  destroy(path: string): boolean {
    this.writableParent(path);
    const rec = this.morselAt(path);
    try {
      const d = this.morsels.dataOf(this.morsels.decodeHandle(rec.id, rec.generation));
      const users = this.morsels.usage.total(d.rootFrame);
      check(users === 0, 'EBUSY', () => `${path} is in use (${users} open handle(s) or mapping(s)); rm defers the destroy instead`);
    } catch (e) {
      if (!(e instanceof MorselError && e.code === 'ESTALE')) throw e; // a dangling name: just remove it
    }
    return this.unlink(path);
  }

  /**
   * unlink's fast path, for a morsel nobody uses: removes the name while
   * holding the morsel's DYING (Morsels.destroyUnused), then destroys it.
   * 'busy' (someone uses it, a destroy is deciding, the name dangles, or it
   * has a fixed address, whose reservation the hold path releases): take
   * the hold path. 'uncommitted': the name names another incarnation now.
   */
  private unlinkUnused(path: string, rec: NameRecord, dir: DirRef): 'destroyed' | 'busy' | 'uncommitted' {
    if (rec.fixedAddress !== null) return 'busy';
    const expect = { id: rec.id, generation: rec.generation };
    try {
      return this.morsels.destroyUnused(rec.id, rec.generation, () => {
        crashPoint('names:unlink-after-dying');
        if (this.ns.removeIf(path, expect, dir, rec) === null) return false;
        crashPoint('names:unlink-after-unname');
        return true;
      });
    } catch (e) {
      if (e instanceof MorselError && e.code === 'ESTALE') return 'busy';
      throw e;
    }
  }

  /** Counts a use of the named incarnation and marks it PENDING; null when the name is dangling. */
  private holdForUnlink(rec: NameRecord): MorselHandle | null {
    let h: MorselHandle;
    try {
      h = this.begin(rec.id, rec.generation, { read: false, write: false, execute: false }, rec.sizeBytes);
    } catch (e) {
      if (e instanceof MorselError && e.code === 'ESTALE') return null;
      throw e;
    }
    this.morsels.markPending(rootOf(rec.id), rec.generation); // we hold a use: it cannot go before our close
    return h;
  }

  /**
   * Takes back an unlink's hold when its name was not the one removed (a
   * rename moved it, or another unlinker removed it first). PENDING is
   * cleared only if a name still points at the morsel: after another
   * unlinker's commit the flag is that unlinker's too, and clearing it would
   * leave an unnamed morsel nobody destroys. Whether it is still named takes
   * a walk of the names (this path needs a race); when no stable view can be
   * had, the flag is cleared (a possible leak, never a dangling name).
   */
  private undoHold(rec: NameRecord, h: MorselHandle): void {
    if (this.stillNamed(rec) !== false) this.morsels.clearPending(rootOf(rec.id), rec.generation);
    this.close(h);
  }

  /** Whether a name points at the incarnation of `rec`; null when no view of the names stayed current. */
  private stillNamed(rec: NameRecord): boolean | null {
    const view = this.currentView(null);
    return view === null ? null : view.named.has(incarnationKey(rootOf(rec.id), rec.generation));
  }

  /** Gives the unlinker's use back; a destroyed fixed-address morsel's reservation is released now. */
  private finishUnlink(rec: NameRecord, h: MorselHandle): boolean {
    this.close(h);
    const root = rootOf(rec.id);
    const destroyed = this.morsels.generationOf(root) !== rec.generation;
    if (destroyed && rec.fixedAddress !== null) {
      this.reservations.release({ address: rec.fixedAddress, order: h.dataOrder, metaRoot: root, generation: rec.generation });
    }
    return destroyed;
  }

  /** Only the owner or root. */
  chmod(path: string, mode: number): void {
    checkMode(mode);
    this.resolve(path);
    this.ns.update(path, (rec) => {
      check(isSuperuser(this.cred) || rec.uid === this.cred.uid, 'EPERM', () => `chmod ${path}: only the owner (uid ${rec.uid}) or root`);
      return { ...rec, mode, ctimeMs: Date.now() };
    });
  }

  /** Only root. */
  chown(path: string, uid: number, gid: number): void {
    check(Number.isInteger(uid) && uid >= 0 && uid < 2 ** 32 && Number.isInteger(gid) && gid >= 0 && gid < 2 ** 32, 'EINVAL', () => `bad owner ${uid}:${gid}`);
    check(isSuperuser(this.cred), 'EPERM', () => `chown ${path}: only root`);
    this.resolve(path);
    this.ns.update(path, (rec) => ({ ...rec, uid, gid, ctimeMs: Date.now() }));
  }

  // --- data through a handle ----------------------------------------------------------

  private checkRange(h: MorselHandle, offset: number, length: number): void {
    check(h.open, 'EBADF', () => `handle ${formatHandle(h)} is closed`);
    check(Number.isSafeInteger(offset) && Number.isSafeInteger(length) && offset >= 0 && length >= 0 && offset + length <= h.sizeBytes, 'ERANGE', () => `[${offset}, ${offset + length}) is outside the ${h.sizeBytes}-byte morsel`);
  }

  /** Reads `length` bytes at `offset` (walking the morsel's own tables; holes read as zeros and stay holes). */
  read(h: MorselHandle, offset: number, length: number): Uint8Array {
    this.checkRange(h, offset, length);
    const out = new Uint8Array(length);
    const region = this.morsels.region;
    for (let done = 0; done < length; ) {
      const at = offset + done;
      const n = Math.min(PAGE_SIZE - (at % PAGE_SIZE), length - done);
      const frame = this.morsels.lookupPage(h.dataRoot as Frame, h.dataOrder, at);
      if (frame >= 0) out.set(region.frame(frame as Frame).subarray(at % PAGE_SIZE, (at % PAGE_SIZE) + n), done);
      done += n;
    }
    return out;
  }

  /** Writes `bytes` at `offset`, populating pages as needed. EBADF without the write right. */
  write(h: MorselHandle, offset: number, bytes: Uint8Array): void {
    this.checkRange(h, offset, bytes.length);
    check(h.rights.write, 'EBADF', () => `handle ${formatHandle(h)} is not open for writing`);
    const region = this.morsels.region;
    if (!region.writable) region.denyWrite(); // before any byte: the mapping is PROT_READ
    const huge = this.hugeOf(h);
    for (let done = 0; done < bytes.length; ) {
      const at = offset + done;
      const n = Math.min(PAGE_SIZE - (at % PAGE_SIZE), bytes.length - done);
      const frame = this.morsels.populateFrom(h.dataRoot as Frame, h.dataOrder, at, huge);
      region.frame(frame).set(bytes.subarray(done, done + n), at % PAGE_SIZE);
      done += n;
    }
  }

  /**
   * Maps the handle's morsel into `space`. The mapping's rights are at most
   * the handle's (EACCES otherwise) and live in its entry (R/W, NX), which
   * the MMU and real hardware enforce. Unmap with space.unmap.
   */
  map(h: MorselHandle, space: AddressSpace, opts: MapRights = {}): number {
    check(h.open, 'EBADF', () => `handle ${formatHandle(h)} is closed`);
    check(!opts.write || h.rights.write, 'EACCES', () => `handle ${formatHandle(h)} is read-only: no writable mapping`);
    check(!opts.execute || h.rights.execute, 'EACCES', () => `handle ${formatHandle(h)} has no execute right`);
    return space.map(h.id, { rights: { write: !!opts.write, execute: !!opts.execute }, generation: h.generation, address: opts.address });
  }

  // --- waiting ------------------------------------------------------------------------

  private wordFrame(h: MorselHandle, offsetBytes: number): Frame {
    this.checkRange(h, offsetBytes, 4);
    check(offsetBytes % 4 === 0, 'EMISALIGNED', () => `offset ${offsetBytes} is not a multiple of 4`);
    return this.morsels.populateFrom(h.dataRoot as Frame, h.dataOrder, offsetBytes, this.hugeOf(h));
  }

  /** The huge-page policy of an open handle's data morsel (its ID, or the meta page's data ID). The handle's use pins the morsel: no live-table check. */
  private hugeOf(h: MorselHandle): boolean {
    return this.morsels.dataOf(decodeIdBits(h.id)).huge;
  }

  /** Blocks while the int32 at `offsetBytes` equals `expected`, at most `timeoutMs` (threads and processes). */
  wait(h: MorselHandle, offsetBytes: number, expected: number, timeoutMs: number): WaitResult {
    check(Number.isInteger(expected) && expected >= -(2 ** 31) && expected < 2 ** 31, 'EINVAL', () => `expected must be an int32, got ${expected}`);
    check(timeoutMs >= 0, 'EINVAL', () => `timeoutMs must be >= 0, got ${timeoutMs}`);
    return waitWord(this.morsels.region, this.wordFrame(h, offsetBytes), offsetBytes % PAGE_SIZE, expected, timeoutMs);
  }

  /** Wakes at most `count` waiters on the int32 at `offsetBytes`; returns how many woke. */
  notify(h: MorselHandle, offsetBytes: number, count: number): number {
    check(Number.isInteger(count) && count >= 0, 'EINVAL', () => `count must be a non-negative integer, got ${count}`);
    return notifyWord(this.morsels.region, this.wordFrame(h, offsetBytes), offsetBytes % PAGE_SIZE, count);
  }

  // --- upkeep -------------------------------------------------------------------------

  /** Every morsel incarnation a name points to, as "rootFrame@generation". */
  namedIncarnations(): Set<string> {
    const out = new Set<string>();
    const walk = (dir: string, depthLeft: number): void => {
      check(depthLeft > 0, 'ECORRUPT', 'namespace deeper than any valid path');
      for (const { name, rec } of this.ns.list(dir)) {
        if (rec.kind === 'dir') walk(dir === '/' ? `/${name}` : `${dir}/${name}`, depthLeft - 1);
        else out.add(incarnationKey(rootOf(rec.id), rec.generation));
      }
    };
    walk('/', MAX_PATH_DEPTH);
    return out;
  }

  /**
   * Destroys unlinked morsels nobody uses and clears PENDING on named ones
   * (crash windows of create/unlink). Safe while others use the region; call
   * after a dead slot is reaped and at recovery.
   *
   * The names are a walk of the tree, directory by directory, and a rename
   * that moves a name from a directory not yet listed into one already
   * listed hides it from that walk: destroying on such a view would leave a
   * dangling name. So a view counts only while the namespace's change epoch
   * stands: no change (rename, unlink, ...) began since the walk started, and
   * none was in flight when it started. A view that goes stale is walked
   * again (bounded); a candidate no current view decides is left PENDING for
   * a later reap. A change left in flight by a dead process never ends (until
   * recovery settles the epoch): after a bounded wait, such a view is
   * accepted when no change began during it (the dead change will not move).
   */
  reapPending(): number {
    let view: NamesView | null = null; // walked at the first candidate, kept while current
    return this.morsels.reapPending((root, generation) => {
      view = this.currentView(view);
      return view === null ? null : view.named.has(incarnationKey(root, generation));
    });
  }

  /** `view` if it is still current, else a new walk that is (at most REAP_VIEWS walks); null if none stayed current. */
  private currentView(view: NamesView | null): NamesView | null {
    for (let walks = 0; ; walks++) {
      if (view !== null && view.complete && this.ns.changeEpoch() === view.epoch) return view;
      if (walks === REAP_VIEWS) return null;
      view = this.namesView();
    }
  }

  /**
   * The named incarnations (`root@generation`) and the change epoch the walk
   * started at; `complete` false if the walk met a directory removed under it.
   * Waits (bounded) for changes in flight to end first.
   */
  private namesView(): NamesView {
    for (let i = 0; i < REAP_SETTLE_WAITS && this.ns.settledEpoch() === null; i++) Atomics.wait(reapSleeper, 0, 0, 1);
    const epoch = this.ns.changeEpoch();
    try {
      return { epoch, named: this.namedIncarnations(), complete: true };
    } catch (e) {
      if (e instanceof MorselError && (e.code === 'ENOENT' || e.code === 'ENOTDIR')) return { epoch, named: new Set(), complete: false };
      throw e;
    }
  }
}

const NO_OPTIONS = Object.freeze({});

/** The named incarnations as of a walk that began at change epoch `epoch` (`complete` false: a directory vanished under it). */
interface NamesView {
  epoch: number;
  named: Set<string>;
  complete: boolean;
}

/** The key of incarnation `generation` of the morsel rooted at `root` in namedIncarnations(). */
const incarnationKey = (root: number, generation: number): string => `${root}@${generation}`;

/** Attempts of one unlink while renames keep moving other morsels under its name. */
const UNLINK_RETRIES = 64;
/** Walks of the names one reapPending makes at most (each a whole-tree walk). */
const REAP_VIEWS = 8;
/** 1 ms waits for changes in flight to end before a walk (a dead process's change never does). */
const REAP_SETTLE_WAITS = 20;
const reapSleeper = new Int32Array(new SharedArrayBuffer(4));

/** The rights of a handle opened for `want` (R_OK, W_OK) by credentials holding `granted`: shared frozen objects, no allocation. */
function rightsFor(want: number, granted: number): Readonly<AccessRights> {
  return HANDLE_RIGHTS[((want & W_OK) !== 0 ? 2 : 0) | ((granted & X_OK) !== 0 ? 1 : 0)];
}

const HANDLE_RIGHTS: readonly Readonly<AccessRights>[] = [0, 1, 2, 3].map((i) => Object.freeze({ read: true, write: (i & 2) !== 0, execute: (i & 1) !== 0 }));

/** A path of 4096 bytes has at most 2048 components. */
const MAX_PATH_DEPTH = 2048;

const rootOf = (id: bigint): number => Number((BigInt.asUintN(64, id) >> 12n) & 0xffffffffffn);

function levelsFor(address: number | null, order: Order): Levels {
  return order === MAX_ORDER || (address !== null && address + orderBytes(order) > LIMIT_4_LEVEL) ? 5 : 4;
}

/** ERANGE for an address no address space of `levels` levels can map. */
export function checkMappable(address: number, order: Order, levels: Levels): void {
  check(Number.isSafeInteger(address) && address >= 0, 'EINVAL', () => `fixed address must be a non-negative integer, got ${address}`);
  check(address % orderBytes(order) === 0, 'EMISALIGNED', () => `fixed address 0x${address.toString(16)} is not aligned to the order-${order} size 0x${orderBytes(order).toString(16)}`);
  const end = address + orderBytes(order);
  check(end <= LIMIT_5_LEVEL, 'ERANGE', () => `[0x${address.toString(16)}, 0x${end.toString(16)}) is beyond every address space (5-level spaces end at 0x${LIMIT_5_LEVEL.toString(16)})`);
  if (levels === 4) {
    check(order < MAX_ORDER && end <= LIMIT_4_LEVEL, 'ERANGE', () => `[0x${address.toString(16)}, 0x${end.toString(16)}) needs 5-level paging (4-level spaces end at 0x${LIMIT_4_LEVEL.toString(16)}${order === MAX_ORDER ? ' and cannot hold order 4' : ''})`);
  }
}
