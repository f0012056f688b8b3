/**
 * TEMPORARY in-memory stand-in for helper h6's persistent namespace (same
 * interface); deleted before h5's final commit. Not crash-consistent, not
 * shared between processes.
 */
import { MorselError, check } from '../errors.js';
import type { FrameAllocator } from '../alloc/llfree.js';
import type { Region } from '../physical/region.js';
import type { NameRecord, NodeKind } from './names.js';

const ROOT: NameRecord = { kind: 'dir', id: 0n, generation: 0, sizeBytes: 0, uid: 0, gid: 0, mode: 0o1777, ctimeMs: 0, mtimeMs: 0, fixedAddress: null };

export class Namespace {
  private readonly recs = new Map<string, NameRecord>([['/', ROOT]]);

  constructor(_region: Region, _alloc: FrameAllocator) {}

  private parts(path: string): string[] {
    check(typeof path === 'string' && path.startsWith('/'), 'EINVAL', `path must be absolute: ${JSON.stringify(path)}`);
    check(path.length <= 4096, 'ENAMETOOLONG', 'path too long');
    if (path === '/') return [];
    const parts = path.slice(1).split('/');
    for (const p of parts) {
      check(p !== '' && p !== '.' && p !== '..' && !p.includes('\0'), 'EINVAL', `bad component ${JSON.stringify(p)}`);
      check(Buffer.byteLength(p) <= 255, 'ENAMETOOLONG', 'component too long');
    }
    return parts;
  }

  resolve(path: string): NameRecord[] {
    const parts = this.parts(path);
    const out = [ROOT];
    let cur = '';
    for (const p of parts) {
      check(out[out.length - 1].kind === 'dir', 'ENOTDIR', `${cur || '/'} is not a directory`);
      cur += '/' + p;
      const r = this.recs.get(cur);
      if (!r) throw new MorselError('ENOENT', `${cur} does not exist`);
      out.push(r);
    }
    return out;
  }
  lookup(path: string): NameRecord {
    const r = this.resolve(path);
    return r[r.length - 1];
  }
  private parent(path: string): string {
    const i = path.lastIndexOf('/');
    return i <= 0 ? '/' : path.slice(0, i);
  }
  create(path: string, rec: NameRecord): void {
    check(this.parts(path).length > 0, 'EEXIST', '/ exists');
    check(this.lookup(this.parent(path)).kind === 'dir', 'ENOTDIR', 'parent is not a directory');
    check(!this.recs.has(path), 'EEXIST', `${path} exists`);
    this.recs.set(path, { ...rec });
  }
  rename(from: string, to: string): void {
    this.lookup(from);
    check(!this.recs.has(to), 'EEXIST', `${to} exists`);
    check(!(to + '/').startsWith(from + '/'), 'EINVAL', 'into itself');
    check(this.lookup(this.parent(to)).kind === 'dir', 'ENOTDIR', 'parent is not a directory');
    for (const [k, v] of [...this.recs]) {
      if (k === from || k.startsWith(from + '/')) {
        this.recs.delete(k);
        this.recs.set(to + k.slice(from.length), v);
      }
    }
  }
  remove(path: string, kind: NodeKind): NameRecord {
    const r = this.lookup(path);
    check(r.kind === kind, r.kind === 'dir' ? 'EISDIR' : 'ENOTDIR', 'kind mismatch');
    if (kind === 'dir') check(this.list(path).length === 0, 'ENOTEMPTY', `${path} is not empty`);
    this.recs.delete(path);
    return r;
  }
  update(path: string, change: (rec: NameRecord) => NameRecord): NameRecord {
    const r = change(this.lookup(path));
    this.recs.set(path, r);
    return r;
  }
  list(dirPath: string): { name: string; rec: NameRecord }[] {
    check(this.lookup(dirPath).kind === 'dir', 'ENOTDIR', 'not a directory');
    const prefix = dirPath === '/' ? '/' : dirPath + '/';
    return [...this.recs].filter(([k]) => k !== '/' && k.startsWith(prefix) && !k.slice(prefix.length).includes('/')).map(([k, rec]) => ({ name: k.slice(prefix.length), rec }));
  }
  forEachFrame(_visit: (frame: number) => void): void {}
}
