/**
 * The names child's view of its subtree (TORTURE_ROOT) as plain data: the
 * driver (names.ts) keeps one to choose valid operations, the parent's model
 * (names-model.ts) replays acknowledged operations onto one and compares it
 * with the tree read back from the recovered region.
 */
import { isMorselError } from '../../errors.js';
import { hex } from '../../morsel/id.js';
import type { Names } from '../../manage/names.js';
import type { LogEvent } from './log.js';

/** Every name the torture makes lives below this directory. */
export const TORTURE_ROOT = '/t';
/** A created name whose incarnation the log does not know (an interrupted create). */
export const ANY_ID = '*';

export interface FileNode {
  kind: 'morsel';
  id: string;
  gen: number;
  mode: number;
  fixed: number | null;
}

export interface DirNode {
  kind: 'dir';
  mode: number;
}

export type NameNode = FileNode | DirNode;

/** Deeper than any tree the driver builds (it nests at most MAX_DEPTH directories). */
const MAX_WALK_DEPTH = 64;

export class NameTree {
  readonly nodes = new Map<string, NameNode>();

  clone(): NameTree {
    const t = new NameTree();
    for (const [p, n] of this.nodes) t.nodes.set(p, { ...n });
    return t;
  }

  /** Applies an acknowledged (or, for the model's second candidate, an interrupted) name operation. */
  apply(e: LogEvent): void {
    switch (e.op) {
      case 'mkdir':
        this.nodes.set(e.path!, { kind: 'dir', mode: e.mode! });
        break;
      case 'ncreate':
      case 'nfixed':
        this.nodes.set(e.path!, { kind: 'morsel', id: e.id ?? ANY_ID, gen: e.gen ?? -1, mode: e.mode!, fixed: e.address ?? null });
        break;
      case 'rmdir':
      case 'unlink':
        this.nodes.delete(e.path!);
        break;
      case 'rename':
        this.rename(e.path!, e.to!);
        break;
      case 'chmod':
        this.nodes.get(e.path!)!.mode = e.mode!;
        break;
      default: // open, close, nmap, nunmap, nwrite, reap: the tree does not change
    }
  }

  /** Moves `from` and everything below it to `to`. */
  private rename(from: string, to: string): void {
    for (const [p, n] of [...this.nodes]) {
      if (p !== from && !p.startsWith(`${from}/`)) continue;
      this.nodes.delete(p);
      this.nodes.set(to + p.slice(from.length), n);
    }
  }

  children(dir: string): string[] {
    return [...this.nodes.keys()].filter((p) => p.startsWith(`${dir}/`) && !p.slice(dir.length + 1).includes('/'));
  }

  paths(kind: NameNode['kind']): string[] {
    return [...this.nodes].filter(([, n]) => n.kind === kind).map(([p]) => p);
  }

  /** The first difference from `actual` (null if equal); ANY_ID in this tree matches any incarnation. */
  diff(actual: NameTree): string | null {
    for (const [p, want] of this.nodes) {
      const got = actual.nodes.get(p);
      if (got === undefined) return `${p} is missing`;
      if (got.kind !== want.kind) return `${p} is a ${got.kind}, expected a ${want.kind}`;
      if (got.mode !== want.mode) return `${p} has mode 0${got.mode.toString(8)}, expected 0${want.mode.toString(8)}`;
      if (got.kind === 'morsel' && want.kind === 'morsel') {
        if (want.id !== ANY_ID && (got.id !== want.id || got.gen !== want.gen)) return `${p} names ${got.id}@${got.gen}, expected ${want.id}@${want.gen}`;
        if (got.fixed !== want.fixed) return `${p} has fixed address ${got.fixed}, expected ${want.fixed}`;
      }
    }
    for (const p of actual.nodes.keys()) if (!this.nodes.has(p)) return `${p} exists but was never acknowledged`;
    return null;
  }
}

/** The tree below `root` as the region has it (empty if `root` does not exist). */
export function readTree(names: Names, root: string = TORTURE_ROOT): NameTree {
  const t = new NameTree();
  const walk = (dir: string, depthLeft: number): void => {
    if (depthLeft === 0) throw new Error(`namespace below ${root} deeper than ${MAX_WALK_DEPTH}`);
    for (const { name, rec } of names.list(dir)) {
      const p = dir === '/' ? `/${name}` : `${dir}/${name}`;
      if (rec.kind === 'dir') {
        t.nodes.set(p, { kind: 'dir', mode: rec.mode });
        walk(p, depthLeft - 1);
      } else t.nodes.set(p, { kind: 'morsel', id: hex(rec.id), gen: rec.generation, mode: rec.mode, fixed: rec.fixedAddress });
    }
  };
  if (root !== '/') {
    let rec;
    try {
      rec = names.stat(root);
    } catch (e) {
      if (isMorselError(e, 'ENOENT')) return t;
      throw e;
    }
    t.nodes.set(root, { kind: 'dir', mode: rec.mode });
  }
  walk(root, MAX_WALK_DEPTH);
  return t;
}
