/**
 * One worker thread of a torture child: a random mix of operations on the
 * shared region, each logged (begin, then ack) in the acknowledgement log.
 *
 * Ownership keeps the log unambiguous: a thread writes to, maps, clones and
 * destroys only morsels it owns (ones it created or cloned, or was handed at
 * start), so no write races a destroy or a clone of the same morsel. Clones
 * share pages across owners' morsels until written (copy-on-write). Threads
 * meet in two places:
 *   - cofault: the owner posts a morsel range in a shared mailbox and a peer
 *     faults the same pages concurrently through its own MMU (population
 *     races: lost CASes, frames given back);
 *   - hold/drop: a thread opens (and maybe maps) morsels the names child
 *     (another process) named, so uses of one morsel span two processes;
 *   - the lifecycle lock: create and destroy run with their log lines under a
 *     process-wide lock, so the log orders them as they happened. (A root
 *     frame freed by one thread's destroy may come back as another thread's
 *     new morsel with the very same ID; unlocked, the two acks could be logged
 *     the other way round.)
 */
import { parentPort, workerData } from 'node:worker_threads';
import { isMorselError, type ErrorCode } from '../../errors.js';
import { Memory } from '../../memory.js';
import { MIN_HUGE_ORDER, decodeIdBits, hex } from '../../morsel/id.js';

const rootOf = (id: bigint): number => decodeIdBits(id).rootFrame;
import { orderBytes, type Order } from '../../morsel/order.js';
import { AddressSpace } from '../../space/address-space.js';
import { Access, Mmu } from '../../space/mmu.js';
import type { RegionShare } from '../../physical/region.js';
import type { SpaceShare } from '../../space/address-space.js';
import { LogWriter, type LogEvent, type OpName } from './log.js';
import { Prng, pattern } from './prng.js';
import { Mailbox, acquire, release } from './sync.js';
import type { MorselHandle } from '../../manage/handle.js';
import { readTree } from './name-tree.js';
import { STAMP_BYTES } from './names.js';
import { PAGES_PER_WINDOW, WINDOWS, pageRange } from './shape.js';

export interface WorkerConfig {
  region: RegionShare;
  space: SpaceShare;
  lock: SharedArrayBuffer;
  mailbox: SharedArrayBuffer;
  logPath: string;
  run: number;
  thread: number;
  seed: number;
  /** operations before finishing cleanly (Infinity: until killed) */
  budget: number;
  /** IDs this thread owns at start (0x... hex) */
  ids: string[];
}

interface Owned {
  id: bigint;
  meta: boolean;
  /** the data morsel's order and the byte size writes may use */
  order: Order;
  size: number;
  /** fixed address of a meta morsel */
  fixed: number | null;
  /** where it is mapped in the shared space, or null */
  base: number | null;
}

/** Named morsels (of the names child) a thread holds open at most. */
const MAX_HELD = 3;
/** Morsels a thread keeps before it prefers destroying. */
const MAX_OWN = 10;
/** The order of the morsels created with the huge policy (the smallest that has level-2 entries). */
const HUGE_ORDER = MIN_HUGE_ORDER;
/** Errors an operation may end with without being a bug (logged as failures). */
const EXPECTED: readonly ErrorCode[] = ['ENOSPC'];

class TortureWorker {
  private readonly memory: Memory;
  private readonly space: AddressSpace;
  private readonly mmu: Mmu;
  private readonly rng: Prng;
  private readonly log: LogWriter;
  private readonly lock: Int32Array;
  private readonly mailbox: Mailbox;
  private readonly own = new Map<string, Owned>();
  private readonly held: { h: MorselHandle; base: number | null }[] = [];
  /** morsel names last read from the namespace */
  private namedPaths: string[] = [];
  private seq = 0;
  /** after ENOSPC: destroy until the thread owns half of MAX_OWN */
  private pressure = false;

