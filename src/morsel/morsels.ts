/**
 * The morsel primitive (thesis ch. 3): create, lazy lock-free population,
 * explicit batch population, inspection and crash-consistent destroy, plus
 * meta morsels. Every live morsel is registered in the live table (root slot
 * 0, keyed by root frame), so it is reachable after a restart.
 *
 * Crash windows, all closed by recovery rebuilding the allocator from what is
 * reachable (see src/recovery): a frame allocated but not yet linked by its
 * CAS; a root created but not yet registered (create rolls back); a destroy
 * after unregistering (it rolls forward: the whole subtree is unreachable).
 * Each window is marked with a crashPoint() for the torture harness.
 */
import { MorselError, assert, check } from '../errors.js';
import { FrameAllocator } from '../alloc/llfree.js';
import { firstAllocatableFrame } from '../physical/layout.js';
import { ROOT_SLOT_LIVE_TABLE } from '../physical/superblock.js';
import { WINDOW_FRAME_SHIFT, type Region } from '../physical/region.js';
import { HI_HUGE, LAZY_REF, RW, entryToBigInt, isPresent, pfnOf } from '../paging/entry.js';
import { ENTRIES_PER_TABLE, HUGE_ALLOC_ORDER, HUGE_FRAMES, Walker, isLeafEntry } from '../paging/walk.js';
import { PAGE_SIZE, type Frame } from '../units.js';
import { MIN_HUGE_ORDER, decodeIdBits, encodeId, hex, type DecodedId, type MorselId } from './id.js';
import { entrySpan, orderBytes, tableIndex, type Order } from './order.js';
import { Registry, superblockRoot } from './registry.js';
import { META_DATA_ID_ENTRY, readMetaPage, writeMetaPage, type MetaInfo } from './meta.js';
import { crashPoint } from '../crash-point.js';
import { MorselWords, W_DYING, W_FLAGS, W_PENDING, deadWord, liveWord, wordGeneration, wordLive, wordMeta, wordOrder, wordTag } from './words.js';
import { Usage } from './usage.js';
import { Cow } from './cow.js';

/** Attempts of one destroy decision / one counted use before giving up (each retry means another party moved). */
const DECISION_RETRIES = 64;
/** populateRange fills a level-1 range of at least this many pages in one batch (populateLeaves); shorter ones page by page. */
const BATCH_LEAVES_MIN_PAGES = 16;
/** How long a user backs off while a destroyer holds DYING (it holds it for one scan of the user slots). */
const DYING_BACKOFF_MS = 1;
const backoffCell = new Int32Array(new SharedArrayBuffer(4));

/** A counted use of a morsel (an open handle or a mapping): see Morsels.use. */
export interface Use {
  d: DecodedId;
  data: DecodedId;
  generation: number;
}

export interface MorselStats {
  id: MorselId;
  order: Order;
  meta: boolean;
  rootFrame: number;
  /** page-table frames in the subtree, including the root table */
  tableFrames: number;
  /** data pages in the subtree, 4 KiB each (order 0: the root itself; a 2 MiB leaf counts 512) */
  dataPages: number;
  /** 2 MiB leaves among them, and the policy that builds them (create's `huge`) */
  hugeLeaves: number;
  huge: boolean;
  /** frames shared with other morsels by copy-on-write (their count, or a table's above them, is above 1) */
  sharedFrames: number;
  /** table frames per level (index 1..order; index 0 unused) */
  tablesByLevel: number[];
  virtualBytes: number;
  /** for a meta morsel: its metadata and the data morsel's stats */
  metaInfo?: MetaInfo;
  data?: MorselStats;
}

export class Morsels {
  readonly live: Registry;
  /** Every table access of this instance goes through it (src/paging/walk.ts). */
  readonly walker: Walker;
  /** identity and state of each morsel, by root frame (words.ts) */
  readonly words: MorselWords;
  /** region-wide usage counts (usage.ts) */
  readonly usage: Usage;
  /** copy-on-write: shared subtrees and their reference counts (cow.ts) */
  readonly cow: Cow;
  private readonly firstFrame: number;
  /** destroy's scratch: the pages of one leaf table, freed in one batch */
  private readonly pageBatch = new Int32Array(ENTRIES_PER_TABLE);

  constructor(
    readonly region: Region,
    readonly alloc: FrameAllocator,
  ) {
    this.walker = new Walker(region, alloc);
    this.live = new Registry(region, alloc, superblockRoot(region, ROOT_SLOT_LIVE_TABLE));
    this.firstFrame = firstAllocatableFrame(region.frameCount);
    this.words = new MorselWords(region);
    this.usage = new Usage(region, alloc);
    this.cow = new Cow(region, alloc, this.walker);
  }

  // --- create -----------------------------------------------------------------

  /**
   * Creates a morsel of `order`: one 4 KiB root, whatever the order (thesis
   * Fig 3.2). `pending`: born unlinked (PENDING) and with one use counted
   * for the caller, who names it next, clears the flag and gives the use
   * back with release() (a crash in between leaves a PENDING morsel whose
   * count died with the slot: reapPending destroys it).
   *
   * # Warning: the creator's use is counted BEFORE the ID is registered. A
   * registered PENDING morsel with no count is fair game for any reaper
   * (see unuse), so counting after registering would let a stranger
   * destroy it before its creator ever used it.
   */
  create(order: Order, opts: { pending?: boolean; huge?: boolean } = {}): MorselId {
    checkHuge(order, !!opts.huge);
    const root = this.zeroedFrame();
    const id = encodeId(root, order, false, opts.huge);
    this.setWord(root, order, false, opts.pending ? W_PENDING : 0);
    crashPoint('create:before-register');
    this.registerOrFree(id, opts.pending ? root : -1, root);
    return id;
  }

  /**
   * Marks the fresh root `root` live in its morsel word, before the ID is
   * published. A word still tagged live is left over from a create or destroy
   * a crash interrupted: its generation may have been handed out, so it is
   * bumped. The creator owns the frame, so a store suffices.
   */
  private setWord(root: Frame, order: Order, meta: boolean, flags: number): void {
    const w = this.words.load(root);
    const generation = wordLive(w) ? wordGeneration(deadWord(wordGeneration(w))) : wordGeneration(w);
    this.words.store(root, liveWord(generation, order, meta, flags));
  }

