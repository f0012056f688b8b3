/**
 * Finding, creating and mapping the cache morsel of a kv server through the
 * management layer: the cache is the named morsel `--name` (memory.names),
 * created with a fixed address (a meta morsel whose range is reserved
 * region-wide), mode 0o600 and the creating user as owner, so `morsel ls`
 * and `morsel stat` show it, and a user without rights gets EACCES.
 *
 * Commit points: names.create is the name's (a crash before it leaves a
 * PENDING morsel that recovery destroys). Population and formatting follow:
 * a crash before the store's magic word is written leaves a named morsel
 * holding zeros, which the next open populates (idempotent) and formats.
 */
import { isMorselError, check } from '../../errors.js';
import type { Memory } from '../../memory.js';
import type { MorselHandle } from '../../manage/handle.js';
import type { MorselId } from '../../morsel/id.js';
import type { AddressSpace } from '../../space/address-space.js';
import { Mmu } from '../../space/mmu.js';
import { KV_BASE, KV_ORDER, KvStore, kvGeometry } from './store.js';

/** Mode of a new cache morsel and of the directories made above it. */
const CACHE_MODE = 0o600;
const DIR_MODE = 0o755;
/** A path of 4096 bytes has at most 2048 components. */
const MAX_PATH_DEPTH = 2048;

export interface OpenCache {
  id: MorselId;
  created: boolean;
  store: KvStore;
  mmu: Mmu;
  space: AddressSpace;
  /** Unmaps, destroys the scratch space and closes the handle (the morsel stays, named). */
  close(): void;
}

/** Creates the directories above `name` that do not exist yet (EEXIST from a racing creator is fine). */
function makeParents(m: Memory, name: string): void {
  const parts = name.split('/').filter((p) => p.length > 0);
  check(parts.length <= MAX_PATH_DEPTH, 'EINVAL', 'name too deep');
  for (let i = 1; i < parts.length; i++) {
    const dir = '/' + parts.slice(0, i).join('/');
    try {
      m.names.mkdir(dir, { mode: DIR_MODE });
    } catch (e) {
      if (!isMorselError(e, 'EEXIST')) throw e;
    }
  }
}

/** Opens the named cache morsel for writing, creating it (fixed address KV_BASE) when the name does not exist. */
function openOrCreate(m: Memory, name: string, sizeBytes: number): { h: MorselHandle; created: boolean } {
  check(name.startsWith('/') && name.length <= 255 && !/[\0-\x1f]/.test(name), 'EINVAL', () => `--name must be an absolute name like /kv/default, got ${JSON.stringify(name)}`);
  try {
    return { h: m.names.open(name, { write: true }), created: false };
  } catch (e) {
    if (!isMorselError(e, 'ENOENT')) throw e;
  }
  makeParents(m, name);
  try {
    return { h: m.names.create(name, { sizeBytes, order: KV_ORDER, fixedAddress: KV_BASE, mode: CACHE_MODE, levels: 4 }), created: true };
  } catch (e) {
    if (!isMorselError(e, 'EEXIST')) throw e; // another server created it first
    return { h: m.names.open(name, { write: true }), created: false };
  }
}

/** Opens (or creates) the cache `name` of `memMiB` MiB and maps it at its fixed address. */
export function openCache(m: Memory, name: string, memMiB: number): OpenCache {
  const geo = kvGeometry(memMiB);
  const { h, created } = openOrCreate(m, name, geo.sizeBytes);
  let space: AddressSpace | null = null;
  try {
    const d = m.morsels.decode(h.id);
    check(d.meta, 'EINVAL', `${name} is not a kv cache morsel`);
    const meta = m.morsels.metaOf(d);
    check(meta.address === KV_BASE, 'EINVAL', `${name} is not a kv cache morsel (it maps at 0x${meta.address.toString(16)})`);
    check(meta.sizeBytes === geo.sizeBytes, 'EINVAL', () => `${name} was created with another -m (${meta.sizeBytes} bytes, -m ${memMiB} needs ${geo.sizeBytes})`);
    // Not formatted yet (new, or a crash before the magic word): allocate every page now, so a store never meets ENOSPC.
    if (new Int32Array(m.names.read(h, 0, 4).buffer)[0] === 0) m.morsels.populate(h.id, 0, geo.sizeBytes);
    space = m.createSpace({ levels: 4 });
    m.names.map(h, space, { write: true });
    const mmu = new Mmu(space);
    mmu.enter();
    let store: KvStore;
    try {
      store = new KvStore(mmu, memMiB);
    } finally {
      mmu.exit();
    }
    const sp = space;
    return {
      id: h.id,
      created,
      store,
      mmu,
      space: sp,
      close: () => {
        mmu.close();
        sp.unmap(KV_BASE);
        sp.destroy();
        m.names.close(h);
      },
    };
  } catch (e) {
    space?.destroy();
    m.names.close(h);
    throw e;
  }
}
