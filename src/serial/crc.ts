/**
 * crc32c (Castagnoli), the image format's checksum: the addon's
 * three-chain SSE4.2 loop where it is built and the CPU has SSE4.2, with
 * long inputs folded by VPCLMULQDQ first where the CPU has that too
 * (src/physical/native/mmap.cc: 53 GB/s here from the cache and 22.5 from
 * memory, against 23 and 17.5 for the loop alone and 11-14 for
 * @node-rs/crc32), else @node-rs/crc32. All give the same values:
 * crc32c(b, crc32c(a)) === crc32c(a ++ b).
 */
import { crc32c as portableCrc32c } from '@node-rs/crc32';
import { nativeCrc32c } from '../physical/native.js';

/** The CRC-32C of `bytes`, continuing from `crc` (0 to start). */
export const crc32c: (bytes: Uint8Array, crc?: number) => number = nativeCrc32c() ?? ((bytes, crc = 0) => portableCrc32c(bytes, crc));