  /** The current generation of the morsel rooted at `rootFrame` (live or not). */
  generationOf(rootFrame: number): number {
    return wordGeneration(this.words.load(rootFrame));
  }

  /**
   * Creates a meta morsel (an order-0 page of metadata) for a fresh data
   * morsel of `order` that always maps at `address`.
   */
  createMeta(order: Order, opts: { address: number; sizeBytes?: number; pending?: boolean; huge?: boolean }): MorselId {
    checkHuge(order, !!opts.huge);
    // `pending`: as for create(); the use counts the data morsel (the usage key).
    const size = opts.sizeBytes ?? orderBytes(order);
    check(Number.isSafeInteger(opts.address) && opts.address >= 0, 'EINVAL', () => `meta address must be a non-negative integer, got ${opts.address}`);
    check(opts.address % orderBytes(order) === 0, 'EMISALIGNED', () => `address 0x${opts.address.toString(16)} is not aligned to the order-${order} size`);
    check(Number.isSafeInteger(size) && size > 0 && size <= orderBytes(order), 'ERANGE', () => `size ${size} does not fit an order-${order} morsel`);
    // The data morsel is not registered: it is reachable through its meta morsel.
    const dataRoot = this.zeroedFrame();
    crashPoint('createMeta:before-meta-page');
    let metaPage: Frame;
    try {
      metaPage = this.zeroedFrame();
    } catch (e) {
      this.alloc.free(dataRoot); // ENOSPC: an error path must not leak the data root
      throw e;
    }
    const dataId = encodeId(dataRoot, order, false, opts.huge);
    writeMetaPage(this.region, metaPage, { address: opts.address, sizeBytes: size, createdMs: Date.now(), dataId });
    const id = encodeId(metaPage, 0, true);
    this.setWord(metaPage, 0, true, opts.pending ? W_PENDING : 0);
    crashPoint('createMeta:before-register');
    this.registerOrFree(id, opts.pending ? dataRoot : -1, dataRoot, metaPage);
    return id;
  }

  /**
   * Copy-on-write clone (cow.ts): a new plain morsel of the data order of
   * `id` whose root shares every child of the source's root, so the time
   * does not depend on the size (one pass over one root table, no count
   * raised: lazy.ts; order 0: one page copied). `pending` as for create(). The caller holds
   * a use of `id` (a destroy cannot run meanwhile). Writes in access
   * sections open during the clone may reach both copies: see Names.clone.
   */
  clone(id: bigint, opts: { pending?: boolean } = {}): MorselId {
    const data = this.dataOf(this.decode(id));
    const root = this.cow.copyOf(data.rootFrame, data.order);
    const cloneId = encodeId(root, data.order, false, data.huge);
    this.setWord(root, data.order, false, opts.pending ? W_PENDING : 0);
    crashPoint('clone:before-register');
    try {
      this.registerOrFree(cloneId, opts.pending ? root : -1);
    } catch (e) {
      this.cow.freeSubtree(root, data.order); // a detached copy: its counted children get their references back
      throw e;
    }
    // The source's root entries lost RW: cached writable translations must go.
    this.region.bumpShootdown();
    return cloneId;
  }

  /**
   * Registers `id`, the commit point of a create. Growing the live table can
   * fail (ENOSPC); then the unregistered frames are freed here: a crash
   * would let recovery reclaim them, but a clean close would keep them
   * allocated and unreachable forever. `usedKey` (pending creates, else
   * -1): the usage key under which the creator's use is counted first.
   */
  private registerOrFree(id: MorselId, usedKey: number, ...frames: Frame[]): void {
    const d = decodeIdBits(id);
    let counted = false;
    try {
      if (usedKey >= 0) this.usage.add(usedKey, d.rootFrame);
      counted = usedKey >= 0;
      this.live.add(d.rootFrame, d.lo, d.hi);
    } catch (e) {
      if (counted) this.usage.sub(usedKey); // never registered: nobody else saw it
      this.words.store(d.rootFrame, deadWord(this.generationOf(d.rootFrame)));
      for (const f of frames) this.alloc.free(f);
      throw e;
    }
  }

  private zeroedFrame(): Frame {
    return this.walker.zeroedFrame();
  }

  // --- decode -------------------------------------------------------------------

  /**
   * Validates an ID against this region: structure, PFN inside the
   * allocatable range, root frame allocated, and registered as live (which
   * also rejects an ID whose order or flags were altered).
   */
  decode(id: bigint): DecodedId {
    return this.decodeChecked(decodeIdBits(id));
  }

  /** decode() of structurally valid ID bits. */
  private decodeChecked(d: DecodedId): DecodedId {
    const id = d.id;
    check(d.rootFrame >= this.firstFrame && d.rootFrame < this.region.frameCount, 'EINVAL', () => `morsel ID ${hex(id)}: root frame ${d.rootFrame} outside the allocatable range`);
    check(this.alloc.isAllocated(d.rootFrame), 'EINVAL', () => `morsel ID ${hex(id)}: root frame ${d.rootFrame} is free`);
    const reg = this.live.get(d.rootFrame);
    check(reg !== null && reg[0] === d.lo && reg[1] === d.hi, 'EINVAL', () => `morsel ID ${hex(id)} is not a live morsel`);
    // The word is the second record of the order: destroy clears it only
    // after unregistering, so a registered ID with a disagreeing word is damage.
    const w = this.words.load(d.rootFrame);
    if (!wordLive(w) || wordTag(w) !== d.order + 1 || wordMeta(w) !== d.meta) {
      const still = this.live.get(d.rootFrame);
      check(still === null || still[0] !== d.lo || still[1] !== d.hi, 'ECORRUPT', () => `morsel ID ${hex(id)} is registered but its morsel word (0x${(w >>> 0).toString(16)}) disagrees`);
      throw new MorselError('EINVAL', `morsel ID ${hex(id)} is not a live morsel`);
    }
    return d;
  }

