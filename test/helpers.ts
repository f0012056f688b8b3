import type { Memory } from '../src/memory.js';
import { Registry, userSlotRoot } from '../src/morsel/registry.js';
import { SLOT_SPACES_ROOT } from '../src/physical/layout.js';
import { forEachUsageFrame } from '../src/morsel/usage.js';

/**
 * Free frames plus the frames of the region's registries (live morsels,
 * this process's address spaces and usage counts) and of the reference-count table. Registry tables grow lazily and persist, so this is the
 * number that must balance when everything a test created is gone.
 */
export function freeFrames(m: Memory): number {
  let tables = 0;
  m.morsels.live.forEach(() => {}, () => tables++);
  new Registry(m.region, m.alloc, userSlotRoot(m.region, m.region.userSlot, SLOT_SPACES_ROOT)).forEach(() => {}, () => tables++);
  forEachUsageFrame(m.region, m.alloc, m.region.userSlot, () => tables++);
  m.morsels.cow.refs.forEachStorageFrame(() => tables++);
  return m.alloc.freeFrames() + tables;
}
