/**
 * Where torture operations touch a morsel: a few windows spread over its
 * virtual size, so big morsels grow several lower-level tables (order 2: one
 * level-1 table per window; order 3: one level-2 table per window) while the
 * number of populated frames stays small enough for a 32 MiB region.
 */
export const WINDOWS = 4;
export const PAGES_PER_WINDOW = 16;
export const PAGE = 4096;

/**
 * Pages [first, first + pages) of a morsel of `size` bytes: window `w`
 * (0..WINDOWS-1), starting `page` pages into it, `count` pages long, clipped
 * to the window (at least one page).
 */
export function pageRange(size: number, w: number, page: number, count: number): { first: number; pages: number } {
  const total = Math.max(1, Math.floor(size / PAGE));
  const windowPages = Math.min(total, PAGES_PER_WINDOW);
  const windowStart = total <= PAGES_PER_WINDOW ? 0 : Math.floor(total / WINDOWS) * (w % WINDOWS);
  const first = windowStart + Math.min(page, windowPages - 1);
  return { first, pages: Math.max(1, Math.min(count, windowStart + windowPages - first)) };
}