  /**
   * Validates a handle: the ID of the incarnation `generation`. ESTALE when
   * that incarnation was destroyed (whatever lives on its frames now).
   */
  decodeHandle(id: bigint, generation: number): DecodedId {
    const bits = decodeIdBits(id);
    check(bits.rootFrame >= this.firstFrame && bits.rootFrame < this.region.frameCount, 'EINVAL', () => `morsel ID ${hex(id)}: root frame ${bits.rootFrame} outside the allocatable range`);
    check(Number.isInteger(generation) && generation >= 0, 'EINVAL', () => `bad generation ${generation}`);
    const stale = (): boolean => {
      const w = this.words.load(bits.rootFrame);
      return !wordLive(w) || wordGeneration(w) !== generation;
    };
    if (stale()) throw new MorselError('ESTALE', `morsel ${hex(id)}@${generation} was destroyed`);
    try {
      return this.decodeChecked(bits);
    } catch (e) {
      // # Warning: the word of incarnation g goes: live + unregistered
      // (create, before its commit) -> registered -> [DYING -> registered]*
      // -> DYING + unregistered (destroy committing) -> dead, generation g+1.
      // Only the destroyer holding DYING unregisters, and it bumps the
      // generation before letting go, so for a generation anyone obtained
      // from a registered ID (a use, a name, a live-table entry) "not
      // registered" means DYING or stale here. A word live in `generation`
      // but never registered yet is a guessed handle: EINVAL, as for any
      // unregistered ID.
      // One load: two (stale, then DYING) could see DYING's incarnation as
      // not yet stale, then its dead word (next generation, no flags) as not DYING.
      const w = this.words.load(bits.rootFrame);
      if (!wordLive(w) || wordGeneration(w) !== generation || (w & W_DYING) !== 0) throw new MorselError('ESTALE', `morsel ${hex(id)}@${generation} was destroyed`);
      throw e;
    }
  }

  /**
   * The generation of the incarnation a bare ID names now, for a use or
   * destroy that then decodes it as a handle. # Warning: the word is read
   * AFTER one decode and validated by a second (decodeHandle): a generation
   * read after a single decode may belong to a re-created root still in its
   * create window (live, unregistered), which no use or destroy may touch.
   */
  private currentGeneration(id: bigint): number {
    return this.generationOf(this.decode(id).rootFrame);
  }

  // --- use: the user side of the destroy decision -----------------------------------

  /**
   * Counts one use (an open handle or a mapping) of `id` (of incarnation
   * `generation`, when given) in this process's usage registry and returns
   * it; the caller gives it back with release(). ESTALE if destroyed, EBUSY
   * if a destroy keeps deciding.
   *
   * Dekker, user side (the destroyer's side is in destroy()): the count is
   * incremented FIRST, then the morsel word is re-read. JS atomics are
   * sequentially consistent, so either this re-read sees the destroyer's
   * DYING (we back off) or the destroyer's scan of the counts sees ours (it
   * backs off): never both miss. Crash windows: dying between increment and
   * re-check leaves only this slot's count, which stops counting once the
   * slot is dead (Usage.total skips dead slots).
   */
  use(id: bigint, generation?: number): Use {
    for (let attempt = 0; attempt < DECISION_RETRIES; attempt++) {
      const gen = generation ?? this.currentGeneration(id);
      const d = this.decodeHandle(id, gen);
      const data = this.dataOfLive(d, gen);
      this.usage.add(data.rootFrame, d.rootFrame);
      const w = this.words.load(d.rootFrame);
      if (wordLive(w) && wordGeneration(w) === gen && (w & W_DYING) === 0) return { d, data, generation: gen };
      this.unuse(data.rootFrame, d.rootFrame);
      if (!wordLive(w) || wordGeneration(w) !== gen) throw new MorselError('ESTALE', `morsel ${hex(id)}@${gen} was destroyed`);
      Atomics.wait(backoffCell, 0, 0, DYING_BACKOFF_MS); // a destroyer is deciding: it commits or backs off
    }
    throw new MorselError('EBUSY', `morsel ${hex(id)}: a destroy kept deciding through ${DECISION_RETRIES} attempts`);
  }

  /**
   * use() of an incarnation this process used before, so its data root and
   * word frame are known (the word lives in `wordFrame`, generation
   * `generation`): no decode. False (nothing counted) when the word is not
   * live in `generation` or DYING: the caller then takes the full use() path
   * (ESTALE, or a wait for the destroyer's decision).
   * The word is checked BEFORE counting: a word live in `generation` means
   * the incarnation is registered or DYING (see decodeHandle), so `dataRoot`
   * is still its data root when we count, exactly as after use()'s decode;
   * the re-check after counting is use()'s Dekker side, unchanged.
   */
  useKnown(dataRoot: number, wordFrame: number, generation: number): boolean {
    const before = this.words.load(wordFrame);
    if (!wordLive(before) || wordGeneration(before) !== generation || (before & W_DYING) !== 0) return false;
    this.usage.add(dataRoot, wordFrame);
    const w = this.words.load(wordFrame);
    if (wordLive(w) && wordGeneration(w) === generation && (w & W_DYING) === 0) return true;
    this.unuse(dataRoot, wordFrame);
    return false;
  }

  /**
   * Takes back the count of a use that never began.
   *
   * # Warning: between its increment and this decrement the count sat on the
   * root frame, whatever incarnation lives there: our stale incarnation may
   * have been destroyed and the frame re-created, named, unlinked and
   * released in between, its last releaser seeing our count (left > 0, no
   * reap) or its destroyer deferring to it. So whoever drops this process's
   * count to 0 reaps, here too: the incarnation in the word NOW, if it is
   * PENDING and registered (a word read in a create's window, live but not
   * yet registered, is left to its creator, who counts its own use).
   */
  private unuse(dataRoot: number, wordFrame: number): void {
    if (this.usage.sub(dataRoot) > 0) return;
    const w = this.words.load(wordFrame);
    if (wordLive(w) && (w & W_PENDING) !== 0 && this.registered(wordFrame, w)) this.reapIfPending(wordFrame, wordGeneration(w));
  }

  /** dataOf for a use: a meta page freed under us reads as ESTALE, not ECORRUPT. */
  private dataOfLive(d: DecodedId, generation: number): DecodedId {
    try {
      return this.dataOf(d);
    } catch (e) {
      const w = this.words.load(d.rootFrame);
      if (!wordLive(w) || wordGeneration(w) !== generation) throw new MorselError('ESTALE', `morsel ${hex(d.id)}@${generation} was destroyed`);
      throw e;
    }
  }

