// Shared by quiesce.test and its writer worker (mmu-writer.ts): the byte the
// writer fills with and the words of its control Int32Array.
export const FILL_BYTE = 0xee;
/** non-zero: the writer stops */
export const W_STOP = 0;
/** fills that completed */
export const W_FILLS = 1;
/** fills refused with EFAULT (nothing mapped) */
export const W_FAULTS = 2;
