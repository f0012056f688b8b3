// Worker for namespace.test: attaches to the shared region, waits at a
// barrier, then runs random namespace operations. Reports counts; any error
// other than the expected codes is rethrown (fails the test).
import { workerData, parentPort } from 'node:worker_threads';
import { Memory } from '../../src/memory.js';
import { Namespace, type NameRecord } from '../../src/manage/namespace.js';
import { isMorselError } from '../../src/errors.js';

const { region, job, seed, ops, barrier } = workerData as { region: never; job: string; seed: number; ops: number; barrier: SharedArrayBuffer };
const memory = Memory.attach(region);
const ns = new Namespace(memory.region, memory.alloc);
let state = seed >>> 0 || 1;
const rand = (n: number): number => {
  state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
  return Math.floor((state / 2 ** 32) * n);
};
const dir: NameRecord = { kind: 'dir', id: 0n, generation: 0, sizeBytes: 0, uid: 0, gid: 0, mode: 0o755, ctimeMs: 0, mtimeMs: 0, fixedAddress: null };
const morsel = (i: number): NameRecord => ({ ...dir, kind: 'morsel', id: BigInt(i), generation: 1, sizeBytes: i });
const EXPECTED = new Set(['ENOENT', 'EEXIST', 'ENOTEMPTY', 'ENOTDIR', 'EISDIR', 'EINVAL']);
const counts: Record<string, number> = { ok: 0, failed: 0, rmdirOk: 0, createOk: 0 };

function attempt(what: string, f: () => unknown): boolean {
  try {
    f();
    counts.ok++;
    return true;
  } catch (e) {
    if (!isMorselError(e) || !EXPECTED.has(e.code)) throw new Error(`${what}: ${String(e)}`, { cause: e });
    counts.failed++;
    return false;
  }
}

const DIRS = ['/a', '/b', '/a/x', '/b/y'];
const name = (): string => `${DIRS[rand(DIRS.length)]}/n${rand(12)}`;

function mixed(i: number): void {
  const r = rand(100);
  if (r < 25) attempt('create', () => ns.create(name(), morsel(i)));
  else if (r < 40) attempt('unlink', () => ns.remove(name(), 'morsel'));
  else if (r < 60) attempt('rename', () => ns.rename(name(), name()));
  else if (r < 70) attempt('update', () => ns.update(name(), (rec) => ({ ...rec, mtimeMs: i })));
  else if (r < 75) attempt('mkdir', () => ns.create(`${DIRS[rand(2)]}/t`, dir));
  else if (r < 80) attempt('rmdir', () => ns.remove(`${DIRS[rand(2)]}/t`, 'dir'));
  else if (r < 83) attempt('rename dir', () => ns.rename(`${DIRS[rand(2)]}/t`, `${DIRS[rand(4)]}/t2`));
  else if (r < 86) attempt('rename dir back', () => ns.rename(`${DIRS[rand(4)]}/t2`, `${DIRS[rand(2)]}/t`));
  else attempt('lookup', () => ns.lookup(name()));
}

function rmdirRace(i: number): void {
  const r = rand(4);
  if (r === 0) attempt('mkdir', () => ns.create('/r', dir));
  else if (r === 1) counts.rmdirOk += attempt('rmdir', () => ns.remove('/r', 'dir')) ? 1 : 0;
  else if (r === 2) counts.createOk += attempt('create', () => ns.create(`/r/f${seed}`, morsel(i))) ? 1 : 0;
  else attempt('unlink', () => ns.remove(`/r/f${seed}`, 'morsel'));
}

/** Every number of a stamped record is the same k: a torn read would mix two. */
const stamped = (k: number): NameRecord => ({ ...dir, kind: 'morsel', id: BigInt(k), generation: k, sizeBytes: k, uid: k, gid: k, ctimeMs: k, mtimeMs: k, fixedAddress: k });

function tornWriter(i: number): void {
  const r = rand(4);
  if (r === 0) attempt('update', () => ns.update('/t', () => stamped(i)));
  else if (r === 1) attempt('rename', () => ns.rename('/t', '/u'));
  else if (r === 2) attempt('rename back', () => ns.rename('/u', '/t'));
  else if (attempt('unlink', () => ns.remove('/t', 'morsel'))) attempt('create', () => ns.create('/t', stamped(i)));
}

function tornReader(): void {
  for (const p of ['/t', '/u']) {
    try {
      const r = ns.lookup(p);
      const k = r.generation;
      if (!(r.id === BigInt(k) && r.sizeBytes === k && r.uid === k && r.gid === k && r.ctimeMs === k && r.mtimeMs === k && r.fixedAddress === k)) {
        throw new Error(`torn record at ${p}: ${JSON.stringify(r, (_k, v) => (typeof v === 'bigint' ? String(v) : v))}`);
      }
      counts.ok++;
    } catch (e) {
      if (!isMorselError(e, 'ENOENT')) throw e;
      counts.failed++;
    }
  }
}

/** Both workers create and remove the same four names (kept keys revived under contention); per-name net creates. */
function reviveRace(i: number): void {
  const k = rand(4);
  const p = `/v/n${k}`;
  if (rand(2) === 0) {
    if (attempt('create', () => ns.create(p, morsel(i)))) counts[`net${k}`] = (counts[`net${k}`] ?? 0) + 1;
  } else if (attempt('unlink', () => ns.remove(p, 'morsel'))) counts[`net${k}`] = (counts[`net${k}`] ?? 0) - 1;
}

const gate = new Int32Array(barrier);
Atomics.add(gate, 0, 1);
while (Atomics.load(gate, 1) === 0) Atomics.wait(gate, 1, 0, 10);
const jobs: Record<string, (i: number) => void> = { mixed, 'rmdir-race': rmdirRace, torn: seed % 2 === 1 ? tornWriter : tornReader, 'revive-race': reviveRace };
for (let i = 0; i < ops; i++) jobs[job](i);
memory.alloc.release();
parentPort!.postMessage(counts);