  /**
   * Gives back one use of the data morsel rooted at `dataRoot`. The last use
   * (in any process) of a PENDING morsel destroys it.
   *
   * # Warning: the incarnation is read BEFORE the count drops. While our use
   * is counted no destroyer can commit (Dekker, see use()), so the word's
   * generation is ours. Once the count is 0 the root may be destroyed by
   * another releaser, freed and re-created (a create sets the word live and
   * PENDING before it registers the ID): reaping "whatever lives there now"
   * would destroy a stranger, or find a live, unregistered, not-DYING word
   * (decode: EINVAL). So the reap is for our generation only.
   */
  release(dataRoot: number): void {
    const wordFrame = this.usage.wordFrameOf(dataRoot);
    this.releaseUse(dataRoot, wordFrame, this.generationOf(wordFrame));
  }

  /**
   * release() for a caller that knows the use it holds: the morsel word's
   * frame and the incarnation's generation (a handle keeps both from its
   * use; while the use is counted they cannot change, see release()).
   */
  releaseUse(dataRoot: number, wordFrame: number, generation: number): void {
    if (this.usage.sub(dataRoot) === 0) this.reapIfPending(wordFrame, generation);
  }

  /**
   * Destroys incarnation `generation` of the PENDING morsel whose word is in
   * `rootFrame` if nobody uses it; false if it is gone, not PENDING or used.
   * `generation` must be one the caller saw registered (a use, a live-table
   * entry): a word live in that generation is then registered or DYING (see
   * decodeHandle). While another destroyer holds DYING we wait for its
   * decision: if it backed off because of a use that has since gone (ours),
   * one of us must retry, and destroy() re-checks after backing off too.
   */
  reapIfPending(rootFrame: number, generation: number): boolean {
    for (let attempt = 0; attempt < DECISION_RETRIES; attempt++) {
      const w = this.words.load(rootFrame);
      if (!wordLive(w) || wordGeneration(w) !== generation || (w & W_PENDING) === 0) return false;
      if (w & W_DYING) {
        Atomics.wait(backoffCell, 0, 0, DYING_BACKOFF_MS);
        continue;
      }
      try {
        // Through destroy(): the ID is checked against the live table again (decodeHandle) before anything is decided.
        return this.destroy(this.idOfWord(rootFrame, w), { generation, defer: true }) === 'destroyed';
      } catch (e) {
        if (!(e instanceof MorselError) || (e.code !== 'EBUSY' && e.code !== 'ESTALE')) throw e;
      }
    }
    return false; // left PENDING: reapPending() collects it
  }

  /**
   * Destroys every PENDING morsel nobody uses (after a dead slot is reaped,
   * at recovery). `named(rootFrame, generation)` says whether a name still
   * points at it: then the unlink never committed (a crash came between
   * marking and unnaming, or naming and unmarking) and the flag is cleared;
   * null: undecidable now, left PENDING. Returns the number destroyed.
   */
  reapPending(named: (rootFrame: number, generation: number) => boolean | null = () => false): number {
    const pending: number[] = [];
    this.live.forEach((root) => {
      if (this.words.load(root) & W_PENDING) pending.push(root);
    });
    let destroyed = 0;
    for (const root of pending) {
      // The word first, then its registration: a word read in a create's
      // window (live, PENDING, not yet registered) is never reaped.
      const w = this.words.load(root);
      // DYING: its holder decides (destroyUnused may hold PENDING on a named morsel); if it died, its reaper clears DYING first.
      if (!wordLive(w) || (w & W_PENDING) === 0 || (w & W_DYING) !== 0 || !this.registered(root, w)) continue;
      if (this.usage.total(this.dataRootOf(root, w)) > 0) continue;
      const isNamed = named(root, wordGeneration(w));
      if (isNamed === null) continue; // undecidable now (names.ts): left PENDING
      if (isNamed) this.words.cas(root, w, w & ~W_PENDING);
      else if (this.reapIfPending(root, wordGeneration(w))) destroyed++;
    }
    return destroyed;
  }

  /** Whether the morsel of live word `w` at `root` is in the live table. */
  private registered(root: number, w: number): boolean {
    const d = decodeIdBits(this.idOfWord(root, w));
    const reg = this.live.get(root);
    return reg !== null && reg[0] === d.lo && reg[1] === d.hi;
  }

  /**
   * The ID of the morsel of live word `w` at `root`: order and meta flag from
   * the word, the huge policy (which the word has no room for) from its
   * live-table entry. registered() still compares every other bit.
   */
  private idOfWord(root: number, w: number): MorselId {
    const reg = this.live.get(root);
    const huge = reg !== null && (reg[1] & HI_HUGE) !== 0 && !wordMeta(w) && wordOrder(w) >= MIN_HUGE_ORDER;
    return encodeId(root as Frame, wordOrder(w), wordMeta(w), huge);
  }

  private dataRootOf(root: number, w: number): number {
    return wordMeta(w) ? this.dataOf(decodeIdBits(encodeId(root as Frame, 0, true))).rootFrame : root;
  }

  /**
   * For whoever reaps dead user slot `slot`, before its usage registry is
   * dropped: DYING left by a destroyer that died in that slot is cleared,
   * unless a live slot claims the morsel too (then a live destroyer may hold
   * it: see usage.ts). A destroy that had already unregistered the morsel
   * leaves nothing live to clear (its frames wait for a full recovery).
   */
  releaseDeadDying(slot: number): number {
    let cleared = 0;
    this.usage.forEachClaim(slot, (key, wordFrame) => {
      const w = this.words.load(wordFrame);
      if ((w & W_DYING) === 0 || !wordLive(w) || this.usage.claimedByLive(key, slot)) return;
      if (this.live.get(wordFrame) !== null && this.words.cas(wordFrame, w, w & ~W_DYING)) cleared++;
    });
    return cleared;
  }

  /**
   * Recovery only (no other user alive): a destroy a crash interrupted
   * before its commit left DYING on a morsel that is still live; clear it.
   */
  clearDying(): number {
    let cleared = 0;
    this.live.forEach((root) => {
      const w = this.words.load(root);
      if (w & W_DYING && this.words.cas(root, w, w & ~W_DYING)) cleared++;
    });
    return cleared;
  }

