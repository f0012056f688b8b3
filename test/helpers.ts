import type { Memory } from '../src/memory.js';
import { Registry, superblockRoot } from '../src/morsel/registry.js';
import { ROOT_SLOT_SPACES } from '../src/space/address-space.js';
import { forEachUsageFrame } from '../src/morsel/usage.js';

/**
 * Free frames plus the frames of the region's registries (live morsels,
 * address spaces, this process's usage counts). Registry tables grow lazily and persist, so this is the
 * number that must balance when everything a test created is gone.
 */
export function freeFrames(m: Memory): number {
  let tables = 0;
  m.morsels.live.forEach(() => {}, () => tables++);
  new Registry(m.region, m.alloc, superblockRoot(m.region, ROOT_SLOT_SPACES)).forEach(() => {}, () => tables++);
  forEachUsageFrame(m.region, m.alloc, m.region.userSlot, () => tables++);
  return m.alloc.freeFrames() + tables;
}
