/**
 * The names child's driver: random management-layer operations (memory.names)
 * below TORTURE_ROOT, in a second process that shares the region with the
 * primitive child (child.ts "ops"). Each operation is logged (begin, ack or
 * failure) like the primitive ones; the parent's NamesModel replays them.
 *
 * The driver is the only writer of the namespace (one thread), so its own
 * NameTree is exact and it only issues operations valid in it: a refusal it
 * did not expect (other than ENOSPC, or EEXIST of an overlapping fixed-address
 * reservation) is a bug and ends the child with status 3. A refused name
 * operation must have changed nothing; the model checks that too.
 *
 * Operations: mkdir / rmdir / create / create with a fixed address
 * (reservation) / unlink (possibly while open or mapped: deferred destroy) /
 * rename (files and whole directories) / chmod / open / close / map / unmap
 * of handles in one address space / a data stamp written through a handle /
 * reap (reapDeadSlots: as a survivor, empty the slot of a SIGKILLed peer and
 * destroy the unlinked morsels whose last user it was).
 */
import { isMorselError, type ErrorCode } from '../../errors.js';
import type { Memory } from '../../memory.js';
import type { MorselHandle } from '../../manage/handle.js';
import { hex } from '../../morsel/id.js';
import { orderBytes } from '../../morsel/order.js';
import type { AddressSpace } from '../../space/address-space.js';
import { reapDeadSlots } from '../../space/user-slots.js';
import { LogWriter, type LogEvent, type NameOp } from './log.js';
import { NameTree, TORTURE_ROOT, readTree } from './name-tree.js';
import { Prng, pattern } from './prng.js';

/** The thread number names events carry (primitive workers are 0..threads-1). */
export const NAMES_THREAD = 100;
/** Bytes of the stamp `nwrite` puts at offset 0. */
export const STAMP_BYTES = 8;
/** Fixed addresses: FIXED_SLOTS 2 MiB slots from FIXED_BASE, few enough that reservations collide. */
const FIXED_BASE = 2 ** 44;
const FIXED_SLOTS = 24;
const MAX_DEPTH = 3;
const MAX_HANDLES = 8;
const MAX_MAPPINGS = 6;
/** Above this many names the driver prefers removing. */
const MAX_NAMES = 40;
const FILE_MODES = [0o600, 0o640, 0o644, 0o700] as const;
const DIR_MODES = [0o700, 0o750, 0o755] as const;
/** Operations between two reaps of dead peers' slots. */
const REAP_EVERY = 12;

interface Mapping {
  base: number;
  id: string;
}

export class NamesDriver {
  private readonly tree: NameTree;
  private readonly rng: Prng;
  private readonly log: LogWriter;
  private readonly handles: MorselHandle[] = [];
  private readonly mappings: Mapping[] = [];
  private seq = 0;
  private leaf = 0;

  constructor(
    private readonly memory: Memory,
    private readonly space: AddressSpace,
    private readonly cfg: { logPath: string; run: number; seed: number },
  ) {
    this.tree = readTree(memory.names);
    this.rng = new Prng(cfg.seed);
    this.log = new LogWriter(cfg.logPath);
  }

  /** Runs `budget` operations (Infinity: until killed), then gives back every handle and mapping. */
  run(budget: number): void {
    for (let i = 0; i < budget; i++) {
      if (i % REAP_EVERY === REAP_EVERY - 1) this.reap();
      else this.step();
    }
    while (this.mappings.length > 0) this.unmap(this.mappings.length - 1);
    while (this.handles.length > 0) this.close(this.handles.length - 1);
    this.log.close();
  }

  private step(): void {
    if (!this.tree.nodes.has(TORTURE_ROOT)) {
      this.logged('mkdir', { path: TORTURE_ROOT, mode: 0o755 }, () => this.memory.names.mkdir(TORTURE_ROOT, { mode: 0o755 }));
      return;
    }
    const files = this.tree.paths('morsel');
    const dirs = this.tree.paths('dir');
    const full = files.length + dirs.length > MAX_NAMES;
    const ops: [number, () => void][] = [
      [full ? 0 : 6, () => this.mkdir(dirs)],
      [4, () => this.rmdir(dirs)],
      [full ? 0 : 10, () => this.create(dirs, false)],
      [full ? 0 : 5, () => this.create(dirs, true)],
      [full ? 14 : 6, () => this.unlink(files)],
      [6, () => this.rename(dirs)],
      [4, () => this.chmod()],
      [8, () => this.open(files)],
      [8, () => (this.handles.length > 0 ? this.close(this.rng.int(this.handles.length)) : undefined)],
      [6, () => this.map()],
      [5, () => (this.mappings.length > 0 ? this.unmap(this.rng.int(this.mappings.length)) : undefined)],
      [8, () => this.write()],
    ];
    ops[this.rng.weighted(ops.map((o) => o[0]))][1]();
    if (this.handles.length > MAX_HANDLES) this.close(0);
    if (this.mappings.length > MAX_MAPPINGS) this.unmap(0);
  }

  /** Logs begin, runs `body`, applies an ack to the tree; `expected` refusals are logged as failures. */
  private logged(op: NameOp, fields: Partial<LogEvent>, body: () => Partial<LogEvent> | void, expected: readonly ErrorCode[] = []): boolean {
    const e = { r: this.cfg.run, t: NAMES_THREAD, s: this.seq++, op, ...fields };
    this.log.begin(e);
    let done: Omit<LogEvent, 'ph'>;
    try {
      done = { ...e, ...(body() ?? {}) };
    } catch (err) {
      if (!isMorselError(err) || !(err.code === 'ENOSPC' || expected.includes(err.code))) throw err;
      this.log.fail({ ...e, code: err.code });
      return false;
    }
    this.log.ack(done);
    this.tree.apply({ ph: 'a', ...done });
    return true;
  }