  /**
   * Recovery only (the region alone): a create killed between recording its
   * live word and registering leaves a live word on a frame no morsel owns
   * (recovery has freed the frame). It would keep that incarnation looking
   * alive — e.g. a reservation top pointing at it would never read as stale
   * — so every live word of a frame that is neither a registered root nor a
   * registered meta morsel's data root is declared dead (next generation).
   * Returns how many.
   */
  clearUnownedWords(): number {
    const owned = new Set<number>();
    this.live.forEach((root, lo, hi) => {
      owned.add(root);
      const d = decodeIdBits(entryToBigInt(lo, hi));
      if (d.meta) owned.add(this.dataOf(d).rootFrame);
    });
    let cleared = 0;
    this.words.forEachLive(this.firstFrame, this.region.frameCount, (f, w) => {
      if (owned.has(f)) return;
      this.words.store(f, deadWord(wordGeneration(w)));
      cleared++;
    });
    return cleared;
  }

  /** Sets PENDING on a live incarnation (an unlink about to commit). False if the incarnation is gone. */
  markPending(rootFrame: number, generation: number): boolean {
    return this.changePending(rootFrame, generation, true);
  }

  /** Clears PENDING on a live incarnation (a name now points at it). False if the word moved. */
  clearPending(rootFrame: number, generation: number): boolean {
    return this.changePending(rootFrame, generation, false);
  }

  /** One CAS of the PENDING flag; never while a destroyer holds DYING (the word is the destroyer's then). */
  private changePending(rootFrame: number, generation: number, on: boolean): boolean {
    for (let attempt = 0; attempt < DECISION_RETRIES; attempt++) {
      const w = this.words.load(rootFrame);
      if (!wordLive(w) || wordGeneration(w) !== generation) return false;
      if (w & W_DYING) {
        Atomics.wait(backoffCell, 0, 0, DYING_BACKOFF_MS);
        continue;
      }
      if (this.words.cas(rootFrame, w, on ? w | W_PENDING : w & ~W_PENDING)) return true;
    }
    return false;
  }

  /** The data morsel an ID stands for: itself, or a meta morsel's data morsel. */
  dataOf(d: DecodedId): DecodedId {
    if (!d.meta) return d;
    const info = this.metaOf(d);
    let data: DecodedId;
    try {
      data = decodeIdBits(info.dataId);
    } catch (e) {
      throw new MorselError('ECORRUPT', `meta page in frame ${d.rootFrame}: its data ID is invalid (${(e as Error).message})`);
    }
    // The data ID is metadata like any entry: its root is followed only if the walker would follow it.
    this.walker.root(data.rootFrame, () => `meta page in frame ${d.rootFrame} (data ID)`);
    check(!data.meta && info.sizeBytes <= orderBytes(data.order), 'ECORRUPT', () => `meta page in frame ${d.rootFrame}: data ID ${hex(info.dataId)} does not fit its size ${info.sizeBytes}`);
    return data;
  }

  metaOf(d: DecodedId): MetaInfo {
    assert(d.meta, 'metaOf on a meta morsel');
    return readMetaPage(this.region, d.rootFrame);
  }

  // --- population -----------------------------------------------------------------

  /**
   * The fault handler (thesis 3.4): walks from `table` (a level-`level`
   * table of the morsel; its root, or where the MMU's walk found the missing
   * entry, so a fault never walks the levels above again) to the data page
   * for byte `offset`, creating each missing table or page with the
   * lock-free protocol: check, allocate, prepare, CAS; a lost CAS frees the
   * frame and continues with the winner's. Returns the data frame. `offset`
   * may also be the faulting virtual address: morsels are naturally aligned,
   * so the table indices below the morsel's top are the same.
   */
  populateFrom(table: Frame, level: number, offset: number, huge = false): Frame {
    for (let l = level; l >= 1; l--) {
      table = this.writableChild(table, tableIndex(offset, l), l, huge);
      if (this.cow.leafHuge) return (table + tableIndex(offset, 1)) as Frame; // inside a 2 MiB leaf
    }
    return table;
  }

  /**
   * Child of the level-`level` table `table` at `idx`, created if missing
   * (a 2 MiB leaf at level 2 with `huge` while order-9 frames last) and made
   * private if shared (cow.ts). cow.leafHuge tells whether it is a leaf.
   */
  private writableChild(table: Frame, idx: number, level: number, huge: boolean): Frame {
    return this.cow.writableChild(table, idx, level, 'populate:before-link', 'populate:lost-race', huge);
  }

  /** The data frame for `offset` if populated, else -1. Never allocates. */
  lookupPage(root: Frame, order: Order, offset: number): number {
    return this.walker.descend(root, order, offset, 0);
  }

  /**
   * Explicit batch population of [offset, offset + length) (thesis future
   * work, exmap-style): one descent per table instead of one walk per page.
   * Returns the number of frames it created.
   */
  populate(id: bigint, offset: number, length: number): number {
    const d = this.dataOf(this.decode(id));
    const size = orderBytes(d.order);
    check(Number.isSafeInteger(offset) && Number.isSafeInteger(length) && offset >= 0 && length >= 0 && offset + length <= size, 'ERANGE', () => `range [${offset}, ${offset + length}) outside the ${size}-byte morsel`);
    if (d.order === 0 || length === 0) return 0;
    const first = Math.floor(offset / PAGE_SIZE);
    const last = Math.floor((offset + length - 1) / PAGE_SIZE);
    const before = this.walker.linkedFrames;
    this.populateRange(d.rootFrame, d.order, first, last, d.huge);
    return this.walker.linkedFrames - before;
  }

  /**
   * Populates `pages` pages from the page of `vaddr` below the morsel's
   * level-`level` table `table`, at most to that table's end (the MMU's
   * fault-ahead for a bulk write that will write every one of them). As
   * populateFrom, the indices of `vaddr` below the morsel's top are its
   * offset's.
   */
  populateAhead(table: Frame, level: number, vaddr: number, pages: number, huge: boolean): void {
    const spanPages = entrySpan(level + 1) / PAGE_SIZE; // pages under the table
    const first = Math.floor(vaddr / PAGE_SIZE) % spanPages;
    this.populateRange(table, level, first, Math.min(spanPages, first + pages) - 1, huge);
  }

