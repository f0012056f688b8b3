/**
 * Byte access to one morsel for `read` and `write`: the morsel is mapped in
 * a scratch address space and copied page by page, so a failure part-way
 * (ENOSPC while populating) says exactly how many bytes landed. Loaded only
 * by the commands that need it (start-up stays cheap).
 */
import { MorselError, check } from '../errors.js';
import type { Memory } from '../memory.js';
import { parseId } from '../morsel/id.js';
import { orderBytes } from '../morsel/order.js';
import { Mmu } from '../space/mmu.js';
import type { Levels } from '../space/address-space.js';
import { MiB, PAGE_SIZE } from '../units.js';
import { CommandError, toMorselError } from './common.js';

/** The morsel a command addresses: `sizeBytes` is what a meta morsel records, else the order's span. */
export interface Target {
  id: bigint;
  sizeBytes: number;
  levels: Levels;
}

/** A mapped target: bytes [0, sizeBytes) of the morsel are at [base, base + sizeBytes) through `mmu`. */
export interface Window {
  mmu: Mmu;
  base: number;
  sizeBytes: number;
}

/**
 * Decodes the ID and checks [offset, offset + lengthBytes) against the
 * morsel size. Changes nothing in the region, so it runs before anything that does.
 */
export function resolveTarget(m: Memory, idText: string, offset: number, lengthBytes: number): Target {
  const id = parseId(idText);
  const d = m.morsels.decode(id);
  const data = m.morsels.dataOf(d);
  const sizeBytes = d.meta ? m.morsels.metaOf(d).sizeBytes : orderBytes(data.order);
  checkRange(sizeBytes, offset, lengthBytes);
  return { id, sizeBytes, levels: data.order === 4 ? 5 : 4 };
}

function checkRange(sizeBytes: number, offset: number, lengthBytes: number): void {
  check(offset + lengthBytes <= sizeBytes, 'ERANGE', () => `[${offset}, ${offset + lengthBytes}) is outside the ${sizeBytes}-byte morsel`);
}

/** Maps the target (read-only unless `write`) in a scratch space for the duration of `fn`. */
export async function withWindow<T>(m: Memory, t: Target, write: boolean, fn: (w: Window) => T | Promise<T>): Promise<T> {
  const space = m.createSpace({ levels: t.levels });
  try {
    const base = space.map(t.id, { rights: { write } });
    try {
      return await fn({ mmu: new Mmu(space), base, sizeBytes: t.sizeBytes });
    } finally {
      space.unmap(base);
    }
  } finally {
    space.destroy();
  }
}

/** Bytes of input read before the morsel is mapped: input up to this long is range-checked before anything changes. */
export const STAGE_BYTES = 64 * MiB;

/**
 * Copies a stream of chunks into the target from `offset` in bounded memory
 * (STAGE_BYTES + one chunk) and returns the bytes written. Input longer than
 * the room left is ERANGE: with nothing changed when the input ends within
 * STAGE_BYTES, else after the first bytes landed. Any error once writing
 * began says how many bytes landed (`written`).
 */
export async function writeFrom(m: Memory, t: Target, offset: number, chunks: AsyncIterable<Uint8Array>): Promise<number> {
  const roomBytes = t.sizeBytes - offset;
  const input = chunks[Symbol.asyncIterator]();
  let staged: Uint8Array[] = [];
  let stagedBytes = 0;
  let written = 0;
  let ended = false;
  const take = async (): Promise<void> => {
    const r = await input.next();
    if (r.done) {
      ended = true;
      return;
    }
    if (written + stagedBytes + r.value.length > roomBytes) {
      throw new MorselError('ERANGE', `input is longer than the ${roomBytes} bytes from offset ${offset} to the end of the ${t.sizeBytes}-byte morsel`);
    }
    staged.push(r.value);
    stagedBytes += r.value.length;
  };
  try {
    while (!ended && stagedBytes < STAGE_BYTES) await take();
  } finally {
    if (!ended) await input.return?.();
  }
  return withWindow(m, t, true, async (w) => {
    const flush = (): void => {
      for (const c of staged) written += writePages(w, offset + written, c, written);
      staged = [];
      stagedBytes = 0;
    };
    try {
      flush();
      while (!ended) {
        await take();
        if (stagedBytes >= STAGE_BYTES) flush();
      }
      flush();
    } catch (e) {
      await input.return?.();
      throw e instanceof CommandError ? e : new CommandError(toMorselError(e), { written });
    }
    return written;
  });
}

/**
 * Writes `bytes` at window offset `at` one page-bounded piece at a time and
 * returns the count; on failure throws CommandError with the exact bytes
 * written so far (`before` + the pieces that landed).
 */
function writePages(w: Window, at: number, bytes: Uint8Array, before: number): number {
  let done = 0;
  try {
    while (done < bytes.length) {
      const pageEnd = (Math.floor((at + done) / PAGE_SIZE) + 1) * PAGE_SIZE;
      const n = Math.min(bytes.length - done, pageEnd - (at + done));
      w.mmu.write(w.base + at + done, bytes.subarray(done, done + n));
      done += n;
    }
  } catch (e) {
    throw new CommandError(toMorselError(e), { written: before + done });
  }
  return done;
}

/** Reads [offset, offset + lengthBytes) in pieces of at most `pieceBytes`, handing each to `sink`. */
export function copyOut(w: Window, offset: number, lengthBytes: number, pieceBytes: number, sink: (piece: Uint8Array) => void): void {
  checkRange(w.sizeBytes, offset, lengthBytes);
  for (let done = 0; done < lengthBytes; ) {
    const piece = new Uint8Array(Math.min(pieceBytes, lengthBytes - done));
    w.mmu.read(w.base + offset + done, piece);
    sink(piece);
    done += piece.length;
  }
}
