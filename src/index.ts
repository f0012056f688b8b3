/** The public API of morsel. */
export { Memory, type OpenReport } from './memory.js';
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
export { Names, orderForSize, type CreateOptions, type MapRights, type NameStat, type NameRecord, type NodeKind } from './manage/names.js';
export { Namespace } from './manage/namespace.js';
export { MorselHandle, formatHandle, parseHandle, type MorselRef } from './manage/handle.js';
export { processCredentials, type Credentials, type AccessRights } from './manage/rights.js';
export { Reservations, forEachReservationFrame, type Reservation } from './manage/reservations.js';
export { forEachUsageFrame } from './morsel/usage.js';