  /** Populates pages [first, last] (page numbers inside the table at `level`); `huge`: 2 MiB leaves where they fit. */
  private populateRange(table: Frame, level: number, first: number, last: number, huge: boolean): void {
    if (level === 1 && last - first + 1 >= BATCH_LEAVES_MIN_PAGES) return this.populateLeaves(table, first, last);
    const span = entrySpan(level) / PAGE_SIZE; // pages per entry of this table
    for (let idx = Math.floor(first / span); idx <= Math.floor(last / span); idx++) {
      const child = this.writableChild(table, idx, level, huge);
      if (level > 1 && !this.cow.leafHuge) {
        const lo = Math.max(first, idx * span) - idx * span;
        const hi = Math.min(last, idx * span + span - 1) - idx * span;
        this.populateRange(child, level - 1, lo, hi, huge);
      }
    }
  }


  /**
   * Level-1 entries first..last of `table`: the missing ones get fresh
   * frames taken in one batch (allocSmallBatch: a whole allocator child per
   * counter CAS), zeroed per run of consecutive frames (natively from 16
   * frames: ~2x a TypedArray.set per page here), and linked by one CAS each
   * (a lost race frees its frame); present ones go through writableChild (a
   * shared page is copied). ENOSPC before anything is linked: the frames
   * taken are freed. A crash between the batch and a link leaves unreachable
   * frames, which recovery's rebuild reclaims (as for populateFrom).
   */
  private populateLeaves(table: Frame, first: number, last: number): void {
    const missing: number[] = [];
    for (let idx = first; idx <= last; idx++) {
      if (isPresent(this.region.loadLo(table, idx))) this.writableChild(table, idx, 1, false);
      else missing.push(idx);
    }
    if (missing.length === 0) return;
    const frames: Frame[] = [];
    try {
      this.alloc.allocSmallBatch(missing.length, frames);
    } catch (e) {
      for (const f of frames) this.alloc.free(f);
      throw e;
    }
    for (let i = 0; i < frames.length; ) {
      let run = 1;
      const window = frames[i] >>> WINDOW_FRAME_SHIFT; // zeroFrames takes a run inside one window
      while (i + run < frames.length && frames[i + run] === frames[i] + run && (frames[i] + run) >>> WINDOW_FRAME_SHIFT === window) run++;
      this.region.zeroFrames(frames[i], run);
      i += run;
    }
    for (let i = 0; i < missing.length; i++) {
      crashPoint('populate:before-link');
      if (this.walker.link(table, missing[i], frames[i])) continue;
      crashPoint('populate:lost-race');
      this.alloc.free(frames[i]);
    }
  }

  // --- access without a mapping ------------------------------------------------------

  /**
   * pread: copies bytes [offset, offset + out.length) of the morsel `id`
   * stands for (a meta morsel: its data morsel) into `out`. Pages never
   * populated read as zeros and stay unpopulated. Every table is followed
   * through the walker, so damaged metadata gives ECORRUPT, never a read of
   * a frame outside the morsel's subtree range.
   */
  read(id: bigint, offset: number, out: Uint8Array): void {
    const d = this.accessRange(id, offset, out.length);
    this.eachPage(d, offset, out.length, false, (frame, inPage, at, n) => {
      if (frame < 0) out.fill(0, at, at + n);
      else out.set(this.region.bytesOf(frame as Frame).subarray(this.region.byteOffsetInWindow(frame as Frame) + inPage, this.region.byteOffsetInWindow(frame as Frame) + inPage + n), at);
    });
  }

  /** pwrite: copies `bytes` into the morsel at `offset`, populating pages as needed (ERANGE past its size, before anything changes). */
  write(id: bigint, offset: number, bytes: Uint8Array): void {
    const d = this.accessRange(id, offset, bytes.length);
    this.eachPage(d, offset, bytes.length, true, (frame, inPage, at, n) => {
      this.region.bytesOf(frame as Frame).set(bytes.subarray(at, at + n), this.region.byteOffsetInWindow(frame as Frame) + inPage);
    });
  }

  /** The data morsel of `id` after checking that [offset, offset + length) lies inside its byte size. */
  private accessRange(id: bigint, offset: number, length: number): DecodedId {
    const d = this.decode(id);
    const data = this.dataOf(d);
    const size = d.meta ? this.metaOf(d).sizeBytes : orderBytes(data.order);
    check(Number.isSafeInteger(offset) && offset >= 0 && offset + length <= size, 'ERANGE', () => `[${offset}, ${offset + length}) is outside the ${size}-byte morsel`);
    return data;
  }

  /** Calls `visit(frame, offsetInPage, offsetInBuffer, bytes)` per page of the range; frame -1 = unpopulated (only when !populate). Bounded by the range's page count. */
  private eachPage(d: DecodedId, offset: number, length: number, populate: boolean, visit: (frame: number, inPage: number, at: number, n: number) => void): void {
    for (let at = 0; at < length; ) {
      const pos = offset + at;
      const inPage = pos % PAGE_SIZE;
      const n = Math.min(PAGE_SIZE - inPage, length - at);
      const frame = d.order === 0 ? d.rootFrame : populate ? this.populateFrom(d.rootFrame, d.order, pos, d.huge) : this.lookupPage(d.rootFrame, d.order, pos);
      visit(frame, inPage, at, n);
      at += n;
    }
  }

  // --- inspect --------------------------------------------------------------------

  stats(id: bigint): MorselStats {
    const d = this.decode(id);
    if (d.meta) {
      const metaInfo = this.metaOf(d);
      const data = this.subtreeStats(this.dataOf(d));
      return { ...data, id: d.id, order: d.order, meta: true, rootFrame: d.rootFrame, dataPages: data.dataPages + 1, metaInfo, data };
    }
    return this.subtreeStats(d);
  }

  private subtreeStats(d: DecodedId): MorselStats {
    const counts = { tables: 0, pages: 0, huge: 0, shared: 0 };
    const tablesByLevel = new Array<number>(d.order + 1).fill(0);
    if (d.order === 0) counts.pages = 1;
    else
      this.forEachFrame(d.rootFrame, d.order, (_f, level, shared, huge) => {
        const frames = huge ? HUGE_FRAMES : 1;
        if (level === 0) (counts.pages += frames, (counts.huge += huge ? 1 : 0));
        else (counts.tables++, tablesByLevel[level]++);
        if (shared) counts.shared += frames;
      });
    return { id: d.id, order: d.order, meta: false, rootFrame: d.rootFrame, tableFrames: counts.tables, dataPages: counts.pages, hugeLeaves: counts.huge, huge: d.huge, sharedFrames: counts.shared, tablesByLevel, virtualBytes: orderBytes(d.order) };
  }

