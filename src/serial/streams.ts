/**
 * Where images go and come from: a file (written to `<file>.tmp-<pid>`,
 * fsync'd, renamed, directory fsync'd: a crash leaves the previous image
 * intact) or a stream (stdout / stdin, `-` on the command line). Host
 * errors become typed MorselErrors (hostError).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { MorselError, assert, isMorselError, type ErrorCode } from '../errors.js';
import { nativeReadvCrc } from '../physical/native.js';

/** Host errno codes that keep their name; anything else is EIO. */
const KEPT: ReadonlySet<string> = new Set(['ENOENT', 'EACCES', 'EPERM', 'ENOSPC', 'EISDIR', 'ENOTDIR', 'EEXIST', 'EBUSY']);

/**
 * A host error (errno + syscall) as a typed MorselError: its errno where it
 * has a remedy, else EIO. MorselErrors and anything else (a bug: the CLI
 * reports it as EINTERNAL) pass through unchanged.
 */
export function hostError(e: unknown, what: string): unknown {
  if (isMorselError(e)) return e;
  const code = (e as { code?: unknown } | null)?.code;
  if (typeof code !== 'string' || (e as { syscall?: unknown }).syscall === undefined) return e;
  const kept = KEPT.has(code) ? (code as ErrorCode) : 'EIO';
  return new MorselError(kept, `${what}: ${e instanceof Error ? e.message : String(e)}`, { cause: e });
}

/**
 * Reads and writes up to this size are synchronous: an asynchronous one
 * costs a thread-pool round trip (0.1-0.2 ms here), worth it only for I/O
 * long enough to overlap with the other side's work (the 4 MiB chunks of a
 * dense image). Headers, maps, trailers and a sparse image's chunks are
 * small.
 */
const SYNC_IO_BYTES = 1024 * 1024;

export interface ImageSink {
  /** Writes `parts` in order (a gather list: views of region frames need no copy); the caller may reuse them once the promise resolves. */
  write(parts: readonly Uint8Array[]): Promise<void>;
  /**
   * Optional positional write (files): `parts` at byte `offset`, as write
   * does, without moving write's position. save then writes the data first,
   * checksumming each chunk while it is written, and the header and map
   * (which hold the checksums) last.
   */
  writeAt?(offset: number, parts: readonly Uint8Array[]): Promise<void>;
  /** Makes the image durable and visible (file: fsync, rename, fsync dir). */
  commit(): Promise<void>;
  /** Drops a partial image (file: the temporary file goes, the previous image stays). */
  abort(): void;
  /** Whether the data went past the page cache (file sinks: direct I/O; see fileSink). */
  directIo?(): boolean;
}

export interface ImageSource {
  /** Exactly `n` bytes, or fewer at the end of the input (never more); valid until at least two more reads. */
  read(n: number): Promise<Uint8Array>;
  /**
   * Optional scatter read (files): fills `parts` in order straight from the
   * input (fewer bytes only at its end). The loader reads chunks into the
   * frames it allocated with it, with no copy. Each call claims the next
   * bytes of the input when it is made, so several may be in flight at once
   * (the loader keeps up to four ahead); read() must not be called while one is.
   */
  readInto?(parts: readonly Uint8Array[]): Promise<ReadInto>;
  close(): void;
}

/**
 * What a scatter read filled: the byte count, their crc32c when the source
 * computed it on the way (a native read), else null, and whether the read
 * waited for the device (some bytes were not in the page cache).
 */
export interface ReadInto {
  bytes: number;
  crc32c: number | null;
  fromDisk: boolean;
  /** the bytes the page cache lacked came with direct I/O: no readahead to defeat, so reads may overlap */
  direct: boolean;
}

/** Direct I/O's alignment of file offsets, lengths and memory: one page (what the image format aligns its data to). */
const DIRECT_ALIGN_BYTES = 4096;