  constructor(private readonly cfg: WorkerConfig) {
    this.memory = Memory.attach(cfg.region);
    this.space = AddressSpace.attach(this.memory.morsels, cfg.space);
    this.mmu = new Mmu(this.space);
    this.rng = new Prng(cfg.seed);
    this.log = new LogWriter(cfg.logPath);
    this.lock = new Int32Array(cfg.lock);
    this.mailbox = new Mailbox(cfg.mailbox);
    for (const text of cfg.ids) this.adopt(BigInt(text));
  }

  private adopt(id: bigint): Owned {
    const d = this.memory.morsels.decode(id);
    const data = this.memory.morsels.dataOf(d);
    const meta = d.meta ? this.memory.morsels.metaOf(d) : null;
    const o: Owned = { id, meta: d.meta, order: data.order, size: meta ? meta.sizeBytes : orderBytes(data.order), fixed: meta ? meta.address : null, base: null };
    this.own.set(hex(id), o);
    return o;
  }

  run(): void {
    for (let i = 0; i < this.cfg.budget; i++) {
      this.helpPeer();
      this.step();
    }
    for (const o of this.own.values()) if (o.base !== null) this.unmap(o);
    while (this.held.length > 0) this.drop(this.held.length - 1);
    this.memory.alloc.release();
    this.log.close();
  }

  private step(): void {
    if (this.pressure && this.own.size <= MAX_OWN / 2) this.pressure = false;
    if (this.own.size === 0) return this.create();
    if (this.pressure || this.own.size > MAX_OWN) return this.destroy(this.pickOwned());
    const ops: [number, () => void][] = [
      [10, () => this.create()],
      [4, () => this.createMeta()],
      [4, () => this.clone(this.pickOwned())],
      [8, () => this.destroy(this.pickOwned())],
      [30, () => this.write(this.pickOwned())],
      [6, () => this.populate(this.pickOwned())],
      [8, () => this.cofault(this.pickOwned())],
      [5, () => this.toggleMapping(this.pickOwned())],
      [2, () => this.privateSpace(this.pickOwned())],
      [4, () => this.holdOrDrop()],
    ];
    ops[this.rng.weighted(ops.map((o) => o[0]))][1]();
  }

  private pickOwned(): Owned {
    const all = [...this.own.values()];
    return all[this.rng.int(all.length)];
  }

  /** Runs `body` between a begin and an ack line; an expected error becomes a failure line. */
  private logged(op: OpName, fields: Partial<LogEvent>, body: () => Partial<LogEvent> | void, expected: readonly ErrorCode[] = []): boolean {
    const e = { r: this.cfg.run, t: this.cfg.thread, s: this.seq++, op, ...fields };
    this.log.begin(e);
    try {
      const more = body();
      this.log.ack({ ...e, ...(more ?? {}) });
      return true;
    } catch (err) {
      if (!isMorselError(err) || !(EXPECTED.includes(err.code) || expected.includes(err.code))) throw err;
      this.log.fail({ ...e, code: err.code });
      if (err.code === 'ENOSPC') this.pressure = true;
      return false;
    }
  }

  // --- named morsels of the names child (another process) ---------------------------------

  /**
   * Opens a morsel the names child named (read-only) and sometimes maps it,
   * or gives such a hold back: this process's uses keep an unlinked morsel
   * alive across processes, and die with this process's slot when it is
   * killed (the survivor or recovery then destroys the morsel).
   */
  private holdOrDrop(): void {
    if (this.held.length >= MAX_HELD || (this.held.length > 0 && this.rng.int(2) === 0)) return this.drop(this.rng.int(this.held.length));
    if (this.namedPaths.length === 0 || this.rng.int(8) === 0) this.namedPaths = this.readNamedPaths();
    if (this.namedPaths.length === 0) return;
    const path = this.rng.pick(this.namedPaths);
    const mapIt = this.rng.int(2) === 0;
    this.logged(
      'hold',
      { path },
      () => {
        const h = this.memory.names.open(path);
        let base: number | null = null;
        try {
          this.memory.names.read(h, 0, STAMP_BYTES);
          if (mapIt) base = this.memory.names.map(h, this.space);
        } catch (e) {
          this.memory.names.close(h);
          throw e;
        }
        this.held.push({ h, base });
        return { id: hex(h.id), gen: h.generation, address: base ?? undefined };
      },
      // gone meanwhile (the names child runs concurrently); its fixed range taken in our space
      ['ENOENT', 'ESTALE', 'EEXIST'],
    );
  }

