/**
 * The conventional comparison point: Linux' page-granular shared memory
 * (shmem object + page-cache index + per-page PTEs), modelled in the same
 * region, table format and allocator as morsels. Used by bench/.
 */
export { Mutex, mutexLock, mutexUnlock } from '../sync/mutex.js';
export { ShmObject, type PhysMem, type ShmShare } from './shm-object.js';
export { ConventionalSpace, CONV_LIMIT, FAULT_AROUND_PAGES, type ConvMapOptions, type ConvSpaceShare } from './conventional-space.js';