export interface FileSinkOptions {
  /**
   * false: the image stays in the page cache (no O_DIRECT, no fsync); commit
   * still renames the temporary file over `file`, so readers see the old
   * image or the new one, never part of one, but a host crash may lose it.
   * Its writes are synchronous: a write into the page cache is a copy, and
   * from a thread-pool thread one took 40-230 ms per 64 MiB here in
   * intermittent phases against 27-42 ms from this thread (the overlap with
   * the checksum it gives up is ~2 ms per 64 MiB). Default true.
   */
  durable?: boolean;
}

/**
 * A sink writing `file` crash-safely through a temporary file next to it.
 * Writes whose offset and part lengths are page multiples (an image's data
 * chunks: views of region frames) go through a second descriptor opened
 * O_DIRECT: from the frames to the device, with no copy into the page cache
 * and no write-back at fsync (measured here: 1.2-1.4 GiB/s against
 * 0.3-1.1 for buffered writes + fsync). Everything else, and everything
 * once one direct write is refused (EINVAL: memory that is not
 * page-aligned, as a plain SharedArrayBuffer's; or a file system without
 * direct I/O, as tmpfs, where the open itself fails), is written buffered.
 * A refused write is redone whole, buffered, at the same offset.
 */
export function fileSink(file: string, opts: FileSinkOptions = {}): ImageSink {
  const durable = opts.durable ?? true;
  const tmp = `${file}.tmp-${process.pid}`;
  let fd: number;
  try {
    fd = fs.openSync(tmp, 'w', 0o644);
  } catch (e) {
    throw hostError(e, `cannot create ${tmp}`);
  }
  let direct = durable ? openDirect(tmp, fs.constants.O_WRONLY) : null;
  let directBytes = 0;
  let offset = 0;
  let closed = false;
  const close = (): void => {
    if (closed) return;
    closed = true;
    fs.closeSync(fd);
    if (direct !== null) fs.closeSync(direct);
    direct = null;
  };
  const writeAt = async (at: number, parts: readonly Uint8Array[]): Promise<void> => {
    const bytes = parts.reduce((n, p) => n + p.length, 0);
    if (direct !== null && at % DIRECT_ALIGN_BYTES === 0 && parts.every((p) => p.length % DIRECT_ALIGN_BYTES === 0)) {
      try {
        await writeAll(direct, parts, tmp, at);
        directBytes += bytes;
        return;
      } catch (e) {
        if (!refusedDirect(e)) throw e;
        fs.closeSync(direct); // unaligned memory: buffered from now on
        direct = null;
      }
    }
    await writeAll(fd, parts, tmp, at, !durable);
  };
  return {
    write: (parts) => {
      const at = offset;
      offset += parts.reduce((n, p) => n + p.length, 0);
      return writeAt(at, parts);
    },
    writeAt,
    commit: async () => {
      try {
        if (durable) fs.fsyncSync(fd); // the inode: direct writes' device cache and metadata too
        close();
        fs.renameSync(tmp, file);
        if (durable) syncDir(path.dirname(path.resolve(file)));
      } catch (e) {
        throw hostError(e, `cannot commit ${file}`);
      }
    },
    abort: () => {
      try {
        close();
        fs.rmSync(tmp, { force: true });
      } catch {
        // best effort: the temporary file is named by pid and replaced by the next save
      }
    },
    directIo: () => directBytes > 0,
  };
}

/** A second, O_DIRECT descriptor on `file` (`access`: O_WRONLY or O_RDONLY), or null where the file system has no direct I/O (or the platform no O_DIRECT). */
function openDirect(file: string, access: number): number | null {
  const flag = fs.constants.O_DIRECT;
  if (flag === undefined) return null;
  try {
    return fs.openSync(file, access | flag);
  } catch {
    return null;
  }
}

/** Whether a write failed because direct I/O refused it (EINVAL: alignment), not for a reason a buffered write would share. */
const refusedDirect = (e: unknown): boolean => (e as { cause?: { code?: unknown } } | null)?.cause?.code === 'EINVAL';

