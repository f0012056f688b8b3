/**
 * Finding, creating and mapping the cache morsel of a kv server.
 *
 * Naming: until the names layer (memory.names) lands, `resolveCacheId` keeps
 * name -> morsel ID in a small JSON file next to the region
 * (`<region>.kv-names.json`, replaced atomically by rename). It is the one
 * function to swap for `memory.names` later. A crash between creating the
 * morsel and renaming the file leaks that morsel (it stays live, unnamed).
 */
import * as fs from 'node:fs';
import { MorselError, check } from '../../errors.js';
import type { Memory } from '../../memory.js';
import { parseId, hex, type MorselId } from '../../morsel/id.js';
import type { AddressSpace } from '../../space/address-space.js';
import { Mmu } from '../../space/mmu.js';
import { KV_BASE, KV_ORDER, KvStore, kvGeometry } from './store.js';

export interface OpenCache {
  id: MorselId;
  created: boolean;
  store: KvStore;
  mmu: Mmu;
  space: AddressSpace;
  /** Unmaps and destroys the scratch space (the morsel stays). */
  close(): void;
}

function namesFile(regionPath: string): string {
  return `${regionPath}.kv-names.json`;
}

function readNames(regionPath: string): Record<string, string> {
  try {
    const o = JSON.parse(fs.readFileSync(namesFile(regionPath), 'utf8')) as unknown;
    check(o !== null && typeof o === 'object' && !Array.isArray(o), 'ECORRUPT', `${namesFile(regionPath)} is not a JSON object`);
    return o as Record<string, string>;
  } catch (e) {
    if ((e as { code?: string }).code === 'ENOENT') return {};
    if (e instanceof SyntaxError) throw new MorselError('ECORRUPT', `${namesFile(regionPath)} is not valid JSON`);
    throw e;
  }
}

/**
 * The morsel ID stored under `name`, or the one `create()` makes (then
 * recorded). Swap for memory.names when the names layer is merged.
 */
export function resolveCacheId(m: Memory, regionPath: string, name: string, create: () => MorselId): { id: MorselId; created: boolean } {
  check(name.startsWith('/') && name.length <= 255 && !/[\0-\x1f]/.test(name), 'EINVAL', () => `--name must be an absolute name like /kv/default, got ${JSON.stringify(name)}`);
  const names = readNames(regionPath);
  const known = names[name];
  if (known !== undefined) {
    const id = parseId(known) as MorselId;
    m.morsels.decode(id); // EINVAL if the morsel is gone (region re-created)
    return { id, created: false };
  }
  const id = create();
  names[name] = hex(id);
  const tmp = `${namesFile(regionPath)}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, JSON.stringify(names, null, 1) + '\n');
  fs.renameSync(tmp, namesFile(regionPath));
  return { id, created: true };
}

/** Creates the cache's meta morsel at KV_BASE and populates it whole (so a store never meets ENOSPC later). */
function createCacheMorsel(m: Memory, memMiB: number): MorselId {
  const geo = kvGeometry(memMiB);
  const id = m.morsels.createMeta(KV_ORDER, { address: KV_BASE, sizeBytes: geo.sizeBytes });
  try {
    m.morsels.populate(id, 0, geo.sizeBytes);
  } catch (e) {
    m.morsels.destroy(id);
    throw e;
  }
  return id;
}

/** Opens (or creates) the cache `name` of `memMiB` MiB and maps it at its fixed address. */
export function openCache(m: Memory, regionPath: string, name: string, memMiB: number): OpenCache {
  const geo = kvGeometry(memMiB);
  const { id, created } = resolveCacheId(m, regionPath, name, () => createCacheMorsel(m, memMiB));
  const d = m.morsels.decode(id);
  check(d.meta, 'EINVAL', `${name} is not a kv cache morsel`);
  const meta = m.morsels.metaOf(d);
  check(meta.address === KV_BASE, 'EINVAL', `${name} is not a kv cache morsel (it maps at 0x${meta.address.toString(16)})`);
  check(meta.sizeBytes === geo.sizeBytes, 'EINVAL', () => `${name} was created with another -m (${meta.sizeBytes} bytes, -m ${memMiB} needs ${geo.sizeBytes})`);
  const space = m.createSpace({ levels: 4 });
  try {
    space.map(id, { rights: { write: true } });
    const mmu = new Mmu(space);
    mmu.enter();
    let store: KvStore;
    try {
      store = new KvStore(mmu, memMiB);
    } finally {
      mmu.exit();
    }
    return {
      id,
      created,
      store,
      mmu,
      space,
      close: () => {
        mmu.close();
        space.unmap(KV_BASE);
        space.destroy();
      },
    };
  } catch (e) {
    space.destroy();
    throw e;
  }
}
