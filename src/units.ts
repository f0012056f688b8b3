/**
 * Units and branded identifiers. A `Frame` is a physical frame number, a
 * `VAddr` a virtual byte address; the brands stop one being passed as the
 * other. Conversions are explicit functions.
 */
import { MorselError } from './errors.js';

declare const brand: unique symbol;
type Brand<T, B extends string> = T & { readonly [brand]: B };

/** Physical frame number (frame N = region bytes [N*4096, (N+1)*4096)). */
export type Frame = Brand<number, 'Frame'>;
/**
 * Virtual byte address. A JS number, exact up to 2^53: we expose the lower
 * 2^53 bytes (8 PiB) of the canonical lower half. That covers every 4-level
 * address (< 2^47) and 32 of the 256 user PML5 slots with 5-level paging.
 * Keeping addresses as numbers keeps BigInt off the translate path.
 */
export type VAddr = Brand<number, 'VAddr'>;

export const PAGE_SHIFT = 12;
export const PAGE_SIZE = 4096;
export const ENTRIES_PER_TABLE = 512;
/** Largest virtual address + 1 we represent exactly (see VAddr). */
export const VADDR_LIMIT = 2 ** 53;

export const KiB = 1024;
export const MiB = 1024 * KiB;
export const GiB = 1024 * MiB;
export const TiB = 1024 * GiB;

export const asFrame = (n: number): Frame => n as Frame;
export const asVAddr = (n: number): VAddr => n as VAddr;
export const frameToByte = (f: Frame): number => f * PAGE_SIZE;

/** Parses "4096", "256MiB", "8GiB", "2M", "1g" into bytes. */
export function parseSize(text: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)\s*$/i.exec(text);
  if (!m) throw new MorselError('EINVAL', `not a size: ${JSON.stringify(text)}`);
  const scale = { '': 1, k: KiB, m: MiB, g: GiB, t: TiB }[m[2].toLowerCase() as '' | 'k' | 'm' | 'g' | 't'];
  const bytes = Number(m[1]) * scale;
  if (!Number.isSafeInteger(bytes)) throw new MorselError('EINVAL', `size out of range: ${text}`);
  return bytes;
}

export function formatBytes(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let v = bytes;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${Number.isInteger(v) ? v : v.toFixed(2)} ${units[i]}`;
}