  /** The names child's morsel names now (none if a directory went away while we listed it). */
  private readNamedPaths(): string[] {
    try {
      return readTree(this.memory.names).paths('morsel');
    } catch (e) {
      if (isMorselError(e, 'ENOENT') || isMorselError(e, 'ENOTDIR')) return [];
      throw e;
    }
  }

  private drop(i: number): void {
    const { h, base } = this.held[i];
    this.logged('drop', { id: hex(h.id), gen: h.generation }, () => {
      this.held.splice(i, 1);
      if (base !== null) this.space.unmap(base);
      this.memory.names.close(h);
    });
  }

  // --- lifecycle ----------------------------------------------------------------------

  /**
   * A new morsel; half of the order-2 ones have the huge policy, so writes,
   * populations and cofaults into their windows (one 2 MiB range each, see
   * shape.ts) link 2 MiB leaves, or fall back to 4 KiB pages when no order-9
   * frame is free.
   */
  private create(): void {
    const order = this.rng.pick([0, 1, 1, 2, 2, 3] as const);
    const huge = order === HUGE_ORDER && this.rng.int(2) === 0;
    this.locked(() =>
      this.logged('create', { order, huge }, () => {
        const id = this.memory.morsels.create(order, { huge });
        this.adopt(id);
        return { id: hex(id), gen: this.memory.morsels.generationOf(rootOf(id)) };
      }),
    );
  }

  private createMeta(): void {
    const order = this.rng.pick([0, 1, 2] as const);
    // Far from automatic placement (which fills from the bottom), rarely colliding with another meta.
    const address = this.rng.range(1 << 10, (1 << 20) - 1) * orderBytes(order);
    this.locked(() =>
      this.logged('createMeta', { order, meta: true, address }, () => {
        const id = this.memory.morsels.createMeta(order, { address });
        this.adopt(id);
        return { id: hex(id), gen: this.memory.morsels.generationOf(rootOf(id)) };
      }),
    );
  }

  /**
   * A copy-on-write clone of an owned morsel: it shares the source's pages
   * until either is written (the writes above then copy, the destroys give
   * back references), so crashes land in COW faults and count updates.
   */
  private clone(o: Owned): void {
    this.locked(() =>
      this.logged('clone', { id: hex(o.id) }, () => {
        const id = this.memory.morsels.clone(o.id);
        const c = this.adopt(id);
        c.size = Math.min(c.size, o.size); // writes stay where the model compares both
        return { clone: hex(id), gen: this.memory.morsels.generationOf(rootOf(id)) };
      }),
    );
  }

  private destroy(o: Owned): void {
    if (o.base !== null) this.unmap(o);
    this.locked(() =>
      this.logged('destroy', { id: hex(o.id) }, () => {
        this.memory.morsels.destroy(o.id);
        this.own.delete(hex(o.id));
      }),
    );
  }

  private locked(body: () => void): void {
    acquire(this.lock);
    try {
      body();
    } finally {
      release(this.lock);
    }
  }

  // --- data -----------------------------------------------------------------------------

  /** A random range inside the morsel's write windows (see shape.ts). */
  private range(o: Owned, maxLen: number): { off: number; len: number } {
    const { first } = pageRange(o.size, this.rng.int(WINDOWS), this.rng.int(PAGES_PER_WINDOW), 1);
    const off = first * 4096 + this.rng.int(4096);
    const len = 1 + this.rng.int(Math.min(maxLen, o.size - off));
    return { off, len };
  }

