/** The public API of morsel. */
export { Memory, type OpenReport, type OpenOptions, type OpenMode, type WaitResult } from './memory.js';
export { reapDeadSlots, type ReapReport } from './space/user-slots.js';
export { MorselError, isMorselError, type ErrorCode } from './errors.js';
export { Morsels, type MorselStats } from './morsel/morsels.js';
export { hex, parseId, decodeIdBits, type MorselId, type DecodedId } from './morsel/id.js';
export { ORDERS, orderBytes, toOrder, type Order } from './morsel/order.js';
export type { MetaInfo } from './morsel/meta.js';
export { AddressSpace, type Levels, type MapOptions, type Mapping, type SpaceShare } from './space/address-space.js';
export { Mmu, Access } from './space/mmu.js';
export type { Rights } from './space/rights.js';
export { Region, type RegionShare } from './physical/region.js';
export { FrameAllocator } from './alloc/llfree.js';
export { parseSize, formatBytes, KiB, MiB, GiB, TiB } from './units.js';
