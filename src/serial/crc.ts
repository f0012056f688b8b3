/**
 * crc32c (Castagnoli), the image format's checksum: the addon's
 * three-chain SSE4.2 loop where it is built and the CPU has SSE4.2
 * (src/physical/native/mmap.cc: 17-20 GiB/s here over data that is not in
 * cache, against 11-14 for @node-rs/crc32), else @node-rs/crc32. Both
 * give the same values: crc32c(b, crc32c(a)) === crc32c(a ++ b).
 */
import { crc32c as portableCrc32c } from '@node-rs/crc32';
import { nativeCrc32c } from '../physical/native.js';

/** The CRC-32C of `bytes`, continuing from `crc` (0 to start). */
export const crc32c: (bytes: Uint8Array, crc?: number) => number = nativeCrc32c() ?? ((bytes, crc = 0) => portableCrc32c(bytes, crc));
