/**
 * The metadata fuzzer: damaged regions must give typed errors or correct
 * behaviour, never a crash, a raw JavaScript error or an assertion, and a
 * write through a morsel must never change a byte outside that morsel.
 *
 * A base region (4 MiB, a few morsels of orders 0-2 and a meta morsel, each
 * with data, and a usage registry in a user slot) is built once. Each case copies it, flips 1-3 random bits or
 * words in its metadata frames (superblock, allocator metadata, user slots,
 * root tables, registry tables, morsel tables, meta pages), writes it to a
 * file and then either runs random library operations in this process or
 * one CLI command in a child (`node bin/morsel.js ... --json`).
 *
 * Pass, per operation:
 *   library  it returns, or throws a MorselError (nothing else)
 *   CLI      no signal, exit status 0/1 or its error class's, one JSON object on stdout,
 *            and an error message that is not a JavaScript engine message
 *   writes   every frame whose bytes changed is in the morsel's own subtree
 *            as it was before the write (followed tolerantly, whatever the
 *            damage), was free before (population), or is allocator
 *            metadata; anything else is a write outside the morsel
 *
 * Every case is a function of (seed, case number): a failure is replayed
 * with `npm run fuzz -- --seed S --from K --cases 1`.
 */
import { spawnSync } from 'node:child_process';
import { exitStatusOf } from '../../cli/common.js';
import type { ErrorCode } from '../../errors.js';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { isMorselError } from '../../errors.js';
import { Memory } from '../../memory.js';
import { decodeIdBits, hex, type DecodedId, type MorselId } from '../../morsel/id.js';
import { Registry, superblockRoot, userSlotRoot } from '../../morsel/registry.js';
import { isPresent, pfnOf } from '../../paging/entry.js';
import { ENTRIES_PER_TABLE } from '../../paging/walk.js';
import { META_START_FRAME, SLOT_USAGE_ROOTS, metaLayout } from '../../physical/layout.js';
import { OWNED_ROOT_SLOTS, ROOT_SLOT_LIVE_TABLE } from '../../physical/superblock.js';
import { AllocatorView } from '../../alloc/llfree.js';
import { Mmu } from '../../space/mmu.js';
import { MiB, PAGE_SIZE, type Frame } from '../../units.js';
import { checkRegion } from '../check.js';
import { Prng, pattern, subSeed } from '../torture/prng.js';

export const FUZZ_REGION_BYTES = 4 * MiB;
/** Library operations per in-process case. */
const OPS_PER_CASE = 4;
/** Bytes a fuzzed read or write touches at most (a few pages). */
const MAX_ACCESS_BYTES = 3 * PAGE_SIZE;
/** A CLI case gets this long before it counts as hung. */
const CLI_TIMEOUT_MS = 20_000;
/** Text that only a JavaScript engine (or an assertion) writes: never a user-facing message. */
const ENGINE_TEXT = /Cannot read prop|is not a function|is not defined|Invalid typed array|Invalid atomic access|out of bounds|Maximum call stack|assertion failed|undefined is not|not an integer typed array|Offset is outside|Invalid array length/i;

export interface Base {
  bytes: Uint8Array;
  ids: MorselId[];
  /** frames whose bytes are metadata (mutation targets) */
  metaFrames: number[];
}

export interface CaseResult {
  kind: 'library' | 'cli';
  /** what the case did: mutations and operations, for a replay */
  steps: string[];
  failure: string | null;
}

export interface FuzzOptions {
  seed: number;
  cases: number;
  /** first case number (replays) */
  from?: number;
  /** every k-th case is a CLI case (0: none) */
  cliEvery: number;
  /** also read and write through an address space and the MMU */
  mmu: boolean;
  dir: string;
  /** path of bin/morsel.js */
  bin: string;
}

export interface FuzzReport {
  cases: number;
  library: number;
  cli: number;
  failures: CaseResult[];
}

