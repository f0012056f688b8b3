// Shared by the namespace tests and the crash child: a Map model of the
// namespace, random operations on a small universe of paths, and a snapshot
// of the real namespace in the model's form.
import assert from 'node:assert/strict';
import fc from 'fast-check';
import type { Namespace, NameRecord, NodeKind } from '../src/manage/namespace.js';
import { isMorselError, type ErrorCode } from '../src/errors.js';

export const dirRec = (mode = 0o755): NameRecord => ({ kind: 'dir', id: 0n, generation: 0, sizeBytes: 0, uid: 1000, gid: 1000, mode, ctimeMs: 1, mtimeMs: 1, fixedAddress: null });
export const morselRec = (id: bigint, sizeBytes = 100): NameRecord => ({
  kind: 'morsel', id, generation: 3, sizeBytes, uid: 1000, gid: 100, mode: 0o640, ctimeMs: 1700000000123, mtimeMs: 1700000000456, fixedAddress: null,
});

/** path -> "kind:id:mtime" */
export type Model = Map<string, string>;
export type Op = { t: 'create'; a: string; kind: NodeKind } | { t: 'remove'; a: string; kind: NodeKind } | { t: 'rename'; a: string; b: string } | { t: 'update'; a: string };

const stamp = (rec: NameRecord): string => `${rec.kind}:${rec.id}:${rec.mtimeMs}`;

export function codeOf(f: () => unknown): ErrorCode | 'ok' {
  try {
    f();
    return 'ok';
  } catch (e) {
    if (isMorselError(e)) return e.code;
    throw e;
  }
}

/** The record op i creates. */
const created = (op: Op & { t: 'create' }, i: number): NameRecord => (op.kind === 'dir' ? dirRec() : morselRec(BigInt(i)));

export function applyOp(ns: Namespace, op: Op, i: number): ErrorCode | 'ok' {
  return codeOf(() => {
    if (op.t === 'create') ns.create(op.a, created(op, i));
    else if (op.t === 'remove') ns.remove(op.a, op.kind);
    else if (op.t === 'rename') ns.rename(op.a, op.b);
    else ns.update(op.a, (r) => ({ ...r, mtimeMs: i }));
  });
}

function parentError(k: Model, p: string): ErrorCode | null {
  let cur = '';
  for (const part of p.split('/').slice(1, -1)) {
    cur += `/${part}`;
    const v = k.get(cur);
    if (v === undefined) return 'ENOENT';
    if (!v.startsWith('dir:')) return 'ENOTDIR';
  }
  return null;
}

/** Applies op i to the model; returns the code the namespace must give. */
export function modelOp(k: Model, op: Op, i: number): ErrorCode | 'ok' {
  const e = parentError(k, op.a);
  if (e) return e;
  const cur = k.get(op.a);
  if (op.t === 'create') {
    if (cur !== undefined) return 'EEXIST';
    k.set(op.a, stamp(created(op, i)));
    return 'ok';
  }
  if (cur === undefined) return 'ENOENT';
  const isDir = cur.startsWith('dir:');
  if (op.t === 'update') {
    k.set(op.a, cur.replace(/:[^:]*$/, `:${i}`));
    return 'ok';
  }
  if (op.t === 'remove') {
    if (isDir && op.kind === 'morsel') return 'EISDIR';
    if (!isDir && op.kind === 'dir') return 'ENOTDIR';
    if ([...k.keys()].some((p) => p.startsWith(`${op.a}/`))) return 'ENOTEMPTY';
    k.delete(op.a);
    return 'ok';
  }
  if (op.a === op.b) return 'ok';
  if (isDir && op.b.startsWith(`${op.a}/`)) return 'EINVAL';
  const e2 = parentError(k, op.b);
  if (e2) return e2;
  if (k.has(op.b)) return 'EEXIST';
  for (const [p, v] of [...k]) {
    if (p === op.a || p.startsWith(`${op.a}/`)) {
      k.delete(p);
      k.set(op.b + p.slice(op.a.length), v);
    }
  }
  return 'ok';
}

export const sortedModel = (k: Model): Model => new Map([...k].sort());

const arbPath = fc.array(fc.constantFrom('a', 'b', 'c'), { minLength: 1, maxLength: 3 }).map((parts) => `/${parts.join('/')}`);
const arbKind = fc.constantFrom<NodeKind>('dir', 'morsel');
export const arbOp: fc.Arbitrary<Op> = fc.oneof(
  fc.record({ t: fc.constant('create' as const), a: arbPath, kind: arbKind }),
  fc.record({ t: fc.constant('create' as const), a: arbPath, kind: arbKind }),
  fc.record({ t: fc.constant('remove' as const), a: arbPath, kind: arbKind }),
  fc.record({ t: fc.constant('rename' as const), a: arbPath, b: arbPath }),
  fc.record({ t: fc.constant('update' as const), a: arbPath }),
);

/** A random op from `rand` (the crash child's PRNG), same distribution shape as arbOp. */
export function randomOp(rand: (n: number) => number): Op {
  const names = ['a', 'b', 'c'];
  const path = (): string => `/${Array.from({ length: 1 + rand(3) }, () => names[rand(3)]).join('/')}`;
  const kind: NodeKind = rand(2) === 0 ? 'dir' : 'morsel';
  const t = rand(5);
  if (t < 2) return { t: 'create', a: path(), kind };
  if (t === 2) return { t: 'remove', a: path(), kind };
  if (t === 3) return { t: 'rename', a: path(), b: path() };
  return { t: 'update', a: path() };
}

/** Every visible path with its stamp, by walking list() from '/' (each also checked by lookup). */
export function snapshotTree(ns: Namespace): Model {
  const out: Model = new Map();
  const walk = (dir: string): void => {
    for (const { name, rec } of ns.list(dir)) {
      const p = dir === '/' ? `/${name}` : `${dir}/${name}`;
      assert.ok(!out.has(p), `${p} listed once`);
      out.set(p, stamp(rec));
      assert.equal(stamp(ns.lookup(p)), stamp(rec));
      if (rec.kind === 'dir') walk(p);
    }
  };
  walk('/');
  return sortedModel(out);
}

/** Records claimed by a quiescent namespace: one per name and per kept key, one more per directory (its object), the root's object and record. */
export function expectedRecords(ns: Namespace): number {
  const s = ns.stats();
  return s.names + s.keptKeys + s.dirs + Number(s.rootObject) + Number(s.rootRecord);
}