  /**
   * Visits every frame of a subtree (tables with their level, pages with
   * level 0; a 2 MiB leaf once, by its first frame, with `huge`), pre-order;
   * `shared`: it or a table above it is shared with another morsel
   * (copy-on-write: reference count above 1). Depth bounded by `level`.
   */
  forEachFrame(table: Frame, level: number, visit: (frame: Frame, level: number, shared: boolean, huge: boolean) => void, shared = false): void {
    visit(table, level, shared, false);
    if (level === 0) return;
    this.walker.forEachPresent(table, (idx, lo, hi) => {
      if (isLeafEntry(level, lo)) {
        const leaf = this.walker.followHuge(table, idx, lo, hi);
        visit(leaf, 0, shared || this.sharedEntry(table, idx, lo, leaf), true);
        return;
      }
      const child = this.walker.follow(table, idx, lo, hi);
      this.forEachFrame(child, level - 1, visit, shared || this.sharedEntry(table, idx, lo, child));
    });
  }

  /**
   * Whether `table[idx]` (low half `lo`, naming `child`) shares its child
   * with another table: counted above 1, or lazily (lazy.ts).
   */
  private sharedEntry(table: Frame, idx: number, lo: number, child: Frame): boolean {
    return (lo & RW) === 0 && this.cow.refs.get(child) + this.cow.lazy.uncountedRefs(table, idx, lo) > 1;
  }

  // --- destroy --------------------------------------------------------------------

  /**
   * Destroys a morsel (thesis 3.3.3): post-order, every table unlinked from
   * its parent before its frame is freed, a leaf table's own pages freed in
   * one batch (their entries die with the table). For a meta morsel (thesis 3.5): the
   * data morsel except its root, then the root unlinked from the meta page and
   * freed, then the meta morsel. `generation`: the ID is a handle (ESTALE when
   * that incarnation is gone).
   *
   * The decision (destroyer side of the Dekker pair in use()): CAS DYING into
   * the morsel word, THEN sum the usage counts of every live user slot. If
   * any process uses the morsel, DYING is withdrawn: EBUSY, or with `defer`
   * the morsel is marked PENDING and its last user destroys it ('deferred').
   * A user whose count the scan missed sees DYING and backs off. While DYING
   * is held the word changes only here (other destroyers and users wait).
   *
   * The commit point for crash recovery is unregistering from the live table:
   * a crash before it leaves the morsel intact (recovery clears a stale
   * DYING: clearDying), after it an unreachable subtree recovery reclaims
   * whole. The word gets the next generation before the root frame is freed
   * (its next owner writes the word).
   */
  destroy(id: bigint, opts: { generation?: number; defer?: boolean } = {}): 'destroyed' | 'deferred' {
    const generation = opts.generation ?? this.currentGeneration(id);
    return this.destroyDecoded(this.decodeHandle(id, generation), generation, !!opts.defer);
  }

  /** destroy() of a validated handle: `d` registered in `generation` when seen (or DYING since). */
  private destroyDecoded(d: DecodedId, generation: number, defer: boolean): 'destroyed' | 'deferred' {
    const data = this.dataOfLive(d, generation);
    // The claim brackets every moment this process may hold DYING (usage.ts).
    this.usage.claim(data.rootFrame, d.rootFrame, true);
    try {
      return this.decide(d.id, d, data, generation, defer);
    } finally {
      this.usage.claim(data.rootFrame, d.rootFrame, false);
    }
  }

  /** destroy()'s decision and commit, under this process's claim. */
  private decide(id: bigint, d: DecodedId, data: DecodedId, generation: number, defer: boolean): 'destroyed' | 'deferred' {
    for (let attempt = 0; attempt < DECISION_RETRIES; attempt++) {
      const w = this.takeDying(d, generation);
      const users = this.usage.total(data.rootFrame);
      // A reap (defer: a last release of a PENDING morsel) also waits for the
      // uses of dead, unreaped processes: one may be an unlink that died after
      // marking PENDING and before removing the name, and the name may still
      // stand. The sweep after their slots are reaped decides with the names
      // (Names.reapPending). A plain destroy ignores dead uses, as before.
      const deadUses = users === 0 && defer ? this.usage.deadTotal(data.rootFrame) : 0;
      if (users === 0 && deadUses === 0) {
        this.destroyCommitted(d, data, w);
        return 'destroyed';
      }
      // # Warning: back off. Users that left while we held DYING saw it and
      // gave up reaping, so a deferred destroy re-checks after backing off.
      const next = (w & ~W_FLAGS) | (w & W_PENDING) | (defer ? W_PENDING : 0);
      assert(this.words.cas(d.rootFrame, w | W_DYING, next), 'morsel word unchanged while DYING is held');
      if (!defer) throw new MorselError('EBUSY', `morsel ${hex(id)} is in use (${users} open handle(s) or mapping(s))`);
      if (deadUses > 0 || this.usage.total(data.rootFrame) > 0) return 'deferred';
    }
    return 'deferred'; // still PENDING; reapPending() collects it
  }

  /**
   * Destroys incarnation `generation` of `id` if nobody uses it, with
   * `commit` (an unlink's removal of the name) as the step that decides
   * it: DYING and PENDING go into the word in one CAS, then the usage counts
   * are summed (destroy()'s side of the Dekker pair in use()), then
   * `commit` runs; its `true` commits the destroy. Returns 'busy' (a use is
   * counted, or another destroyer holds DYING) or 'uncommitted' (`commit`
   * said no) with the word as it was, and ESTALE when the incarnation is
   * gone. One CAS and one sum instead of a counted hold, marking and release.
   * # Warning: a crash with the flags held leaves a DYING, PENDING morsel,
   * named or not: whoever reaps the dead slot (or recovery) clears DYING,
   * and the PENDING sweep decides with the names (reapPending: named ->
   * cleared, unnamed -> destroyed). While the flags are held, reapPending
   * leaves the word alone (it skips DYING), so only we change it.
   */
  destroyUnused(id: bigint, generation: number, commit: () => boolean): 'destroyed' | 'busy' | 'uncommitted' {
    const d = this.decodeHandle(id, generation);
    const data = this.dataOfLive(d, generation);
    this.usage.claim(data.rootFrame, d.rootFrame, true); // brackets DYING, as in destroyDecoded
    try {
      let w: number;
      try {
        w = this.takeDying(d, generation, W_PENDING);
      } catch (e) {
        if (e instanceof MorselError && e.code === 'EBUSY') return 'busy';
        throw e;
      }
      const held = w | W_DYING | W_PENDING;
      let users = 0;
      let committed = false;
      try {
        users = this.usage.total(data.rootFrame);
        committed = users === 0 && commit();
      } finally {
        if (!committed) assert(this.words.cas(d.rootFrame, held, w), 'morsel word unchanged while DYING is held');
      }
      if (!committed) return users > 0 ? 'busy' : 'uncommitted';
      this.destroyCommitted(d, data, w);
      return 'destroyed';
    } finally {
      this.usage.claim(data.rootFrame, d.rootFrame, false);
    }
  }