/** The populated base region, built once per run in `dir`. */
export function buildBase(dir: string): Base {
  const file = path.join(dir, 'base.region');
  const m = Memory.create(file, FUZZ_REGION_BYTES, { force: true });
  const ids = [m.morsels.create(0), m.morsels.create(1), m.morsels.create(2), m.morsels.create(1), m.morsels.createMeta(1, { address: 2 ** 30, sizeBytes: 3 * PAGE_SIZE })];
  for (const [i, id] of ids.entries()) {
    const order = decodeIdBits(id).order;
    const at = order === 2 ? [0, 5 * 2 * MiB + 7 * PAGE_SIZE] : order === 0 ? [0, 2000] : [0, decodeIdBits(id).meta ? PAGE_SIZE : 9 * PAGE_SIZE];
    for (const offset of at) m.morsels.write(id, offset, pattern(i * 100 + offset, 100));
  }
  // A per-process usage registry, as the management layer keeps one per user slot: more metadata to damage.
  const usage = new Registry(m.region, m.alloc, userSlotRoot(m.region, m.region.userSlot, SLOT_USAGE_ROOTS[0]));
  for (const id of ids) usage.add(decodeIdBits(id).rootFrame, 1 | (2 << 12), 0);
  const metaFrames = metadataFrames(m, ids);
  usage.forEach(() => {}, (t) => metaFrames.push(t));
  metaFrames.sort((a, b) => a - b);
  m.close();
  const bytes = new Uint8Array(fs.readFileSync(file));
  fs.rmSync(file, { force: true });
  return { bytes, ids, metaFrames };
}

/** Superblock, allocator metadata, user slots, root tables, registry tables, morsel tables and meta pages. */
function metadataFrames(m: Memory, ids: MorselId[]): number[] {
  const layout = metaLayout(m.region.frameCount);
  const out = new Set<number>([0, layout.usersFrame]);
  for (let f = META_START_FRAME; f < layout.usersFrame; f++) out.add(f);
  for (let slot = 0; slot < OWNED_ROOT_SLOTS; slot++) out.add(m.region.loadRootFrame(slot));
  new Registry(m.region, m.alloc, superblockRoot(m.region, ROOT_SLOT_LIVE_TABLE)).forEach(() => {}, (t) => out.add(t));
  for (const id of ids) {
    const d = decodeIdBits(id);
    const data = m.morsels.dataOf(d);
    if (d.meta) out.add(d.rootFrame);
    if (data.order > 0) m.morsels.forEachFrame(data.rootFrame, data.order, (f, level) => level > 0 && out.add(f));
  }
  return [...out].sort((a, b) => a - b);
}

/** Flips 1-3 bits or words in metadata frames; returns what it did. */
export function mutate(bytes: Uint8Array, base: Base, rng: Prng): string[] {
  const steps: string[] = [];
  const words = new Int32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
  const frameCount = bytes.byteLength / PAGE_SIZE;
  for (let n = rng.range(1, 3); n > 0; n--) {
    const frame = rng.pick(base.metaFrames);
    // Entries are where damage matters most: half the time, hit a present entry's low word.
    let word = frame * (PAGE_SIZE / 4) + rng.int(PAGE_SIZE / 4);
    if (rng.int(2) === 0) {
      const present: number[] = [];
      for (let i = 0; i < ENTRIES_PER_TABLE; i++) if (isPresent(words[frame * (PAGE_SIZE / 4) + 2 * i])) present.push(i);
      if (present.length > 0) word = frame * (PAGE_SIZE / 4) + 2 * rng.pick(present) + rng.int(2);
    }
    const how = rng.int(4);
    const old = words[word];
    if (how === 0) words[word] ^= 1 << rng.int(32);
    else if (how === 1) words[word] = rng.u32() | 0;
    else if (how === 2) words[word] = ((rng.int(frameCount) << 12) | (old & 0xfff)) | 0; // a plausible frame number
    else words[word] = 0;
    steps.push(`frame ${frame} word ${word % (PAGE_SIZE / 4)}: 0x${(old >>> 0).toString(16)} -> 0x${(words[word] >>> 0).toString(16)}`);
  }
  return steps;
}

/** Runs `opts.cases` cases; returns every failure (never throws for a case). */
export function fuzz(opts: FuzzOptions, progress?: (done: number) => void): FuzzReport {
  fs.mkdirSync(opts.dir, { recursive: true });
  const base = buildBase(opts.dir);
  const report: FuzzReport = { cases: 0, library: 0, cli: 0, failures: [] };
  const from = opts.from ?? 0;
  for (let k = from; k < from + opts.cases; k++) {
    const cli = opts.cliEvery > 0 && k % opts.cliEvery === opts.cliEvery - 1;
    const r = runCase(base, opts, k, cli);
    report.cases++;
    if (cli) report.cli++;
    else report.library++;
    if (r.failure !== null) report.failures.push(r);
    progress?.(report.cases);
  }
  return report;
}

