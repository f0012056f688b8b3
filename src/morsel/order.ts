/**
 * Morsel orders. A morsel of order k is a page-table subtree covering
 * 4 KiB * 512^k bytes: order 0 is one data page, order k >= 1 has a root
 * table of paging level k (level 1 = page table of PTEs). Its ID is an entry
 * in a level k+1 table.
 */
import { check } from '../errors.js';
import { indexAt, levelSpan } from '../paging/walk.js';

export type Order = 0 | 1 | 2 | 3 | 4;
export const MAX_ORDER = 4;
export const ORDERS: readonly Order[] = [0, 1, 2, 3, 4];

/** log2 of the virtual size of a morsel of `order`. */
export const orderShift = (order: Order): number => 12 + 9 * order;

/** Virtual size in bytes of a morsel of `order`. */
export const orderBytes = (order: Order): number => levelSpan(order + 1);

/** Bytes covered by one entry of a level-`level` table. */
export const entrySpan = levelSpan;

/** The paging level (1 = PT .. 5 = PML5) whose table holds the ID of a morsel of `order`. */
export const idLevel = (order: Order): number => order + 1;

export function toOrder(value: unknown): Order {
  const n = typeof value === 'string' && /^\d+$/.test(value) ? Number(value) : value;
  check(typeof n === 'number' && Number.isInteger(n) && n >= 0 && n <= MAX_ORDER, 'EINVAL', () => `order must be 0..${MAX_ORDER}, got ${String(value)}`);
  return n as Order;
}

/** Index into the level-`level` table for byte `offset` (level 1 = PT). */
export const tableIndex = indexAt;