/**
 * fs.writev of `parts` at file offset `at` until every byte is written
 * (writes can be short); synchronous up to SYNC_IO_BYTES, as reads are, or
 * always (`alwaysSync`: into the page cache only).
 */
async function writeAll(fd: number, parts: readonly Uint8Array[], what: string, at: number, alwaysSync = false): Promise<void> {
  let rest = parts.filter((p) => p.length > 0);
  let pos = at;
  const sync = alwaysSync || rest.reduce((n, p) => n + p.length, 0) <= SYNC_IO_BYTES;
  for (let attempt = 0; rest.length > 0; attempt++) {
    const n = sync ? hostSync(() => fs.writevSync(fd, rest, pos), `cannot write ${what}`) : await new Promise<number>((res, rej) => fs.writev(fd, rest as Uint8Array[], pos, (e, written) => (e ? rej(hostError(e, `cannot write ${what}`)) : res(written))));
    if (n === 0 && attempt > rest.length) throw new MorselError('EIO', `cannot write ${what}: no progress`);
    rest = skipBytes(rest, n);
    pos += n;
  }
}

/** A synchronous host call whose error becomes a typed MorselError (hostError). */
function hostSync<T>(call: () => T, what: string): T {
  try {
    return call();
  } catch (e) {
    throw hostError(e, what);
  }
}

/** `parts` without their first `n` bytes. */
function skipBytes(parts: readonly Uint8Array[], n: number): Uint8Array[] {
  const out: Uint8Array[] = [];
  let skip = n;
  for (const p of parts) {
    if (skip >= p.length) skip -= p.length;
    else {
      out.push(p.subarray(skip));
      skip = 0;
    }
  }
  return out;
}