export function runCase(base: Base, opts: FuzzOptions, k: number, cli: boolean): CaseResult {
  const rng = new Prng(subSeed(opts.seed, k));
  const bytes = new Uint8Array(base.bytes);
  const steps = [`case ${k} (seed ${opts.seed})`, ...mutate(bytes, base, rng)];
  if (rng.int(4) === 0) new DataView(bytes.buffer).setUint32(48, 1, true); // marked crashed: the next open recovers
  const file = path.join(opts.dir, `case-${k}.region`);
  fs.writeFileSync(file, bytes);
  try {
    const failure = cli ? cliCase(file, base, rng, opts.bin, steps) : libraryCase(file, base, rng, opts.mmu, steps);
    return { kind: cli ? 'cli' : 'library', steps, failure };
  } finally {
    fs.rmSync(file, { force: true });
    fs.rmSync(`${file}.users`, { force: true });
    fs.rmSync(`${file}.lock`, { recursive: true, force: true });
  }
}

// --- library cases ------------------------------------------------------------------------

/** Runs `fn`; a failure text unless it returned or threw a MorselError. */
function typed(what: string, fn: () => void): string | null {
  try {
    fn();
    return null;
  } catch (e) {
    if (isMorselError(e) && !ENGINE_TEXT.test(e.message)) return null;
    return `${what}: ${e instanceof Error ? `${e.name}: ${e.message}\n${e.stack?.split('\n').slice(1, 4).join('\n')}` : String(e)}`;
  }
}

function libraryCase(file: string, base: Base, rng: Prng, mmu: boolean, steps: string[]): string | null {
  let memory: Memory | null = null;
  const recover = rng.int(5) !== 0;
  steps.push(`open (recover: ${recover})`);
  const opened = typed('open', () => (memory = Memory.open(file, { recover })));
  if (opened !== null || memory === null) return opened;
  const m: Memory = memory;
  try {
    for (let i = 0; i < OPS_PER_CASE; i++) {
      const failure = libraryOp(m, base, rng, mmu, steps);
      if (failure !== null) return failure;
    }
  } finally {
    const closed = typed('close', () => m.close());
    if (closed !== null) steps.push(closed);
  }
  return steps.find((s) => s.startsWith('close:')) ?? null;
}

const OPS = ['list', 'stats', 'read', 'write', 'populate', 'create', 'destroy', 'check', 'repair', 'mmu'] as const;

function libraryOp(m: Memory, base: Base, rng: Prng, mmu: boolean, steps: string[]): string | null {
  const op = rng.pick(OPS.filter((o) => mmu || o !== 'mmu'));
  const id = rng.pick(base.ids);
  const offset = rng.int(3) === 0 ? rng.int(4 * PAGE_SIZE) : rng.int(16) * PAGE_SIZE + rng.int(PAGE_SIZE);
  const length = rng.range(1, MAX_ACCESS_BYTES);
  steps.push(`${op} ${hex(id)} [${offset}, +${length})`);
  switch (op) {
    case 'list':
      return typed(op, () => m.morsels.list());
    case 'stats':
      return typed(op, () => m.morsels.stats(id));
    case 'read':
      return typed(op, () => m.morsels.read(id, offset, new Uint8Array(length)));
    case 'write':
      return containedWrite(m, id, offset, pattern(offset, length));
    case 'populate':
      return typed(op, () => m.morsels.populate(id, offset, length));
    case 'create':
      return typed(op, () => m.morsels.create(rng.int(3) as 0 | 1 | 2));
    case 'destroy':
      return typed(op, () => m.morsels.destroy(id));
    case 'check':
      return typed(op, () => checkRegion(m));
    case 'repair':
      return typed(op, () => checkRegion(m, { repair: true, apply: rng.int(2) === 0 }));
    case 'mmu':
      return typed(op, () => {
        const space = m.createSpace();
        try {
          const at = space.map(id);
          const access = new Mmu(space);
          access.read(at + offset, new Uint8Array(length));
          access.write(at + offset, pattern(offset, length));
        } finally {
          space.destroy();
        }
      });
  }
}

/** A write through the library (Morsels.write) checked for containment; the failure, or null. */
export function containedWrite(m: Memory, id: MorselId, offset: number, bytes: Uint8Array): string | null {
  return contained(m, id, () => typed('write', () => m.morsels.write(id, offset, bytes)));
}

/** A volatile Memory over a copy of region bytes (no file, no open-time checks): for property tests. */
export function memoryOf(bytes: Uint8Array): Memory {
  const sab = new SharedArrayBuffer(bytes.byteLength);
  new Uint8Array(sab).set(bytes);
  const frameCount = bytes.byteLength / PAGE_SIZE;
  return Memory.attach({ sab, mapCounts: new SharedArrayBuffer(frameCount * 4), frameCount, path: null, userSlot: 0, fd: -1, writable: true });
}

