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

const UNIT_SCALE: Record<string, number> = { '': 1, b: 1, k: KiB, m: MiB, g: GiB, t: TiB };

/**
 * Parses a byte count, offset, length or address into a safe integer:
 * "4096", "0x1000", "1KiB", "256MiB", "8GiB", "2M", "1.5g" (units are powers
 * of 1024; "KB" = "KiB"). Throws EINVAL naming `what` for anything else,
 * negative numbers and fractions of a byte included.
 */
export function parseBytes(text: string, what = 'size'): number {
  const t = text.trim();
  const hex = /^0x([0-9a-f]+)$/i.exec(t);
  const dec = /^(\d+(?:\.\d+)?)\s*(?:([kmgt])(?:ib|b|i)?|(b))?$/i.exec(t);
  let bytes = NaN;
  if (hex) bytes = Number.parseInt(hex[1], 16);
  else if (dec) bytes = Number(dec[1]) * UNIT_SCALE[(dec[2] ?? dec[3] ?? '').toLowerCase()];
  if (!Number.isSafeInteger(bytes)) {
    throw new MorselError('EINVAL', `${what} must be a whole number of bytes (e.g. 4096, 0x1000, 4KiB, 2MiB), got ${JSON.stringify(text)}`);
  }
  return bytes;
}

/** Parses a region or morsel size; see parseBytes. */
export function parseSize(text: string): number {
  return parseBytes(text, 'size');
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
