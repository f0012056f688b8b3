/**
 * The acknowledgement log: one JSON line per event, appended by every worker
 * thread of every torture child to one file.
 *
 *   {"ph":"b", ...}  begin: the operation is about to start (intent)
 *   {"ph":"a", ...}  acknowledged: it returned; its effects must survive any crash
 *   {"ph":"f", ...}  failed with an expected error (ENOSPC, ...): a primitive
 *                    operation may have partly happened, like an interrupted
 *                    one; a name operation must have changed nothing
 *
 * A begin without an ack or failure is the operation a crash interrupted; the
 * verifier allows either outcome for it (and only for it). Every line is one
 * write() (whole lines, never interleaved: O_APPEND); acks are fsynced before
 * the operation counts as acknowledged.
 */
import * as fs from 'node:fs';

/** hold / drop: a primitive worker opens (and maybe maps) a morsel the names child named, or gives it back. */
export type PrimitiveOp = 'create' | 'createMeta' | 'clone' | 'destroy' | 'write' | 'populate' | 'cofault' | 'map' | 'unmap' | 'space' | 'hold' | 'drop';
/** The names child's operations (names.ts), on the management layer (memory.names). */
export type NameOp = 'mkdir' | 'rmdir' | 'ncreate' | 'nfixed' | 'unlink' | 'rename' | 'chmod' | 'open' | 'close' | 'nmap' | 'nunmap' | 'nwrite' | 'reap';
export type OpName = PrimitiveOp | NameOp;

export interface LogEvent {
  ph: 'b' | 'a' | 'f';
  /** child run, worker thread, per-thread sequence number */
  r: number;
  t: number;
  s: number;
  op: OpName;
  /** morsel ID as 0x... hex (for create: in the ack; for clone: the source) */
  id?: string;
  /** clone: the new morsel's ID (in the ack) */
  clone?: string;
  /** data order, meta flag, huge policy (2 MiB leaves) and fixed address (creates) */
  order?: number;
  meta?: boolean;
  huge?: boolean;
  address?: number;
  /** byte range and payload seed (write, populate, cofault) */
  off?: number;
  len?: number;
  pseed?: number;
  /** names child: the path (rename: from), rename's target, the incarnation's generation, a mode;
   *  primitive create, createMeta, clone: the new morsel's generation (its raw ID may come back as
   *  another incarnation, e.g. the names child's, once it is destroyed) */
  path?: string;
  to?: string;
  gen?: number;
  mode?: number;
  /** reap: dead slots emptied (and, in len, unlinked morsels destroyed) */
  count?: number;
  /** error code of a failure */
  code?: string;
}

export class LogWriter {
  private readonly fd: number;

  constructor(path: string) {
    this.fd = fs.openSync(path, 'a');
  }

  /** Intent: written through to the page cache (survives SIGKILL), not fsynced. */
  begin(e: Omit<LogEvent, 'ph'>): void {
    fs.writeSync(this.fd, JSON.stringify({ ph: 'b', ...e }) + '\n');
  }

  /** Acknowledgement: durable before it counts. */
  ack(e: Omit<LogEvent, 'ph'>): void {
    fs.writeSync(this.fd, JSON.stringify({ ph: 'a', ...e }) + '\n');
    fs.fsyncSync(this.fd);
  }

  fail(e: Omit<LogEvent, 'ph'>): void {
    fs.writeSync(this.fd, JSON.stringify({ ph: 'f', ...e }) + '\n');
    fs.fsyncSync(this.fd);
  }

  close(): void {
    fs.closeSync(this.fd);
  }
}

/** Reads the log incrementally: each call returns the complete lines appended since the last. */
export class LogReader {
  private offset = 0;
  /** complete lines that did not parse (should stay 0: a line is one write(), and only whole lines are read) */
  torn = 0;

  constructor(private readonly path: string) {}

  next(): LogEvent[] {
    let size: number;
    try {
      size = fs.statSync(this.path).size;
    } catch {
      return [];
    }
    if (size <= this.offset) return [];
    const buf = Buffer.alloc(size - this.offset);
    const fd = fs.openSync(this.path, 'r');
    try {
      fs.readSync(fd, buf, 0, buf.length, this.offset);
    } finally {
      fs.closeSync(fd);
    }
    // A writer may be mid-write(): consume whole lines only; the rest is read next time.
    const end = buf.lastIndexOf(0x0a) + 1;
    this.offset += end;
    const out: LogEvent[] = [];
    for (const line of buf.subarray(0, end).toString('utf8').split('\n')) {
      if (line === '') continue;
      try {
        out.push(JSON.parse(line) as LogEvent);
      } catch {
        this.torn++;
      }
    }
    return out;
  }
}
