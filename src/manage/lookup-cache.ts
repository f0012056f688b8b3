/**
 * A per-process positive lookup cache for Names.open, like the kernel's
 * dcache: path -> the morsel incarnation it resolved to, the rights the
 * caller's credentials hold on it, and where the use it last counted lives
 * (data root, word frame).
 *
 * # Warning: per-process state about a shared region. It is safe because
 * every entry is tied to the namespace's region-wide change epoch
 * (Namespace.changeEpoch, stored in the namespace header in the region):
 * unlink, rmdir, rename, chmod, chown (every update) and recovery bump it
 * before their commit points, and an entry is filled only from a walk that
 * began with no change in flight (Namespace.settledEpoch) and is used only
 * while the epoch is unchanged; the whole cache is dropped when it moves.
 * Namespace.changing() proves a hit equals a fresh walk at the time of the
 * use, so another process's unlink/rename/chmod is seen by the next open
 * here. Creates do not bump the epoch: they cannot change a positive result.
 * Rights are cached per credentials (one Names instance, whose credentials
 * are frozen) under the same epoch rule; a hit whose rights do not suffice
 * takes the full path, which gives the error. The morsel's incarnation is
 * re-checked by every use (Morsels.useKnown: a destroyed morsel is ESTALE,
 * as without the cache).
 *
 * Bounded: at most `maxEntries` entries (oldest dropped first).
 */
import { check } from '../errors.js';
import type { HandleTarget } from './handle.js';
import type { Namespace } from './namespace.js';

/** The default bound: enough for the working set of a busy server, ~10 MiB at most. */
export const DEFAULT_LOOKUP_CACHE_ENTRIES = 1 << 16;

/** One cached resolution: the target every handle opened through it shares, plus the caller's rights. */
export interface CachedName extends HandleTarget {
  /**
   * R_OK | W_OK | X_OK the owning Names' (frozen) credentials hold on the
   * name, cached per credentials under the same epoch rule (chmod and chown
   * bump it); the search permission on every directory above was checked
   * when the entry was filled.
   */
  readonly granted: number;
}

export class LookupCache {
  private readonly map = new Map<string, CachedName>();
  /** the change epoch every entry was filled under */
  private epoch = 0;

  constructor(
    private readonly ns: Namespace,
    readonly maxEntries: number = DEFAULT_LOOKUP_CACHE_ENTRIES,
  ) {
    check(Number.isSafeInteger(maxEntries) && maxEntries >= 0, 'EINVAL', () => `lookup cache size must be a non-negative integer, got ${maxEntries}`);
  }

  /** The entry of `path` if it is still current (one atomic load); drops everything when the epoch moved. */
  get(path: string): CachedName | undefined {
    const e = this.ns.changeEpoch();
    if (e !== this.epoch) {
      this.map.clear();
      this.epoch = e;
      return undefined;
    }
    return this.map.get(path);
  }

  /** To call BEFORE the walk whose result may be put(): the epoch to put it under, or null (do not cache). */
  begin(): number | null {
    return this.maxEntries === 0 ? null : this.ns.settledEpoch();
  }

  /** Caches `entry` for `path`, resolved by a walk that began at `epoch` (from begin()). */
  put(path: string, epoch: number | null, entry: CachedName): void {
    if (epoch === null || epoch !== this.ns.changeEpoch()) return;
    if (epoch !== this.epoch) {
      this.map.clear();
      this.epoch = epoch;
    }
    if (this.map.size >= this.maxEntries && !this.map.has(path)) this.map.delete(this.map.keys().next().value!);
    this.map.set(path, entry);
  }

  /** Forgets `path` (its use failed: the incarnation is gone or changing). */
  forget(path: string): void {
    this.map.delete(path);
  }

  get size(): number {
    return this.map.size;
  }
}