  private write(o: Owned): void {
    if (!this.ensureMapped(o)) return;
    const { off, len } = this.range(o, 3 * 4096);
    const pseed = this.rng.u32();
    const base = o.base!;
    this.logged('write', { id: hex(o.id), off, len, pseed }, () => this.mmu.write(base + off, pattern(pseed, len)));
  }

  /** Explicit batch population of a range (no data written: pages stay zero). */
  private populate(o: Owned): void {
    const { off, len } = this.range(o, 64 * 4096);
    this.logged('populate', { id: hex(o.id), off, len }, () => {
      this.memory.morsels.populate(o.id, off, len);
    });
  }

  /** Faults a page range together with a peer thread: both walk the same pages at once. */
  private cofault(o: Owned): void {
    if (o.order === 0 || !this.ensureMapped(o)) return;
    const { first, pages } = pageRange(o.size, this.rng.int(WINDOWS), 0, PAGES_PER_WINDOW);
    const base = o.base! + first * 4096;
    this.logged('cofault', { id: hex(o.id), off: first * 4096, len: pages * 4096 }, () => {
      const posted = this.mailbox.post(this.cfg.thread, base, pages);
      if (posted) this.mailbox.awaitJoin(5);
      try {
        touch(this.mmu, base, pages);
      } finally {
        if (posted) this.mailbox.finish(); // never leave the peer working on a mapping we may drop
      }
    });
  }

  /** Between operations: join a peer's cofault if one is posted. */
  private helpPeer(): void {
    const job = this.mailbox.join(this.cfg.thread);
    if (job === null) return;
    try {
      touch(this.mmu, job.base, job.pages);
    } catch (e) {
      // Population only: running out of frames here changes nothing the log must know about.
      if (!isMorselError(e) || !EXPECTED.includes(e.code)) throw e;
      this.pressure = true;
    } finally {
      this.mailbox.done();
    }
  }

  // --- mappings -----------------------------------------------------------------------------

  /** Maps `o` in the shared space if it is not; false if its fixed address is taken. */
  private ensureMapped(o: Owned): boolean {
    if (o.base !== null) return true;
    try {
      o.base = this.space.map(o.id, o.fixed === null ? {} : { address: o.fixed });
      return true;
    } catch (e) {
      if (isMorselError(e, 'EEXIST') || isMorselError(e, 'ENOSPC')) return false;
      throw e;
    }
  }

  private unmap(o: Owned): void {
    this.space.unmap(o.base!);
    o.base = null;
  }

  private toggleMapping(o: Owned): void {
    const mapped = o.base !== null;
    this.logged(mapped ? 'unmap' : 'map', { id: hex(o.id) }, () => {
      if (mapped) this.unmap(o);
      else this.ensureMapped(o);
      return { address: o.base ?? undefined };
    });
  }

  /** A short-lived private space: create, map, touch, tear down (space tables and registry churn). */
  private privateSpace(o: Owned): void {
    // Meta addresses go up to 2^50: beyond a 4-level space.
    const levels = o.meta ? 5 : this.rng.pick([4, 5] as const);
    this.logged('space', { id: hex(o.id) }, () => {
      const space = this.memory.createSpace({ levels });
      try {
        const base = space.map(o.id, o.fixed === null ? {} : { address: o.fixed });
        new Mmu(space).read8(base + this.range(o, 1).off);
        space.unmap(base);
      } finally {
        space.destroy();
      }
    });
  }
}

/** Faults in every page of [base, base + pages * 4 KiB) (a write fault, writing nothing: reads no longer populate). */
function touch(mmu: Mmu, base: number, pages: number): void {
  for (let p = 0; p < pages; p++) mmu.translate(base + p * 4096, Access.Write);
}

const cfg = workerData as WorkerConfig;
const worker = new TortureWorker(cfg);
parentPort!.postMessage('ready');
worker.run();
parentPort!.postMessage('done');
