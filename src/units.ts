/**
 * Units and branded identifiers. A `Frame` is a physical frame number; the
 * brand stops a count, an index or an address being passed as one. Virtual
 * addresses are plain numbers, exact up to 2^53 (see AddressSpace): that
 * keeps BigInt off the translate path.
 */
import { MorselError } from './errors.js';

declare const brand: unique symbol;
type Brand<T, B extends string> = T & { readonly [brand]: B };

/** Physical frame number (frame N = region bytes [N*4096, (N+1)*4096)). */
export type Frame = Brand<number, 'Frame'>;

export const PAGE_SIZE = 4096;

export const KiB = 1024;
export const MiB = 1024 * KiB;
export const GiB = 1024 * MiB;
export const TiB = 1024 * GiB;

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