function syncDir(dir: string): void {
  const fd = fs.openSync(dir, 'r');
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/** A sink on a writable stream (stdout): each write resolves once the stream took the bytes. */
export function streamSink(out: NodeJS.WritableStream): ImageSink {
  return {
    write: (parts) => new Promise<void>((res, rej) => out.write(Buffer.concat(parts), (e) => (e ? rej(hostError(e, 'cannot write the image stream')) : res()))),
    commit: async () => {},
    abort: () => {},
  };
}

/** Buffers a file source rotates through: a read's bytes stay valid until the READ_BUFFERS-th read after it. */
const READ_BUFFERS = 3;

/**
 * A source reading `file` sequentially (short reads only at its end). The
 * returned bytes live in a small ring of reused buffers (no fresh memory to
 * fault in per chunk): valid until READ_BUFFERS more reads. readInto (the
 * addon's readvCrc) reads what the page cache lacks through a second,
 * O_DIRECT descriptor when the memory is page-aligned (a region file's
 * frames): from the device into the frames, no copy, no page-cache pages.
 */
export function fileSource(file: string): ImageSource {
  const readvCrc = nativeReadvCrc();
  let fd: number;
  try {
    fd = fs.openSync(file, 'r');
  } catch (e) {
    throw hostError(e, `cannot open ${file}`);
  }
  // What the page cache lacks comes straight from the device into the frames (no copy, no page-cache pages to reclaim).
  const directFd = readvCrc === null ? null : openDirect(file, fs.constants.O_RDONLY);
  // Once a chunk came from the device with direct I/O, the rest is read that way without trying the page cache first.
  let uncached = false;
  let position = 0;
  const ring: Buffer[] = [];
  let turn = 0;
  const bufferFor = (n: number): Buffer => {
    const i = turn++ % READ_BUFFERS;
    if (ring[i] === undefined || ring[i].length < n) ring[i] = Buffer.allocUnsafeSlow(n);
    return ring[i];
  };
  return {
    read: async (n) => {
      const out = bufferFor(n);
      let got = 0;
      for (let attempt = 0; attempt <= n; attempt++) {
        const at = position + got;
        const r = n <= SYNC_IO_BYTES ? hostSync(() => fs.readSync(fd, out, got, n - got, at), `cannot read ${file}`) : await readAt(fd, out, got, n - got, at, file);
        got += r;
        if (r === 0 || got === n) break;
      }
      position += got;
      return out.subarray(0, got);
    },
    readInto: async (parts) => {
      const total = parts.reduce((n, p) => n + p.length, 0);
      const start = position;
      position += total; // claimed now: the next call reads on from here while this one is in flight
      if (total > SYNC_IO_BYTES && readvCrc !== null) {
        const r = await readvCrc(fd, parts as Uint8Array[], start, directFd ?? -1, !uncached).catch((e: unknown) => Promise.reject(hostError(e, `cannot read ${file}`)));
        uncached ||= r.fromDisk && r.direct;
        return { bytes: r.bytes, crc32c: r.crc, fromDisk: r.fromDisk, direct: r.direct };
      }
      let got = 0;
      for (let rest = parts.filter((p) => p.length > 0); rest.length > 0; ) {
        const at = start + got;
        const r = total <= SYNC_IO_BYTES ? hostSync(() => fs.readvSync(fd, rest, at), `cannot read ${file}`) : await new Promise<number>((res, rej) => fs.readv(fd, rest, at, (e, n) => (e ? rej(hostError(e, `cannot read ${file}`)) : res(n))));
        if (r === 0) break;
        got += r;
        rest = skipBytes(rest, r);
      }
      assert(got <= total, 'readv reads at most what it was given');
      return { bytes: got, crc32c: null, fromDisk: false, direct: false };
    },
    close: () => {
      fs.closeSync(fd);
      if (directFd !== null) fs.closeSync(directFd);
    },
  };
}

function readAt(fd: number, out: Uint8Array, at: number, n: number, position: number, what: string): Promise<number> {
  return new Promise<number>((res, rej) => fs.read(fd, out, at, n, position, (e, got) => (e ? rej(hostError(e, `cannot read ${what}`)) : res(got))));
}

/** A source on a readable stream (stdin): buffers its chunks into exact reads. */
export function streamSource(input: NodeJS.ReadableStream): ImageSource {
  const it = (input as AsyncIterable<Buffer | string>)[Symbol.asyncIterator]();
  let pending: Buffer[] = [];
  let pendingBytes = 0;
  let ended = false;
  return {
    read: async (n) => {
      while (pendingBytes < n && !ended) {
        const r = await it.next().catch((e: unknown) => Promise.reject(hostError(e, 'cannot read the image stream')));
        if (r.done) ended = true;
        else {
          const chunk = typeof r.value === 'string' ? Buffer.from(r.value, 'latin1') : r.value;
          pending.push(chunk);
          pendingBytes += chunk.length;
        }
      }
      const all = pending.length === 1 ? pending[0] : Buffer.concat(pending, pendingBytes);
      const take = Math.min(n, pendingBytes);
      const out = all.subarray(0, take);
      pending = take < all.length ? [all.subarray(take)] : [];
      pendingBytes -= take;
      return out;
    },
    close: () => {
      void it.return?.();
    },
  };
}

/** A source over bytes in memory (tests, benchmarks, images already read). */
export function bytesSource(bytes: Uint8Array): ImageSource {
  let position = 0;
  return {
    read: async (n) => {
      const out = bytes.subarray(position, Math.min(bytes.length, position + n));
      position += out.length;
      return out;
    },
    close: () => {},
  };
}

/** A sink collecting the image in memory; `bytes()` after commit. */
export function memorySink(): ImageSink & { bytes(): Uint8Array } {
  const parts: Uint8Array[] = [];
  return {
    write: async (more) => {
      for (const p of more) parts.push(p.slice());
    },
    commit: async () => {},
    abort: () => (parts.length = 0),
    bytes: () => new Uint8Array(Buffer.concat(parts)),
  };
}
