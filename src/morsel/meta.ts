/**
 * Meta morsels (thesis 3.5): an order-0 morsel whose page holds metadata for
 * exactly one data morsel. Written once at creation, read-only afterwards, so
 * it has no intermediate states to protect. Layout (little-endian):
 *
 *   0  magic "MORSMETA"         24  byte size (f64)
 *   8  layout version (u32)     32  creation time, ms since epoch (f64)
 *  16  fixed address (f64)      40  data morsel ID (u64; entry index 5)
 *
 * Addresses and sizes are below 2^53, so f64 holds them exactly.
 */
import { MorselError } from '../errors.js';
import type { Region } from '../physical/region.js';
import type { Frame } from '../units.js';
import { hex, type MorselId } from './id.js';

const MAGIC = 'MORSMETA';
const VERSION = 1;
/** The data ID sits at byte 40 = entry index 5, so it is CAS-able like any entry. */
export const META_DATA_ID_ENTRY = 5;

export interface MetaInfo {
  address: number;
  sizeBytes: number;
  createdMs: number;
  dataId: MorselId;
}

export function writeMetaPage(region: Region, frame: Frame, info: MetaInfo): void {
  const page = region.frame(frame);
  const view = new DataView(page.buffer, page.byteOffset, page.byteLength);
  for (let i = 0; i < MAGIC.length; i++) page[i] = MAGIC.charCodeAt(i);
  view.setUint32(8, VERSION, true);
  view.setFloat64(16, info.address, true);
  view.setFloat64(24, info.sizeBytes, true);
  view.setFloat64(32, info.createdMs, true);
  view.setBigUint64(40, info.dataId, true);
}

export function readMetaPage(region: Region, frame: Frame): MetaInfo {
  const page = region.frame(frame);
  const view = new DataView(page.buffer, page.byteOffset, page.byteLength);
  for (let i = 0; i < MAGIC.length; i++) {
    if (page[i] !== MAGIC.charCodeAt(i)) throw new MorselError('ECORRUPT', `meta page in frame ${frame} has a bad magic`);
  }
  if (view.getUint32(8, true) !== VERSION) throw new MorselError('ECORRUPT', `meta page in frame ${frame} has unknown layout version`);
  const dataId = view.getBigUint64(40, true) as MorselId;
  if (dataId === 0n) throw new MorselError('ECORRUPT', `meta page in frame ${frame} has no data morsel (interrupted destroy?)`);
  return { address: view.getFloat64(16, true), sizeBytes: view.getFloat64(24, true), createdMs: view.getFloat64(32, true), dataId };
}

export const describeMeta = (m: MetaInfo): Record<string, unknown> => ({
  address: '0x' + m.address.toString(16),
  sizeBytes: m.sizeBytes,
  createdMs: m.createdMs,
  dataId: hex(m.dataId),
});
