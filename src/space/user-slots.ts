/**
 * What a user slot's roots hold above the physical layer, and how a slot is
 * emptied: by its owner at close (counted: this process counted its
 * mappings), or by whoever finds it dead (reapDeadSlots: uncounted, the
 * dead process's counts died with it). The lock protocol that decides who
 * may empty a slot is in src/physical/membership.ts and Region.tryReap.
 *
 * A slot holds registries: its address spaces (SLOT_SPACES_ROOT, keyed by
 * space root frame, see address-space.ts) and its usage registries, one per
 * lane (SLOT_USAGE_ROOTS, src/morsel/usage.ts: counts only, so dropping them
 * = freeing their tables). All are per process: nothing in them outlives
 * their process.
 */
import type { Morsels } from '../morsel/morsels.js';
import { Registry, userSlotRoot, type RootCell } from '../morsel/registry.js';
import { forEachUsageFrame } from '../morsel/usage.js';
import { SLOT_SPACES_ROOT, SLOT_USAGE_ROOTS, USER_SLOTS } from '../physical/layout.js';
import { NO_SLOT } from '../physical/region.js';
import type { Frame } from '../units.js';
import { countSpaces, forEachSpaceFrame, reapSpaces } from './address-space.js';

export interface ReapReport {
  /** dead users' slots emptied */
  slots: number;
  /** their address spaces torn down */
  spaces: number;
}

/**
 * Frees every table of the registry in `cell`. The root is unlinked (one
 * CAS) before any table is freed, so a crash in between only leaks the
 * tables until the next recovery; nothing can reach a freed table.
 * # Warning: another process reading this registry (summing a dead slot's
 * counts it still believed alive) may read a freed, reused table; such a
 * reader must validate what it reads (the walker's range checks) and treat
 * the slot as dead, which it is.
 */
export function dropRegistry(morsels: Morsels, cell: RootCell): number {
  const tables: Frame[] = [];
  new Registry(morsels.region, morsels.alloc, cell).forEach(() => {}, (frame) => tables.push(frame));
  if (tables.length === 0 || !cell.cas(cell.load(), 0)) return 0;
  for (const frame of tables) morsels.alloc.free(frame);
  return tables.length;
}

/** Destroys slot `slot`'s address spaces and drops all its registries; returns the spaces torn down. */
function emptySlot(morsels: Morsels, slot: number, counted: boolean): number {
  if (!counted) morsels.releaseDeadDying(slot); // a destroy the dead process left deciding (src/morsel/usage.ts)
  const spaces = reapSpaces(morsels, slot, counted);
  dropRegistry(morsels, userSlotRoot(morsels.region, slot, SLOT_SPACES_ROOT));
  for (const field of SLOT_USAGE_ROOTS) dropRegistry(morsels, userSlotRoot(morsels.region, slot, field));
  return spaces;
}

/** This process's slot, emptied before Region.close releases it: its spaces are destroyed (counted). */
export function emptyOwnSlot(morsels: Morsels): number {
  const slot = morsels.region.userSlot;
  return slot === NO_SLOT ? 0 : emptySlot(morsels, slot, true);
}

/**
 * Empties every slot whose owner died (record occupied, lock free): tears
 * down its spaces without counting, drops its registries, clears the record,
 * and leaves the region dirty (Region.tryReap) so the next exclusive open
 * reclaims the dead process's in-flight frames. Any layer may call it, e.g.
 * before deciding that a morsel is unused. Bounded: one pass over the slots.
 * Only the thread that opened the region reaps (in worker threads this
 * returns nothing): slot locks belong to the process's one open file
 * description, which cannot exclude two of its own threads from one slot.
 */
export function reapDeadSlots(morsels: Morsels): ReapReport {
  const region = morsels.region;
  const out: ReapReport = { slots: 0, spaces: 0 };
  if (!region.persistent || !region.writable) return out;
  for (let slot = 0; slot < USER_SLOTS; slot++) {
    if (!region.tryReap(slot)) continue;
    out.spaces += emptySlot(morsels, slot, false);
    region.finishReap(slot);
    out.slots++;
  }
  return out;
}

/** Spaces registered in every occupied user slot (recovery reports them before clearing the slots). ECORRUPT on a bad registry table. */
export function countSlotSpaces(morsels: Morsels): number {
  let spaces = 0;
  for (let slot = 0; slot < USER_SLOTS; slot++) {
    if (morsels.region.slotOccupied(slot)) spaces += countSpaces(morsels, slot);
  }
  return spaces;
}

/**
 * Visits every frame the user slots hold (registry tables and space tables,
 * never morsel frames): for the reachability scanner on a region in use.
 */
export function forEachSlotFrame(morsels: Morsels, visit: (frame: Frame) => void): void {
  for (let slot = 0; slot < USER_SLOTS; slot++) {
    if (!morsels.region.slotOccupied(slot)) continue;
    forEachUsageFrame(morsels.region, morsels.alloc, slot, visit);
    forEachSpaceFrame(morsels, slot, visit);
  }
}
