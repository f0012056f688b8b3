/**
 * Per-mapping access rights. Read is implied by a mapping (x86 has no
 * read-disable bit); the rest map onto the top entry's R/W, U/S and NX bits.
 * The morsel's own entries stay permissive, so the top entry alone decides.
 */
import { P, RW, US, HI_NX } from '../paging/entry.js';

export interface Rights {
  write?: boolean;
  execute?: boolean;
  /** accessible from user mode (default true) */
  user?: boolean;
}

export const READ_WRITE: Rights = { write: true };
export const READ_ONLY: Rights = { write: false };

export function rightsLo(r: Rights): number {
  return P | (r.write ? RW : 0) | (r.user === false ? 0 : US);
}

export function rightsHi(r: Rights): number {
  return r.execute ? 0 : HI_NX;
}

export function describeRights(lo: number, hi: number): Rights {
  return { write: (lo & RW) !== 0, execute: (hi & HI_NX) === 0, user: (lo & US) !== 0 };
}