  /** CASes DYING (and the flags `also`) into the word of incarnation `generation`; returns the word before. ESTALE, EBUSY. */
  private takeDying(d: DecodedId, generation: number, also = 0): number {
    for (let attempt = 0; attempt < DECISION_RETRIES; attempt++) {
      const w = this.words.load(d.rootFrame);
      check(wordLive(w) && wordGeneration(w) === generation, 'ESTALE', () => `morsel ${hex(d.id)}@${generation} was destroyed`);
      check((w & W_DYING) === 0, 'EBUSY', () => `morsel ${hex(d.id)} is being destroyed by someone else`);
      if (this.words.cas(d.rootFrame, w, w | W_DYING | also)) return w;
    }
    throw new MorselError('EBUSY', `morsel ${hex(d.id)}: its word kept changing`);
  }

  /** The destroy after its decision: nobody can begin a use any more (they see DYING). */
  private destroyCommitted(d: DecodedId, data: DecodedId, w: number): void {
    assert(this.live.remove(d.rootFrame, d.lo, d.hi), 'only the holder of DYING unregisters a morsel');
    crashPoint('destroy:after-unregister');
    if (d.meta) {
      this.destroyChildren(data.rootFrame, data.order);
      const lo = this.region.loadLo(d.rootFrame, META_DATA_ID_ENTRY);
      const hi = this.region.loadHi(d.rootFrame, META_DATA_ID_ENTRY);
      assert(this.region.casEntry(d.rootFrame, META_DATA_ID_ENTRY, lo, hi, 0, 0), 'meta page data ID unchanged during destroy');
      crashPoint('destroy:meta-after-clear-id');
      this.alloc.free(data.rootFrame);
    } else {
      this.destroyChildren(d.rootFrame, d.order);
    }
    crashPoint('destroy:before-free-root');
    this.words.store(d.rootFrame, deadWord(wordGeneration(w)));
    this.alloc.free(d.rootFrame);
  }

  /** Frees everything below `table` (a level-`level` table) that it alone references, leaving the table itself. Depth bounded by `level`. */
  private destroyChildren(table: Frame, level: number): void {
    if (level === 0) return;
    this.cow.lazy.release(table, level); // lazy.ts: its lazy copies' references counted, or it (a lazy copy) detached
    if (level === 1) {
      // A leaf table's own pages go back in one batch (a few atomics per
      // allocator child instead of an unlink and a free per page); a frame
      // the allocator refuses (damage) stays allocated and unreachable, for
      // `morsel check --repair`. Shared pages drop a reference each.
      const pages = this.pageBatch;
      const count = this.walker.ownedPages(table, pages, (idx, lo, hi) => this.destroyEntry(table, level, idx, lo, hi));
      this.alloc.freeSmallBatch(pages, count);
      return;
    }
    this.walker.forEachOwned(table, (idx, lo, hi) => this.destroyEntry(table, level, idx, lo, hi));
  }

  /** destroyChildren's step for one present entry of a level-`level` table: its child freed (after its own children), or its reference dropped. */
  private destroyEntry(table: Frame, level: number, idx: number, lo: number, hi: number): void {
    const leaf = isLeafEntry(level, lo);
    if (!this.walker.trustedChild(level, lo, hi)) {
      // Damage (the walker refuses the frame): cleared, never followed or freed. Whatever the
      // entry once named stays allocated and unreachable: `morsel check --repair` reclaims it.
      assert(this.region.casEntry(table, idx, lo, hi, 0, 0), 'subtree entry unchanged during destroy');
      return;
    }
    const child = pfnOf(lo, hi) as Frame;
    if ((lo & RW) === 0) {
      // Shared (copy-on-write): one reference fewer; the last one frees it. A detached clone's LAZY_REF reference was never counted.
      assert(this.region.casEntry(table, idx, lo, hi, 0, 0), 'subtree entry unchanged during destroy');
      crashPoint('destroy:after-unlink');
      if ((lo & LAZY_REF) === 0) this.cow.drop(child, level - 1, leaf);
      return;
    }
    if (!leaf) this.destroyChildren(child, level - 1);
    // Unlink before free, so that no table of the dying subtree names a
    // freed table (leaf tables keep their page entries: see above). For
    // crashes either order is safe: the whole subtree is unreachable since
    // unregistering, and recovery reclaims whatever was not freed yet.
    assert(this.region.casEntry(table, idx, lo, hi, 0, 0), 'subtree entry unchanged during destroy');
    crashPoint('destroy:after-unlink');
    this.alloc.free(child, leaf ? HUGE_ALLOC_ORDER : 0);
  }

  /** All live morsel IDs (walks the live table). */
  list(): MorselId[] {
    const out: MorselId[] = [];
    this.live.forEach((_k, lo, hi) => out.push(((BigInt(hi >>> 0) << 32n) | BigInt(lo >>> 0)) as MorselId));
    return out;
  }
}

/** EINVAL unless a huge policy (2 MiB leaves) fits `order` (order >= MIN_HUGE_ORDER). */
function checkHuge(order: Order, huge: boolean): void {
  check(!huge || order >= MIN_HUGE_ORDER, 'EINVAL', () => `2 MiB leaves need a morsel of order >= ${MIN_HUGE_ORDER} (1 GiB); order ${order} has no level-2 table`);
}