/**
 * Runs a write and checks containment: every changed frame was in the
 * morsel's subtree before (followed tolerantly), was free before, or is
 * allocator metadata. Returns the first violation or the write's failure.
 */
function contained(m: Memory, id: MorselId, write: () => string | null): string | null {
  const region = m.region;
  const before = new Uint8Array(region.byteLength);
  before.set(new Uint8Array(region.sab));
  const allowed = allowedFrames(m, id);
  const failure = write();
  if (failure !== null) return failure;
  const after = new Uint8Array(region.sab);
  for (let f = 0; f < region.frameCount; f++) {
    if (allowed[f]) continue;
    const a = f * PAGE_SIZE;
    for (let i = a; i < a + PAGE_SIZE; i++) {
      if (before[i] !== after[i]) return `write to ${hex(id)} changed frame ${f} byte ${i - a}, outside the morsel`;
    }
  }
  return null;
}

/** 1 for frames a write to `id` may change: its subtree as it is now, free frames, allocator metadata. */
function allowedFrames(m: Memory, id: MorselId): Uint8Array {
  const region = m.region;
  const allowed = new Uint8Array(region.frameCount);
  const view = new AllocatorView(region);
  for (let f = 0; f < region.frameCount; f++) if (f >= view.first && !view.isAllocated(f)) allowed[f] = 1;
  for (let f = META_START_FRAME; f < metaLayout(region.frameCount).usersFrame; f++) allowed[f] = 1;
  let d: DecodedId;
  try {
    d = m.morsels.dataOf(m.morsels.decode(id));
  } catch {
    return allowed; // a write to an ID that does not decode must change nothing outside the above
  }
  const stack: [number, number][] = [[d.rootFrame, d.order]];
  for (let steps = 0; stack.length > 0 && steps < region.frameCount; steps++) {
    const [table, level] = stack.pop()!;
    // Reserved and metadata frames are never the morsel's, whatever an entry says: the walker refuses them.
    if (table < view.first || table >= region.frameCount || allowed[table] === 2) continue;
    allowed[table] = 2;
    for (let i = 0; level > 0 && i < ENTRIES_PER_TABLE; i++) {
      const lo = region.loadLo(table as Frame, i);
      if (isPresent(lo)) stack.push([pfnOf(lo, region.loadHi(table as Frame, i)), level - 1]);
    }
  }
  return allowed;
}

// --- CLI cases --------------------------------------------------------------------------------

function cliCase(file: string, base: Base, rng: Prng, bin: string, steps: string[]): string | null {
  const id = hex(rng.pick(base.ids));
  const commands: string[][] = [
    ['stat', '--region', file],
    ['ls', '--region', file],
    ['inspect', id, '--region', file],
    ['read', id, '--region', file, '--offset', String(rng.int(2 * PAGE_SIZE)), '--length', String(rng.range(1, 100))],
    ['write', id, '--region', file, '--offset', String(rng.int(2 * PAGE_SIZE))],
    ['create', '--region', file, '--order', String(rng.int(3))],
    ['destroy', id, '--region', file],
    ['check', '--region', file],
    ['check', '--region', file, '--repair'],
    ['check', '--region', file, '--repair', '--yes'],
  ];
  const args = [...rng.pick(commands), '--json'];
  steps.push(`morsel ${args.join(' ')}`);
  const r = spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8', input: 'fuzzed input\n', timeout: CLI_TIMEOUT_MS });
  if (r.error !== undefined) return `spawn: ${r.error.message}`;
  if (r.signal !== null) return `killed by ${r.signal}; stderr: ${r.stderr.slice(0, 400)}`;
  let out: { error?: { code?: unknown; message?: unknown } };
  try {
    out = JSON.parse(r.stdout);
  } catch {
    return `stdout is not one JSON object: ${JSON.stringify(r.stdout.slice(0, 200))}; stderr: ${r.stderr.slice(0, 400)}`;
  }
  if (out.error === undefined) return r.status === 0 || r.status === 1 ? null : `exit status ${r.status} without an error object; stderr: ${r.stderr.slice(0, 400)}`;
  if (typeof out.error.code !== 'string' || typeof out.error.message !== 'string') return `malformed error: ${r.stdout.slice(0, 300)}`;
  if (out.error.code === 'EINTERNAL') return `internal error: ${out.error.message}`;
  if (r.status !== exitStatusOf(out.error.code as ErrorCode)) return `exit status ${r.status} for ${out.error.code}`;
  if (ENGINE_TEXT.test(out.error.message)) return `engine message reached the user: ${out.error.code}: ${out.error.message}`;
  return null;
}
