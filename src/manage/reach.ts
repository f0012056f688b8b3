/**
 * The management layer's persistent frames, for the recovery scanner
 * (src/recovery/reachable.ts): the namespace (root slot 2) and the
 * fixed-address reservation tree (root slot 3). Recovery rebuilds the
 * allocator from what the scanner reaches, so without these visitors it
 * would free every name and reservation. Memory (the composition root)
 * registers them before any scan can run.
 */
import { FrameAllocator } from '../alloc/llfree.js';
import { ROOT_SLOT_NAMES, ROOT_SLOT_RESERVATIONS } from '../physical/superblock.js';
import { registerReachVisitor } from '../recovery/reachable.js';
import { Namespace } from './namespace.js';
import { forEachReservationFrame } from './reservations.js';

export function registerManageVisitors(): void {
  registerReachVisitor({
    name: 'namespace',
    rootSlot: ROOT_SLOT_NAMES,
    // The top (the header frame) is the root slot's table: the scanner referenced it already.
    visit: (ctx, top) => new Namespace(ctx.region, new FrameAllocator(ctx.region)).forEachFrame((f) => void (f !== top && ctx.ref(f, 'namespace', null))),
  });
  registerReachVisitor({
    name: 'reservations',
    rootSlot: ROOT_SLOT_RESERVATIONS,
    visit: (ctx, top) => forEachReservationFrame(ctx.region, (f) => f === top || ctx.ref(f, 'reservation tree', null)),
  });
}
