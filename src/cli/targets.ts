/**
 * The morsel a command acts on, and the bytes in and out of it. Loaded only
 * by the commands that need it (start-up stays cheap).
 *
 * A <target> is one of
 *   /path           a name: its mode is checked when it is opened
 *   0x…@generation  a handle: one incarnation; ESTALE once it was destroyed
 *   0x…             a raw ID (the primitive's level): whatever lives there now
 *
 * Every form is opened as a handle (Names.open/openRef), so the CLI reads
 * and writes through names and counts as a user while it does: a destroy
 * meanwhile is EBUSY, an unlink waits for it. Bytes are copied page by
 * page, so a failure part-way says exactly how many bytes landed.
 */
import { check } from '../errors.js';
import type { Memory } from '../memory.js';
import { type MorselHandle, formatHandle, isHandleText, parseHandle, type MorselRef } from '../manage/handle.js';
import type { NameRecord, NameStat } from '../manage/names.js';
import { decodeIdBits, parseId } from '../morsel/id.js';
import { orderBytes } from '../morsel/order.js';
import { forEachUsageFrame } from '../morsel/usage.js';
import { MiB, PAGE_SIZE } from '../units.js';
import { CommandError, toMorselError, type Out } from './common.js';

/** What a target text resolves to, found without opening (counting) it. */
export interface Target {
  text: string;
  form: 'path' | 'handle' | 'id';
  /** the incarnation: for a path the one its name points at now, for a raw ID the one living there now */
  ref: MorselRef;
  /** logical size: a name's or meta morsel's recorded size, else the order's span */
  sizeBytes: number;
}

/**
 * Resolves a target text without changing the region (so a bad range can
 * be refused before anything is written): ENOENT/EISDIR for paths, ESTALE
 * for a destroyed handle, EINVAL for anything that is neither form.
 *
 * # Warning
 * Nothing is counted until withTarget opens it: a path renamed or replaced
 * in between is opened as what it names then (Names.write/read check the
 * range again against the opened size, so a smaller replacement is ERANGE
 * with `written`); a handle or raw ID destroyed in between is ESTALE at
 * open (its generation was fixed here), never another incarnation.
 */
export function resolveTarget(m: Memory, text: string): Target {
  if (text.startsWith('/')) {
    const rec = m.names.ns.lookup(text);
    check(rec.kind === 'morsel', 'EISDIR', () => `${text} is a directory`);
    return { text, form: 'path', ref: { id: decodeIdBits(rec.id).id, generation: rec.generation }, sizeBytes: rec.sizeBytes };
  }
  check(isHandleText(text), 'EINVAL', () => `${JSON.stringify(text)} is neither a /path, a handle (0x…@generation) nor a morsel ID (0x…)`);
  const handle = text.includes('@') ? parseHandle(text) : null;
  const d = handle ? m.morsels.decodeHandle(handle.id, handle.generation) : m.morsels.decode(parseId(text));
  const sizeBytes = d.meta ? m.morsels.metaOf(d).sizeBytes : orderBytes(d.order);
  return { text, form: handle ? 'handle' : 'id', ref: { id: d.id, generation: m.morsels.generationOf(d.rootFrame) }, sizeBytes };
}

/** [offset, offset + lengthBytes) must lie inside the target; changes nothing. */
export function checkRange(t: { sizeBytes: number }, offset: number, lengthBytes: number): void {
  check(offset + lengthBytes <= t.sizeBytes, 'ERANGE', () => `[${offset}, ${offset + lengthBytes}) is outside the ${t.sizeBytes}-byte morsel`);
}

/** Opens the target as a handle for the duration of `fn` (a path by name, mode checked). */
export async function withTarget<T>(m: Memory, t: Target, write: boolean, fn: (h: MorselHandle) => T | Promise<T>): Promise<T> {
  const h = t.form === 'path' ? m.names.open(t.text, { write }) : m.names.openRef(t.ref, { write });
  try {
    return await fn(h);
  } finally {
    m.names.close(h);
  }
}

/** Bytes of input read before the target is opened: input up to this long is range-checked before anything changes. */
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
    check(written + stagedBytes + r.value.length <= roomBytes, 'ERANGE', () => `input is longer than the ${roomBytes} bytes from offset ${offset} to the end of the ${t.sizeBytes}-byte morsel`);
    staged.push(r.value);
    stagedBytes += r.value.length;
  };
  const flush = (h: MorselHandle): void => {
    for (const c of staged) written += writePages(m, h, offset + written, c, written);
    staged = [];
    stagedBytes = 0;
  };
  try {
    while (!ended && stagedBytes < STAGE_BYTES) await take();
    return await withTarget(m, t, true, async (h) => {
      try {
        flush(h);
        while (!ended) {
          await take();
          if (stagedBytes >= STAGE_BYTES) flush(h);
        }
        flush(h);
      } catch (e) {
        throw e instanceof CommandError ? e : new CommandError(toMorselError(e), { written });
      }
      return written;
    });
  } catch (e) {
    if (!ended) await input.return?.(); // stop reading input nobody will write
    throw e;
  }
}

/**
 * Writes `bytes` at `at` one page-bounded piece at a time and returns the
 * count; on failure throws CommandError with the exact bytes written so far
 * (`before` + the pieces that landed).
 */
function writePages(m: Memory, h: MorselHandle, at: number, bytes: Uint8Array, before: number): number {
  let done = 0;
  try {
    while (done < bytes.length) {
      const pageEnd = (Math.floor((at + done) / PAGE_SIZE) + 1) * PAGE_SIZE;
      const n = Math.min(bytes.length - done, pageEnd - (at + done));
      m.names.write(h, at + done, bytes.subarray(done, done + n));
      done += n;
    }
  } catch (e) {
    throw new CommandError(toMorselError(e), { written: before + done });
  }
  return done;
}

/** Reads [offset, offset + lengthBytes) through `h` in pieces of at most `pieceBytes`, handing each to `sink`. */
export function copyOut(m: Memory, h: MorselHandle, offset: number, lengthBytes: number, pieceBytes: number, sink: (piece: Uint8Array) => void): void {
  for (let done = 0; done < lengthBytes; ) {
    const piece = m.names.read(h, offset + done, Math.min(pieceBytes, lengthBytes - done));
    sink(piece);
    done += piece.length;
  }
}

/** Free frames, counting this process's usage-registry tables as free (they go when the command closes the region). */
export function freeFramesAfterClose(m: Memory): number {
  let tables = 0;
  forEachUsageFrame(m.region, m.alloc, m.region.userSlot, () => tables++);
  return m.alloc.freeFrames() + tables;
}

export const octal = (mode: number): string => '0' + mode.toString(8).padStart(3, '0');

/** A directory entry as `ls` prints it. */
export const describeRecord = (name: string, rec: NameRecord): Out => ({
  name,
  kind: rec.kind,
  mode: octal(rec.mode),
  uid: rec.uid,
  gid: rec.gid,
  sizeBytes: rec.sizeBytes,
  mtimeMs: rec.mtimeMs,
  ...(rec.kind === 'morsel' ? { handle: formatHandle({ id: decodeIdBits(rec.id).id, generation: rec.generation }), fixedAddress: rec.fixedAddress } : {}),
});

export const describeStat = (s: NameStat): Out => ({ ...s, mode: octal(s.mode) });