  /** A fresh name in a random directory no deeper than MAX_DEPTH (names are never reused within a run). */
  private freshPath(dirs: string[], prefix: string): string | null {
    const usable = dirs.filter((d) => d.split('/').length - 1 <= MAX_DEPTH);
    if (usable.length === 0) return null;
    return `${this.rng.pick(usable)}/${prefix}${this.cfg.run}x${this.leaf++}`;
  }

  private mkdir(dirs: string[]): void {
    const path = this.freshPath(dirs, 'd');
    if (path === null) return;
    const mode = this.rng.pick(DIR_MODES);
    this.logged('mkdir', { path, mode }, () => this.memory.names.mkdir(path, { mode }));
  }

  private rmdir(dirs: string[]): void {
    const empty = dirs.filter((d) => d !== TORTURE_ROOT && this.tree.children(d).length === 0);
    if (empty.length === 0) return;
    const path = this.rng.pick(empty);
    this.logged('rmdir', { path }, () => this.memory.names.rmdir(path));
  }

  private create(dirs: string[], fixed: boolean): void {
    const path = this.freshPath(dirs, 'f');
    if (path === null) return;
    const mode = this.rng.pick(FILE_MODES);
    const order = fixed ? this.rng.pick([0, 1] as const) : 1;
    const sizeBytes = fixed && order === 0 ? 4096 : STAMP_BYTES + this.rng.int(3 * 4096); // room for the stamp nwrite puts at offset 0
    // Order-0 reservations land inside the order-1 slots: both kinds collide.
    const address = fixed ? FIXED_BASE + this.rng.int(FIXED_SLOTS) * orderBytes(1) + (order === 0 ? this.rng.int(4) * orderBytes(0) : 0) : undefined;
    this.logged(
      fixed ? 'nfixed' : 'ncreate',
      { path, mode, address, order },
      () => {
        const h = this.memory.names.create(path, { sizeBytes, order, mode, fixedAddress: address });
        this.handles.push(h);
        return { id: hex(h.id), gen: h.generation };
      },
      fixed ? ['EEXIST'] : [],
    );
  }

  private unlink(files: string[]): void {
    if (files.length === 0) return;
    const path = this.rng.pick(files);
    this.logged('unlink', { path }, () => void this.memory.names.unlink(path));
  }

  /** A file to a fresh name in any directory, or a whole directory to a fresh name at the top. */
  private rename(dirs: string[]): void {
    const movable = [...this.tree.nodes.keys()].filter((p) => p !== TORTURE_ROOT);
    if (movable.length === 0) return;
    const from = this.rng.pick(movable);
    // A directory moves only to the top, so renames never nest deeper than MAX_DEPTH + 1.
    const targets = this.tree.nodes.get(from)!.kind === 'dir' ? [TORTURE_ROOT] : dirs;
    const to = this.freshPath(targets, from.slice(from.lastIndexOf('/') + 1, from.lastIndexOf('/') + 2));
    if (to === null) return;
    this.logged('rename', { path: from, to }, () => this.memory.names.rename(from, to));
  }

  private chmod(): void {
    const path = this.rng.pick([...this.tree.nodes.keys()]);
    const mode = this.tree.nodes.get(path)!.kind === 'dir' ? this.rng.pick(DIR_MODES) : this.rng.pick(FILE_MODES);
    this.logged('chmod', { path, mode }, () => this.memory.names.chmod(path, mode));
  }

  private open(files: string[]): void {
    if (files.length === 0) return;
    const path = this.rng.pick(files);
    this.logged('open', { path }, () => {
      const h = this.memory.names.open(path, { write: true });
      this.handles.push(h);
      return { id: hex(h.id), gen: h.generation };
    });
  }

  private close(i: number): void {
    const h = this.handles[i];
    this.logged('close', { id: hex(h.id), gen: h.generation }, () => {
      this.handles.splice(i, 1);
      this.memory.names.close(h);
    });
  }

  private map(): void {
    if (this.handles.length === 0) return;
    const h = this.rng.pick(this.handles);
    this.logged(
      'nmap',
      { id: hex(h.id), gen: h.generation },
      () => {
        const base = this.memory.names.map(h, this.space, { write: true });
        this.mappings.push({ base, id: hex(h.id) });
        return { address: base };
      },
      ['EEXIST'], // the morsel's fixed range is mapped already (by another handle of it)
    );
  }

  private unmap(i: number): void {
    const m = this.mappings[i];
    this.logged('nunmap', { id: m.id, address: m.base }, () => {
      this.mappings.splice(i, 1);
      this.space.unmap(m.base);
    });
  }

  private write(): void {
    if (this.handles.length === 0) return;
    const h = this.rng.pick(this.handles);
    const pseed = this.rng.u32();
    this.logged('nwrite', { id: hex(h.id), gen: h.generation, pseed }, () => this.memory.names.write(h, 0, pattern(pseed, STAMP_BYTES)));
  }

  /** As the survivor of a SIGKILLed peer: empty its slot; its last uses of unlinked morsels die with it. */
  private reap(): void {
    this.logged('reap', {}, () => {
      const reaped = reapDeadSlots(this.memory.morsels);
      const destroyed = reaped.slots > 0 ? this.memory.names.reapPending() : 0;
      return { count: reaped.slots, len: destroyed };
    });
  }
}
