// Builds morsel images byte by byte for the serial tests: any format version,
// any map, valid checksums (so a test can change one thing and see it caught).
import { crc32c } from '@node-rs/crc32';
import { CRC_BYTES, TRAILER_BYTES, chunkCountOf, dataPadBytes, decodeHeader, decodeMap, encodeHeader, encodeMap, encodeTrailer, foldCrc, headerLength, mapBytes, storedCrc, FIXED_HEADER_BYTES, type ImageHeader, type ImageMap } from '../src/serial/format.js';
import { PAGE_SIZE } from '../src/units.js';

/**
 * A well-formed image of `header` (in header.version's layout) whose map is
 * `runs` and `leaves` and whose data is `data` (header.populatedPages pages
 * in virtual order); runCount and leafCount follow the map.
 */
export function imageOf(header: ImageHeader, map: Pick<ImageMap, 'runs' | 'leaves'>, data: Uint8Array): Uint8Array {
  const h: ImageHeader = { ...header, runCount: map.runs.length, leafCount: map.leaves.length };
  const chunks = chunkCountOf(h);
  const crcs = new Uint32Array(chunks);
  const chunkBytes = h.chunkPages * PAGE_SIZE;
  for (let c = 0; c < chunks; c++) crcs[c] = crc32c(data.subarray(c * chunkBytes, Math.min(data.length, (c + 1) * chunkBytes)));
  const head = encodeHeader(h);
  const mapBytesOut = encodeMap({ ...map, chunkCrcs: h.version >= 3 ? crcs : null });
  const parts: Uint8Array[] = [head, mapBytesOut, new Uint8Array(dataPadBytes(h, head.length + mapBytesOut.length))];
  for (let c = 0; c < chunks; c++) {
    parts.push(data.subarray(c * chunkBytes, Math.min(data.length, (c + 1) * chunkBytes)));
    if (h.version < 3) {
      const tail = new Uint8Array(CRC_BYTES);
      new DataView(tail.buffer).setUint32(0, crcs[c], true);
      parts.push(tail);
    }
  }
  const chunksCrc = crcs.reduce((acc, crc) => foldCrc(acc, crc), 0);
  parts.push(encodeTrailer({ populatedPages: h.populatedPages, chunkCount: chunks, headerCrc: storedCrc(head), mapCrc: storedCrc(mapBytesOut), chunksCrc }));
  return Buffer.concat(parts);
}

/** The parts of a current-version image: header, map, where the data starts and the data. */
export function partsOf(image: Uint8Array): { header: ImageHeader; map: ImageMap; headerBytes: number; mapEnd: number; dataStart: number; data: Uint8Array } {
  const headerBytes = headerLength(image.subarray(0, FIXED_HEADER_BYTES));
  const header = decodeHeader(image.subarray(0, headerBytes));
  const mapEnd = headerBytes + mapBytes(header);
  const map = decodeMap(image.subarray(headerBytes, mapEnd), header);
  const dataStart = mapEnd + dataPadBytes(header, mapEnd);
  if (header.version < 3) throw new Error('partsOf reads version-3 images (data without chunk tails)');
  const data = image.subarray(dataStart, image.length - TRAILER_BYTES);
  return { header, map, headerBytes, mapEnd, dataStart, data };
}
