/**
 * The memcached text protocol for one connection, byte-compatible with
 * memcached 1.6's replies (its doc/protocol.txt and proto_text.c
 * behaviour, checked against a real memcached 1.6.18 in test/kv-protocol):
 * get/gets/gat/gats, set/add/replace/append/prepend/cas, delete, incr/decr,
 * touch, flush_all [delay], stats [items|slabs|settings], version,
 * verbosity, quit, noreply, and the meta commands mn, mg (flags v s t f c
 * k O q T u b h l N R), ms (F T C c k O q M b I), md (C k O q b I T), ma
 * (D M N J T C v t c k O q b), me (docs/kv.md).
 *
 * Input is parsed straight from the socket's bytes (no strings on the
 * get/set path); a command line is at most LINE_MAX_BYTES (2048, like
 * memcached: a longer unterminated line closes the connection unless it is
 * a multi-get, which may grow to GET_LINE_MAX_BYTES), and a value waits in
 * a buffer of at most the item size limit. The session never holds more.
 */
import type { KvStore, ItemView, StoreMode, StoreResult } from './store.js';
import { KEY_MAX_BYTES, hashKey, nowSec } from './store.js';

/** memcached closes a connection whose unterminated line passes this (unless it is a multi-get). */
export const LINE_MAX_BYTES = 2048;
/** Our bound on a multi-get line (memcached's is unbounded). */
export const GET_LINE_MAX_BYTES = 1 << 20;
/** A feed stops executing commands once this much reply is waiting (the rest of the input waits for the next feed). */
export const OUT_BATCH_BYTES = 1 << 20;
/** memcached's MAX_TOKENS (the last token holds the rest of the line). */
const MAX_TOKENS = 24;
/** Relative expiry times are at most 30 days; larger ones are absolute unix times. */
const REALTIME_MAXDELTA_SEC = 60 * 60 * 24 * 30;
/** The protocol level we answer to `version` (clients pick features by it); `stats` says morsel_kv. */
export const KV_VERSION = '1.6.18';

const CR = 13;
const LF = 10;
const SP = 32;

/** Server-wide counters (per process, volatile: memcached's are too). */
export class KvCounters {
  startedSec = nowSec();
  currConnections = 0;
  totalConnections = 0;
  cmdGet = 0;
  cmdSet = 0;
  cmdTouch = 0;
  cmdFlush = 0;
  getHits = 0;
  getMisses = 0;
  getExpired = 0;
  deleteHits = 0;
  deleteMisses = 0;
  incrHits = 0;
  incrMisses = 0;
  decrHits = 0;
  decrMisses = 0;
  casHits = 0;
  casMisses = 0;
  casBadval = 0;
  touchHits = 0;
  touchMisses = 0;
  bytesRead = 0;
  bytesWritten = 0;
}

export interface KvSettings {
  memMiB: number;
  port: number;
  listen: string;
  maxConnections: number;
  verbosity: number;
}

/** What the server needs to know after a feed: close the connection after writing. */
const enum State {
  Line,
  Data,
  Swallow,
  Closing,
}

/** Stands for the CAS in a reply built before the store (ms c). */
const CAS_SLOT = '\u0000';

const ASCII = new Map<string, Uint8Array>();
/** Bytes of an ASCII literal (cached: replies are a handful of constants). */
function lit(s: string): Uint8Array {
  let b = ASCII.get(s);
  if (b === undefined) {
    b = Buffer.from(s, 'latin1');
    ASCII.set(s, b);
  }
  return b;
}

const R_ERROR = lit('ERROR\r\n');
const R_BAD_FORMAT = lit('CLIENT_ERROR bad command line format\r\n');
const R_END = lit('END\r\n');
const R_VALUE = lit('VALUE ');
const R_CRLF = lit('\r\n');
/** md's and ma's answer to a bad, unknown or duplicate flag. */
const R_BAD_META_FLAG = lit('CLIENT_ERROR invalid or duplicate flag\r\n');

export class Session {
  private state = State.Line;
  /** Unparsed input (bounded: see the module comment). */
  private inBuf = Buffer.allocUnsafe(4096);
  private inLen = 0;
  private out = Buffer.allocUnsafe(16384);
  private outLen = 0;
  private noreply = false;
  private readonly tokStart = new Int32Array(MAX_TOKENS);
  private readonly tokEnd = new Int32Array(MAX_TOKENS);
  private ntok = 0;
  // A storage command waiting for its data block.
  private pMode: StoreMode = 'set';
  private pKey = Buffer.allocUnsafe(KEY_MAX_BYTES);
  private pKeyLen = 0;
  private pFlags = 0;
  private pExp = 0;
  private pCas = 0;
  private pBytes = 0;
  private pNoreply = false;
  /** The pending store is a meta `ms`: its reply flags and options. */
  private pMeta = false;
  /** The k, O and c flags of the reply in request order; c's value is CAS_SLOT until the store is done. */
  private pMetaEcho = '';
  private pCompareCas = -1;
  private swallowBytes = 0;
  private readonly view: ItemView = { flags: 0, nbytes: 0, cas: 0 };
  private readonly scratch = new Uint8Array(64 * 1024);

  constructor(
    private readonly store: KvStore,
    private readonly counters: KvCounters,
    private readonly settings: KvSettings,
    /** Runs `fn` inside an access section of the store's Mmu. */
    private readonly section: (fn: () => void) => void,
  ) {}

  get closing(): boolean {
    return this.state === State.Closing;
  }

  /** Complete commands are still buffered (a feed stopped at OUT_BATCH_BYTES): feed(EMPTY_INPUT) once the replies are sent. */
  moreInput = false;

  /**
   * Parses and executes everything complete in `chunk` (plus what was
   * buffered) and returns the replies to send (possibly empty). After a
   * reply with `closing` set, the server ends the connection.
   */
  feed(chunk: Uint8Array): Uint8Array {
    this.counters.bytesRead += chunk.length;
    let buf: Uint8Array;
    let len: number;
    if (this.inLen === 0) {
      buf = chunk;
      len = chunk.length;
    } else {
      this.reserveIn(this.inLen + chunk.length);
      this.inBuf.set(chunk, this.inLen);
      this.inLen += chunk.length;
      buf = this.inBuf;
      len = this.inLen;
    }
    let pos = 0;
    this.section(() => {
      this.store.now = nowSec();
      pos = this.parse(buf, len);
    });
    const rest = len - pos;
    if (buf === this.inBuf) {
      if (pos > 0) this.inBuf.copyWithin(0, pos, len);
    } else if (rest > 0) {
      this.reserveIn(rest);
      this.inBuf.set(chunk.subarray(pos, len), 0);
    }
    this.inLen = this.state === State.Closing ? 0 : rest;
    this.moreInput = this.inLen > 0 && this.outLen >= OUT_BATCH_BYTES;
    return this.takeOutput();
  }

  private takeOutput(): Uint8Array {
    if (this.outLen === 0) return EMPTY;
    const reply = Buffer.allocUnsafe(this.outLen);
    this.out.copy(reply, 0, 0, this.outLen);
    this.counters.bytesWritten += this.outLen;
    this.outLen = 0;
    return reply;
  }

  private reserveIn(n: number): void {
    if (n <= this.inBuf.length) return;
    const next = Buffer.allocUnsafe(Math.max(n, this.inBuf.length * 2));
    this.inBuf.copy(next, 0, 0, this.inLen);
    this.inBuf = next;
  }

  /** Executes complete commands in buf[0, len); returns the bytes consumed. */
  private parse(buf: Uint8Array, len: number): number {
    let pos = 0;
    while (pos < len && this.state !== State.Closing && this.outLen < OUT_BATCH_BYTES) {
      if (this.state === State.Swallow) {
        const n = Math.min(this.swallowBytes, len - pos);
        this.swallowBytes -= n;
        pos += n;
        if (this.swallowBytes === 0) this.state = State.Line;
        continue;
      }
      if (this.state === State.Data) {
        const need = this.pBytes + 2;
        if (len - pos < need) return pos;
        this.completeStore(buf, pos);
        pos += need;
        this.state = State.Line;
        continue;
      }
      const nl = buf.indexOf(LF, pos);
      if (nl < 0 || nl >= len) {
        this.checkPartialLine(buf, pos, len);
        return pos;
      }
      let end = nl;
      if (end > pos && buf[end - 1] === CR) end--;
      this.command(buf, pos, end);
      pos = nl + 1;
    }
    return this.state === State.Closing ? len : pos;
  }

  /** An unterminated line: memcached closes the connection past 2048 bytes unless it is a multi-get. */
  private checkPartialLine(buf: Uint8Array, pos: number, len: number): void {
    const pending = len - pos;
    if (pending <= LINE_MAX_BYTES) return;
    let p = pos;
    while (p < len && buf[p] === SP) p++;
    const isGet = p - pos <= 100 && (startsWith(buf, p, len, 'get ') || startsWith(buf, p, len, 'gets '));
    if (!isGet || pending > GET_LINE_MAX_BYTES) this.state = State.Closing;
  }

  // --- tokens -------------------------------------------------------------------

  /** Splits line [start, end) on spaces like memcached's tokenize_command (ntok excludes its NULL finalizer). */
  private tokenize(buf: Uint8Array, start: number, end: number): void {
    let n = 0;
    let s = start;
    for (let i = start; i < end; i++) {
      if (buf[i] !== SP) continue;
      if (s !== i) {
        this.tokStart[n] = s;
        this.tokEnd[n] = i;
        n++;
        if (n >= MAX_TOKENS - 1) {
          // The rest of the line is one last token.
          this.tokStart[n] = i + 1;
          this.tokEnd[n] = end;
          this.ntok = n + 1;
          return;
        }
      }
      s = i + 1;
    }
    if (s !== end) {
      this.tokStart[n] = s;
      this.tokEnd[n] = end;
      n++;
    }
    this.ntok = n;
  }

  private tokLen(i: number): number {
    return this.tokEnd[i] - this.tokStart[i];
  }

  private tokIs(buf: Uint8Array, i: number, s: string): boolean {
    if (this.tokLen(i) !== s.length) return false;
    const o = this.tokStart[i];
    for (let k = 0; k < s.length; k++) if (buf[o + k] !== s.charCodeAt(k)) return false;
    return true;
  }

  /** memcached's set_noreply_maybe: the last token is "noreply". */
  private noreplyMaybe(buf: Uint8Array): boolean {
    this.noreply = this.ntok > 0 && this.tokIs(buf, this.ntok - 1, 'noreply');
    return this.noreply;
  }

  /**
   * Token i as an unsigned decimal up to `max`, or -1 (strtoul-like: digits
   * only; memcached also takes leading spaces and a '+').
   */
  private tokUint(buf: Uint8Array, i: number, max: number): number {
    const s = this.tokStart[i];
    const e = this.tokEnd[i];
    if (e === s || e - s > 20) return -1;
    let v = 0;
    for (let k = s; k < e; k++) {
      const d = buf[k] - 48;
      if (d < 0 || d > 9) return -1;
      v = v * 10 + d;
    }
    return v <= max ? v : -1;
  }

  /**
   * Client flags as memcached 1.6.18 reads them: an unsigned 64-bit decimal
   * truncated to 32 bits; -1 if not a number or >= 2^64.
   */
  private tokFlags(buf: Uint8Array, i: number): number {
    const s = this.tokStart[i];
    const e = this.tokEnd[i];
    if (e === s || e - s > 20) return -1;
    if (e - s === 20 && !notAbove(buf, s, U64_MAX_DIGITS)) return -1;
    let v = 0;
    for (let k = s; k < e; k++) {
      const d = buf[k] - 48;
      if (d < 0 || d > 9) return -1;
      v = (v * 10 + d) % TWO_32;
    }
    return v;
  }

  /** Token i as a signed 32-bit decimal, or NaN. */
  private tokInt32(buf: Uint8Array, i: number): number {
    return this.tokSigned(buf, i, 2 ** 31 - 1);
  }

  /** Token i as a signed decimal of magnitude <= 2^53 (strtol on 64-bit longs, as far as a number holds it), or NaN. */
  private tokInt53(buf: Uint8Array, i: number): number {
    return this.tokSigned(buf, i, Number.MAX_SAFE_INTEGER);
  }

  private tokSigned(buf: Uint8Array, i: number, max: number): number {
    const neg = this.tokLen(i) > 1 && buf[this.tokStart[i]] === 45;
    if (neg) this.tokStart[i]++;
    const v = this.tokUint(buf, i, max + (neg ? 1 : 0));
    if (neg) this.tokStart[i]--;
    return v < 0 ? NaN : neg ? -v : v;
  }

  // --- output -------------------------------------------------------------------

  private reserveOut(n: number): void {
    if (this.outLen + n <= this.out.length) return;
    const next = Buffer.allocUnsafe(Math.max(this.outLen + n, this.out.length * 2));
    this.out.copy(next, 0, 0, this.outLen);
    this.out = next;
  }

  private put(b: Uint8Array): void {
    this.reserveOut(b.length);
    this.out.set(b, this.outLen);
    this.outLen += b.length;
  }

  private putRange(buf: Uint8Array, s: number, e: number): void {
    this.reserveOut(e - s);
    this.out.set(buf.subarray(s, e), this.outLen);
    this.outLen += e - s;
  }

  private putStr(s: string): void {
    this.reserveOut(s.length);
    this.outLen += this.out.write(s, this.outLen, 'latin1');
  }

  /** A one-line reply (ERROR, STORED, ...), dropped under noreply as memcached's out_string does. */
  private reply(line: Uint8Array): void {
    if (this.noreply) return;
    this.put(line);
  }

  private replyStr(s: string): void {
    if (this.noreply) return;
    this.putStr(s + '\r\n');
  }

  // --- dispatch -------------------------------------------------------------------

  /** One command line buf[start, end) (without its line end), dispatched as process_command_ascii does. */
  private command(buf: Uint8Array, start: number, end: number): void {
    this.noreply = false;
    this.tokenize(buf, start, end);
    const n = this.ntok + 1; // memcached counts its NULL finalizer token
    if (this.ntok < 1 || this.tokLen(0) < 2) return this.reply(R_ERROR);
    const first = buf[this.tokStart[0]];
    const c = (s: string): boolean => this.tokIs(buf, 0, s);
    if (first === 0x67 /* g */) {
      if (n < 3) return this.reply(R_ERROR);
      if (c('get')) return this.get(buf, false, false);
      if (c('gets')) return this.get(buf, true, false);
      if (c('gat')) return this.get(buf, false, true);
      if (c('gats')) return this.get(buf, true, true);
      return this.reply(R_ERROR);
    }
    if (c('set')) return n === 6 || n === 7 ? this.update(buf, 'set') : this.reply(R_ERROR);
    if (c('add')) return n === 6 || n === 7 ? this.update(buf, 'add') : this.reply(R_ERROR);
    if (c('replace')) return n === 6 || n === 7 ? this.update(buf, 'replace') : this.reply(R_ERROR);
    if (c('append')) return n === 6 || n === 7 ? this.update(buf, 'append') : this.reply(R_ERROR);
    if (c('prepend')) return n === 6 || n === 7 ? this.update(buf, 'prepend') : this.reply(R_ERROR);
    if (c('cas')) return n === 7 || n === 8 ? this.update(buf, 'cas') : this.reply(R_ERROR);
    if (c('incr')) return n === 4 || n === 5 ? this.arith(buf, true) : this.reply(R_ERROR);
    if (c('decr')) return n === 4 || n === 5 ? this.arith(buf, false) : this.reply(R_ERROR);
    if (c('delete')) return n >= 3 && n <= 5 ? this.del(buf) : this.reply(R_ERROR);
    if (c('touch')) return n === 4 || n === 5 ? this.touch(buf) : this.reply(R_ERROR);
    if (first === 0x6d /* m */ && this.tokLen(0) === 2) {
      if (c('mn')) return this.put(lit('MN\r\n'));
      if (c('mg')) return this.metaGet(buf);
      if (c('ms')) return this.metaSet(buf);
      if (c('md')) return this.metaDelete(buf);
      if (c('ma')) return this.metaArith(buf);
      if (c('me')) return this.metaDebug(buf);
      return this.reply(R_ERROR);
    }
    if (c('stats')) return this.stats(buf);
    if (c('flush_all')) return n >= 2 && n <= 4 ? this.flushAll(buf) : this.reply(R_ERROR);
    if (c('version')) return this.replyStr(`VERSION ${KV_VERSION}`);
    if (c('quit')) {
      this.state = State.Closing;
      return;
    }
    if (c('verbosity')) {
      if (n !== 3 && n !== 4) return this.reply(R_ERROR);
      this.noreplyMaybe(buf);
      return this.replyStr('OK');
    }
    if (this.ntok >= 1 && startsWith(buf, this.tokStart[this.ntok - 1], this.tokEnd[this.ntok - 1], 'HTTP/')) {
      this.state = State.Closing; // memcached hangs up on HTTP requests
      return;
    }
    this.reply(R_ERROR);
  }

  // --- retrieval ------------------------------------------------------------------

  /** get/gets <key>*, gat/gats <exptime> <key>*: keys are read from the line, not limited to MAX_TOKENS. */
  private get(buf: Uint8Array, withCas: boolean, touch: boolean): void {
    let exp = 0;
    let i = 1;
    if (touch) {
      const t = this.tokInt32(buf, 1);
      if (Number.isNaN(t)) return this.replyStr('CLIENT_ERROR invalid exptime argument');
      exp = this.absExpiry(t);
      i = 2;
    }
    const replyStart = this.outLen;
    // Keys: tokens i.. (the last token may hold the rest of a long line: split it too).
    for (; i < this.ntok; i++) {
      const last = i === this.ntok - 1;
      let s = this.tokStart[i];
      const lineEnd = this.tokEnd[i];
      do {
        let e = s;
        while (e < lineEnd && buf[e] !== SP) e++;
        if (e - s > KEY_MAX_BYTES) {
          this.outLen = replyStart; // memcached drops the values it had gathered
          this.put(R_BAD_FORMAT);
          return;
        }
        if (e > s) this.getOne(buf, s, e, withCas, touch, exp);
        s = e + 1;
      } while (last && s < lineEnd);
    }
    this.put(R_END);
  }

  /** One key (at most KEY_MAX_BYTES) of a get: its VALUE block if it is present. */
  private getOne(buf: Uint8Array, s: number, e: number, withCas: boolean, touch: boolean, exp: number): void {
    const kLen = e - s;
    const counters = this.counters;
    if (touch) counters.cmdTouch++;
    counters.cmdGet++;
    const store = this.store;
    const it = store.find(buf, s, kLen, hashKey(buf, s, kLen));
    if (it === 0) {
      counters.getMisses++;
      if (touch) counters.touchMisses++;
      return;
    }
    counters.getHits++;
    if (touch) {
      counters.touchHits++;
      store.setExpiry(it, exp);
    }
    store.fetch(it);
    store.view(it, this.view);
    const v = this.view;
    this.put(R_VALUE);
    this.putRange(buf, s, e);
    this.putStr(withCas ? ` ${v.flags} ${v.nbytes} ${v.cas}\r\n` : ` ${v.flags} ${v.nbytes}\r\n`);
    this.reserveOut(v.nbytes + 2);
    store.copyOut(store.valueVa(it), this.out, this.outLen, v.nbytes);
    this.outLen += v.nbytes;
    this.put(R_CRLF);
  }

  // --- storage ------------------------------------------------------------------

  /** The command line of set/add/replace/append/prepend/cas; the data block follows (State.Data). */
  private update(buf: Uint8Array, mode: StoreMode): void {
    this.noreplyMaybe(buf);
    if (this.tokLen(1) > KEY_MAX_BYTES) return this.reply(R_BAD_FORMAT);
    const flags = this.tokFlags(buf, 2);
    const exp = this.tokInt32(buf, 3);
    const bytes = this.tokInt32(buf, 4);
    const cas = mode === 'cas' ? this.tokUint(buf, 5, Number.MAX_VALUE) : 0;
    if (flags < 0 || Number.isNaN(exp) || Number.isNaN(bytes) || cas < 0 || bytes < 0) return this.reply(R_BAD_FORMAT);
    const kLen = this.tokLen(1);
    if (bytes > this.store.maxValueBytes(kLen)) {
      this.reply(lit('SERVER_ERROR object too large for cache\r\n'));
      this.swallow(bytes + 2);
      if (mode === 'set') this.dropKey(buf, this.tokStart[1], kLen); // no stale value after a failed set
      return;
    }
    this.pMode = mode;
    buf = buf as Buffer;
    this.pKey.set(buf.subarray(this.tokStart[1], this.tokEnd[1]), 0);
    this.pKeyLen = kLen;
    this.pFlags = flags;
    this.pExp = this.absExpiry(exp);
    this.pCas = cas;
    this.pBytes = bytes;
    this.pNoreply = this.noreply;
    this.state = State.Data;
  }

  private swallow(n: number): void {
    this.swallowBytes = n;
    this.state = State.Swallow;
  }

  private dropKey(buf: Uint8Array, s: number, kLen: number): void {
    this.store.remove(buf, s, kLen, hashKey(buf, s, kLen));
  }

  /** The data block has arrived at buf[pos, pos + pBytes + 2). */
  private completeStore(buf: Uint8Array, pos: number): void {
    this.noreply = this.pNoreply;
    const n = this.pBytes;
    if (buf[pos + n] !== CR || buf[pos + n + 1] !== LF) {
      if (this.pMeta) this.noreply = false; // meta mode always reports errors
      return this.reply(lit('CLIENT_ERROR bad data chunk\r\n'));
    }
    if (this.pMeta) return this.completeMetaStore(buf, pos);
    this.counters.cmdSet++;
    const key = this.pKey;
    const kLen = this.pKeyLen;
    const r: StoreResult = this.store.store(this.pMode, key, 0, kLen, hashKey(key, 0, kLen), this.pFlags, this.pExp, buf, pos, n, this.pCas, this.scratch);
    if (this.pMode === 'cas') {
      if (r === 'STORED') this.counters.casHits++;
      else if (r === 'EXISTS') this.counters.casBadval++;
      else if (r === 'NOT_FOUND') this.counters.casMisses++;
    }
    if (r === 'TOO_LARGE') return this.reply(lit('SERVER_ERROR object too large for cache\r\n'));
    if (r === 'NO_MEMORY') {
      if (this.pMode === 'set') this.dropKey(key, 0, kLen);
      return this.reply(lit('SERVER_ERROR out of memory storing object\r\n'));
    }
    this.reply(lit(`${r}\r\n`));
  }

  /** memcached's realtime(): 0 = never, negative = already expired, up to 30 days relative, else absolute. */
  private absExpiry(t: number): number {
    if (t === 0) return 0;
    if (t < 0) return 1; // long past
    if (t > REALTIME_MAXDELTA_SEC) return t <= this.store.now ? 1 : t; // absolute, maybe already past
    return this.store.now + t;
  }

  // --- meta commands (mg ms md ma) ----------------------------------------------------

  /**
   * Parses meta flags from token `first` on: each is one letter plus an
   * optional token; returns false after replying to a duplicate or unknown
   * one. `allowed` lists the letters this command takes; `oneError`: md
   * and ma answer both with R_BAD_META_FLAG (as memcached does).
   */
  private metaFlags(buf: Uint8Array, first: number, allowed: string, oneError = false): boolean {
    this.mFlags.fill(-1);
    for (let i = first; i < this.ntok; i++) {
      const letter = buf[this.tokStart[i]];
      const slot = letter - 0x40;
      if (slot < 0 || slot >= 64 || allowed.indexOf(String.fromCharCode(letter)) < 0) {
        this.put(oneError ? R_BAD_META_FLAG : lit('CLIENT_ERROR invalid flag\r\n'));
        return false;
      }
      if (this.mFlags[slot] >= 0) {
        this.put(oneError ? R_BAD_META_FLAG : lit('CLIENT_ERROR duplicate flag\r\n'));
        return false;
      }
      this.mFlags[slot] = i;
    }
    return true;
  }

  private readonly mFlags = new Int32Array(64);

  private has(letter: string): boolean {
    return this.mFlags[letter.charCodeAt(0) - 0x40] >= 0;
  }

  /** The text after flag `letter` (e.g. "123" of O123). */
  private flagText(buf: Uint8Array, letter: string): string {
    const i = this.mFlags[letter.charCodeAt(0) - 0x40];
    return Buffer.from(buf.buffer, buf.byteOffset + this.tokStart[i] + 1, this.tokEnd[i] - this.tokStart[i] - 1).toString('latin1');
  }

  /** The flag's number (signed up to 2^53), or NaN if absent/not a number. */
  private flagNum(buf: Uint8Array, letter: string): number {
    const t = this.flagText(buf, letter);
    return /^-?\d{1,16}$/.test(t) ? Number(t) : NaN;
  }

  /** The k and O flags echoed (and c as ` c` + CAS_SLOT when `order` has it), in the order they were given (as memcached does). */
  private echo(buf: Uint8Array, key: string, order: string): string {
    let s = '';
    for (let i = 0; i < this.ntok; i++) {
      for (let k = 0; k < order.length; k++) {
        const letter = order[k];
        if (this.mFlags[letter.charCodeAt(0) - 0x40] !== i) continue;
        if (letter === 'k') s += ` k${key}`;
        else if (letter === 'O') s += ` O${this.flagText(buf, 'O')}`;
        else if (letter === 'c') s += ` c${CAS_SLOT}`;
      }
    }
    return s;
  }

  /** Reads the key token of a meta command; false after replying to a bad one. */
  private metaKey(buf: Uint8Array): boolean {
    if (this.ntok < 2) {
      this.put(R_ERROR);
      return false;
    }
    if (this.tokLen(1) > KEY_MAX_BYTES) {
      this.put(R_BAD_FORMAT);
      return false;
    }
    return true;
  }

  /** A meta command's key, set by metaKeyOf(): bytes kBuf[kOff, kOff + kLen), and its echo text (base64 + " b" with flag b). */
  private kBuf: Uint8Array = EMPTY_INPUT;
  private kOff = 0;
  private kLen = 0;
  private kEcho = '';
  private readonly bKey = Buffer.allocUnsafe(KEY_MAX_BYTES);

  /**
   * Sets kBuf/kOff/kLen/kEcho from token 1, decoding it as base64 when flag
   * b was given (parse the flags first). False, with nothing replied, when
   * a b key is not canonical padded base64.
   * Unlike memcached, a hit's echoed key follows the request's b flag, not
   * how the item was stored.
   */
  private metaKeyOf(buf: Uint8Array): boolean {
    const s = this.tokStart[1];
    const len = this.tokLen(1);
    const text = Buffer.from(buf.buffer, buf.byteOffset + s, len).toString('latin1');
    if (!this.has('b')) {
      this.kBuf = buf;
      this.kOff = s;
      this.kLen = len;
      this.kEcho = text;
      return true;
    }
    if (len % 4 !== 0 || !/^[A-Za-z0-9+/]+={0,2}$/.test(text)) return false;
    const n = this.bKey.write(text, 'base64');
    if (n === 0) return false;
    this.kBuf = this.bKey;
    this.kOff = 0;
    this.kLen = n;
    this.kEcho = `${text} b`;
    return true;
  }

  /**
   * mg <key> <flags>*: v value, s size, t ttl, f flags, c cas, k key, O
   * opaque, q quiet miss, T ttl update, u (no LRU bump), b (base64 key), h
   * hit before (0/1), l seconds since last access, N ttl (vivify: a miss
   * creates an empty item and wins), R ttl (recache: win when the ttl left
   * is below it). Flags answer in their order, T and N taking effect where
   * they stand (as memcached's loop); then Z (a win token went out before),
   * X (stale: ms I) and W (this reader won: later ones get Z).
   */
  private metaGet(buf: Uint8Array): void {
    if (!this.metaKey(buf) || !this.metaFlags(buf, 2, 'vstfckOqTubhlNR')) return;
    const tExp = this.metaTtl(buf, 'T');
    const nExp = this.metaTtl(buf, 'N');
    const rExp = this.metaTtl(buf, 'R');
    if (Number.isNaN(tExp + nExp + rExp)) return this.put(lit('CLIENT_ERROR bad token in command line format\r\n'));
    if (!this.metaKeyOf(buf)) return this.put(lit('CLIENT_ERROR error decoding key\r\n'));
    const { kBuf, kOff, kLen } = this;
    const store = this.store;
    this.counters.cmdGet++;
    const hash = hashKey(kBuf, kOff, kLen);
    let it = store.find(kBuf, kOff, kLen, hash);
    const created = it === 0 && this.has('N') && this.vivify(hash, this.lastOf('T', 'N') === 'T' ? tExp : nExp);
    if (created) it = store.find(kBuf, kOff, kLen, hash);
    if (it === 0) {
      this.counters.getMisses++;
      if (!this.has('q')) this.putStr(`EN${this.echo(buf, this.kEcho, 'kO')}\r\n`);
      return;
    }
    if (created) this.counters.getMisses++;
    else this.counters.getHits++;
    const wonBefore = store.wonBefore(it);
    let exp = created ? 0 : store.expiryOf(it);
    let won = false;
    const flags = this.metaGetFlags(buf, it, (letter) => {
      if (letter === 'T') exp = tExp;
      else if (letter === 'N' && created) {
        exp = nExp;
        won = true;
      } else if (letter === 'R' && !wonBefore && !created && exp !== 0 && exp < rExp) won = true;
      return exp;
    });
    let tail = wonBefore ? ' Z' : '';
    if (store.stale(it)) {
      tail += ' X';
      won ||= !wonBefore; // the first reader of a stale item gets the token
    }
    if (won) {
      tail += ' W';
      store.markWon(it);
    }
    if (exp !== store.expiryOf(it)) store.setExpiry(it, exp);
    if (!this.has('u')) store.fetch(it);
    const v = this.view;
    if (!this.has('v')) return this.putStr(`HD${flags}${tail}\r\n`);
    this.putStr(`VA ${v.nbytes}${flags}${tail}\r\n`);
    this.reserveOut(v.nbytes + 2);
    store.copyOut(store.valueVa(it), this.out, this.outLen, v.nbytes);
    this.outLen += v.nbytes;
    this.put(R_CRLF);
  }

  /**
   * mg's reply flags in request order (fills this.view). `step` sees each
   * letter first (T N R change the ttl there) and returns the expiry `t`
   * reports; h and l report the state before this read.
   */
  private metaGetFlags(buf: Uint8Array, it: number, step: (letter: string) => number): string {
    const store = this.store;
    store.view(it, this.view);
    const v = this.view;
    let flags = '';
    for (let i = 2; i < this.ntok; i++) {
      const letter = String.fromCharCode(buf[this.tokStart[i]]);
      const exp = step(letter);
      if (letter === 's') flags += ` s${v.nbytes}`;
      else if (letter === 't') flags += ` t${exp === 0 ? -1 : Math.max(0, exp - store.now)}`;
      else if (letter === 'f') flags += ` f${v.flags}`;
      else if (letter === 'c') flags += ` c${v.cas}`;
      else if (letter === 'k') flags += ` k${this.kEcho}`;
      else if (letter === 'O') flags += ` O${this.flagText(buf, 'O')}`;
      else if (letter === 'h') flags += store.fetchedBefore(it) ? ' h1' : ' h0';
      else if (letter === 'l') flags += ` l${Math.max(0, store.now - store.lastAccess(it))}`;
    }
    return flags;
  }

  /** The absolute expiry of meta flag `letter`'s ttl token (0 when absent), NaN when the token is not a number. */
  private metaTtl(buf: Uint8Array, letter: string): number {
    if (!this.has(letter)) return 0;
    const t = this.flagNum(buf, letter);
    return Number.isNaN(t) ? NaN : this.absExpiry(t);
  }

  /** Which of two given flags comes later on the line ('' if neither is given). */
  private lastOf(a: string, b: string): string {
    const ia = this.mFlags[a.charCodeAt(0) - 0x40];
    const ib = this.mFlags[b.charCodeAt(0) - 0x40];
    return ia < 0 && ib < 0 ? '' : ia > ib ? a : b;
  }

  /** mg N on a miss: stores an empty item (flags 0) with expiry `exp` under the current key; false if it could not. */
  private vivify(hash: number, exp: number): boolean {
    return this.store.store('add', this.kBuf, this.kOff, this.kLen, hash, 0, exp, EMPTY_INPUT, 0, 0, 0, this.scratch) === 'STORED';
  }

  /** ms <key> <datalen> <flags>*: F flags, T ttl, C compare cas, c return cas, k, O, q, M mode (E add, A append, P prepend, R replace, S set), I invalidate (a set with a C older than the item's stores it marked stale). */
  private metaSet(buf: Uint8Array): void {
    if (this.ntok < 3) return this.put(this.ntok < 2 ? R_ERROR : R_BAD_FORMAT);
    const bytes = this.tokInt32(buf, 2);
    if (Number.isNaN(bytes) || bytes < 0) return this.put(R_BAD_FORMAT);
    const kLen = this.tokLen(1);
    const fail = (line: string): void => {
      this.put(lit(line));
      this.swallow(bytes + 2);
    };
    if (kLen > KEY_MAX_BYTES) return fail('CLIENT_ERROR bad command line format\r\n');
    if (!this.metaFlags(buf, 3, 'FTCckOqMbI')) return this.swallow(bytes + 2);
    if (!this.metaKeyOf(buf)) return fail('CLIENT_ERROR error decoding key\r\n');
    let mode: StoreMode = 'set';
    if (this.has('M')) {
      const m = this.flagText(buf, 'M');
      const modes: Record<string, StoreMode> = { E: 'add', e: 'add', A: 'append', a: 'append', P: 'prepend', p: 'prepend', R: 'replace', r: 'replace', S: 'set', s: 'set' };
      if (!(m in modes)) return fail('CLIENT_ERROR invalid mode for ms M token\r\n');
      mode = modes[m];
    }
    // Client flags as the text protocol reads them: u64, truncated to 32 bits.
    const flagsText = this.has('F') ? this.flagText(buf, 'F') : '0';
    const flags64 = /^\d{1,20}$/.test(flagsText) ? BigInt(flagsText) : -1n;
    if (flags64 < 0n || flags64 > 0xffffffffffffffffn) return fail('CLIENT_ERROR bad command line format\r\n');
    const flags = Number(flags64 & 0xffffffffn);
    const ttl = this.has('T') ? this.flagNum(buf, 'T') : 0;
    const cas = this.has('C') ? this.flagNum(buf, 'C') : -1;
    if (Number.isNaN(ttl) || Number.isNaN(cas)) return fail('CLIENT_ERROR bad token in command line format\r\n');
    if (bytes > this.store.maxValueBytes(kLen)) return fail('SERVER_ERROR object too large for cache\r\n');
    const key = this.kEcho;
    this.pMode = mode;
    this.pKey.set(this.kBuf.subarray(this.kOff, this.kOff + this.kLen), 0);
    this.pKeyLen = this.kLen;
    this.pFlags = flags;
    this.pExp = this.absExpiry(ttl);
    this.pCas = 0;
    this.pBytes = bytes;
    this.pNoreply = false;
    this.pMeta = true;
    this.pMetaEcho = this.echo(buf, key, 'kOc');
    this.pCompareCas = cas;
    this.pQuiet = this.has('q');
    this.pInvalidate = this.has('I');
    this.state = State.Data;
  }

  private pQuiet = false;
  private pInvalidate = false;

  private completeMetaStore(buf: Uint8Array, pos: number): void {
    this.pMeta = false;
    this.counters.cmdSet++;
    const key = this.pKey;
    const kLen = this.pKeyLen;
    const hash = hashKey(key, 0, kLen);
    let mode = this.pMode;
    let casIn = 0;
    if (this.pCompareCas >= 0) {
      const cur = this.store.find(key, 0, kLen, hash);
      if (cur === 0) return this.putStr(`NF${this.pMetaEcho.replace(CAS_SLOT, '0')}\r\n`);
      this.store.view(cur, this.view);
      const stale = mode === 'set' && this.pInvalidate && this.pCompareCas < this.view.cas; // stored, marked stale (only a set: memcached's NREAD_CAS)
      if (this.view.cas !== this.pCompareCas && !stale) return this.putStr(`EX${this.pMetaEcho.replace(CAS_SLOT, '0')}\r\n`);
      if (mode === 'set') {
        mode = 'cas';
        casIn = this.pCompareCas;
      }
    }
    const r = this.store.store(mode, key, 0, kLen, hash, this.pFlags, this.pExp, buf, pos, this.pBytes, casIn, this.scratch, this.pInvalidate);
    if (r === 'TOO_LARGE') return this.put(lit('SERVER_ERROR object too large for cache\r\n'));
    if (r === 'NO_MEMORY') return this.put(lit('SERVER_ERROR out of memory storing object\r\n'));
    const code = r === 'STORED' ? 'HD' : r === 'NOT_STORED' ? 'NS' : r === 'EXISTS' ? 'EX' : 'NF';
    if (code === 'HD' && this.pQuiet) return;
    let cas = 0; // memcached answers c0 when nothing was stored
    if (code === 'HD' && this.pMetaEcho.includes(CAS_SLOT)) {
      this.store.view(this.store.find(key, 0, kLen, hash), this.view);
      cas = this.view.cas;
    }
    this.putStr(`${code}${this.pMetaEcho.replace(CAS_SLOT, String(cas))}\r\n`);
  }

  /** md <key> <flags>*: C compare cas, k, O, q (quiet HD), I (invalidate: mark stale instead of deleting) with T ttl. */
  private metaDelete(buf: Uint8Array): void {
    if (!this.metaKey(buf) || !this.metaFlags(buf, 2, 'CkOqbIT', true)) return;
    const tExp = this.metaTtl(buf, 'T');
    if (Number.isNaN(tExp) || !this.metaKeyOf(buf)) return this.put(R_BAD_META_FLAG);
    const { kBuf, kOff: s, kLen } = this;
    const echo = this.echo(buf, this.kEcho, 'kO');
    const hash = hashKey(kBuf, s, kLen);
    const it = this.store.find(kBuf, s, kLen, hash);
    if (it === 0) return this.putStr(`NF${echo}\r\n`);
    if (this.has('C')) {
      this.store.view(it, this.view);
      if (this.view.cas !== this.flagNum(buf, 'C')) return this.putStr(`EX${echo}\r\n`);
    }
    if (!this.has('I')) this.store.remove(kBuf, s, kLen, hash);
    else if (!this.store.invalidate(it, kBuf, s, kLen, hash, this.has('T') ? tExp : this.store.expiryOf(it), this.scratch)) return this.put(lit('SERVER_ERROR out of memory\r\n'));
    if (!this.has('q')) this.putStr(`HD${echo}\r\n`);
  }

  /**
   * ma <key> <flags>*: D delta, M mode (I/+ incr, D/- decr), N ttl + J
   * initial (create if missing), T ttl update, C compare cas, v value, t
   * ttl, c cas, k, O, q. Flags answer in their order, T and N taking effect where they stand.
   * Unlike memcached, T always sticks: memcached applies it to the item it
   * read, which is replaced (losing the T) when the number cannot change in
   * place.
   */
  private metaArith(buf: Uint8Array): void {
    if (!this.metaKey(buf) || !this.metaFlags(buf, 2, 'DMNJTtcvkOqbC', true)) return;
    const badFlag = R_BAD_META_FLAG;
    if (!this.metaKeyOf(buf)) return this.put(badFlag);
    const { kBuf, kOff: s, kLen } = this;
    let incr = true;
    if (this.has('M')) {
      const m = this.flagText(buf, 'M');
      if (m === 'D' || m === 'd' || m === '-') incr = false;
      else if (!(m === 'I' || m === 'i' || m === '+')) return this.put(lit('CLIENT_ERROR invalid mode for ma M token\r\n'));
    }
    const deltaText = this.has('D') ? this.flagText(buf, 'D') : '1';
    const delta = /^\d{1,20}$/.test(deltaText) ? BigInt(deltaText) : null;
    const initText = this.has('J') ? this.flagText(buf, 'J') : '0';
    const tExp = this.metaTtl(buf, 'T');
    const nExp = this.metaTtl(buf, 'N');
    const casIn = this.has('C') ? this.flagNum(buf, 'C') : 0;
    if (delta === null || delta > 0xffffffffffffffffn || !/^\d{1,20}$/.test(initText) || Number.isNaN(tExp + nExp + casIn)) return this.put(badFlag);
    const hash = hashKey(kBuf, s, kLen);
    const it = this.store.find(kBuf, s, kLen, hash);
    if (it !== 0 && this.has('C')) {
      this.store.view(it, this.view);
      if (this.view.cas !== casIn) return this.putStr(`EX${this.echo(buf, this.kEcho, 'kO')}\r\n`);
    }
    let result: bigint;
    const created = it === 0;
    if (created) {
      if (!this.has('N')) return this.putStr(`NF${this.echo(buf, this.kEcho, 'kO')}\r\n`);
      result = BigInt(initText);
      const digits = Buffer.from(result.toString(), 'latin1');
      const r = this.store.store('add', kBuf, s, kLen, hash, 0, this.lastOf('T', 'N') === 'T' ? tExp : nExp, digits, 0, digits.length, 0, this.scratch);
      if (r !== 'STORED') return this.putStr(`NS${this.echo(buf, this.kEcho, 'kO')}\r\n`);
    } else {
      const r = this.applyDelta(it, kBuf, s, kLen, hash, incr, delta);
      if (r === null) return this.put(lit('CLIENT_ERROR cannot increment or decrement non-numeric value\r\n'));
      if (r === false) return this.put(lit('SERVER_ERROR out of memory\r\n'));
      result = r;
    }
    const flags = this.metaArithFlags(buf, this.store.find(kBuf, s, kLen, hash), created, tExp, nExp);
    if (this.has('v')) {
      const text = result.toString();
      return this.putStr(`VA ${text.length}${flags}\r\n${text}\r\n`);
    }
    if (!this.has('q')) this.putStr(`HD${flags}\r\n`);
  }

  /** ma's reply flags (t c k O) in request order for the item `it` it left, applying T (and N on a created item) where they stand. */
  private metaArithFlags(buf: Uint8Array, it: number, created: boolean, tExp: number, nExp: number): string {
    const store = this.store;
    if (it === 0) return this.echo(buf, this.kEcho, 'kO'); // evicted at once (a tiny cache): nothing left to report on
    store.view(it, this.view);
    let exp = created ? 0 : store.expiryOf(it);
    let flags = '';
    for (let i = 2; i < this.ntok; i++) {
      const letter = String.fromCharCode(buf[this.tokStart[i]]);
      if (letter === 'T') exp = tExp;
      else if (letter === 'N' && created) exp = nExp;
      else if (letter === 't') flags += ` t${exp === 0 ? -1 : Math.max(0, exp - store.now)}`;
      else if (letter === 'c') flags += ` c${this.view.cas}`;
      else if (letter === 'k') flags += ` k${this.kEcho}`;
      else if (letter === 'O') flags += ` O${this.flagText(buf, 'O')}`;
    }
    if (exp !== store.expiryOf(it)) store.setExpiry(it, exp);
    return flags;
  }

  /**
   * me <key> [b]: memcached's debug line `ME key exp= la= cas= fetch= cls=
   * size=`, in memcached's terms: exp as 1.6.18 prints it (now - expiry, -1
   * without one), la = seconds since last access (as mg l), fetch = read
   * since stored (as mg h), size = memcached's item size for the key
   * and value, cls = the slab class of that size (the classes are
   * memcached's). EN on a miss. It does not count as a read.
   */
  private metaDebug(buf: Uint8Array): void {
    if (this.ntok < 2 || this.ntok > 3 || this.tokLen(1) > KEY_MAX_BYTES || (this.ntok === 3 && !this.tokIs(buf, 2, 'b'))) return this.put(R_BAD_FORMAT);
    this.mFlags.fill(-1);
    if (this.ntok === 3) this.mFlags['b'.charCodeAt(0) - 0x40] = 2;
    if (!this.metaKeyOf(buf)) return this.put(lit('CLIENT_ERROR error decoding key\r\n'));
    const { kBuf, kOff, kLen } = this;
    const store = this.store;
    const it = store.find(kBuf, kOff, kLen, hashKey(kBuf, kOff, kLen));
    if (it === 0) return this.put(lit('EN\r\n'));
    store.view(it, this.view);
    const v = this.view;
    const exp = store.expiryOf(it);
    const size = MEMCACHED_ITEM_HDR_BYTES + kLen + 1 + v.nbytes + 2 + (v.flags !== 0 ? MEMCACHED_FLAGS_BYTES : 0);
    const key = Buffer.from(kBuf.buffer, kBuf.byteOffset + kOff, kLen).toString('latin1');
    this.putStr(`ME ${key} exp=${exp === 0 ? -1 : store.now - exp} la=${Math.max(0, store.now - store.lastAccess(it))} cas=${v.cas} fetch=${store.fetchedBefore(it) ? 'yes' : 'no'} cls=${store.classFor(size) + 1} size=${size}\r\n`);
  }

  /** incr/decr of a visible item: the new number, null if the value is not a number, false on no memory. */
  private applyDelta(it: number, buf: Uint8Array, s: number, kLen: number, hash: number, incr: boolean, delta: bigint): bigint | null | false {
    this.store.view(it, this.view);
    const old = this.view.nbytes <= 20 ? this.numericValue(it, this.view.nbytes) : null;
    if (old === null) return null;
    const next = incr ? (old + delta) & 0xffffffffffffffffn : old > delta ? old - delta : 0n;
    const digits = Buffer.from(next.toString(), 'latin1');
    return this.store.replaceValue(it, buf, s, kLen, hash, digits, digits.length) ? next : false;
  }

  // --- delete, touch, incr/decr, flush_all ----------------------------------------------

  private del(buf: Uint8Array): void {
    const n = this.ntok + 1;
    if (n > 3) {
      const holdIsZero = this.tokIs(buf, 2, '0');
      const setsNoreply = this.noreplyMaybe(buf);
      const valid = (n === 4 && (holdIsZero || setsNoreply)) || (n === 5 && holdIsZero && setsNoreply);
      if (!valid) return this.reply(lit('CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]\r\n'));
    }
    const kLen = this.tokLen(1);
    if (kLen > KEY_MAX_BYTES) return this.reply(R_BAD_FORMAT);
    const s = this.tokStart[1];
    if (this.store.remove(buf, s, kLen, hashKey(buf, s, kLen))) {
      this.counters.deleteHits++;
      return this.reply(lit('DELETED\r\n'));
    }
    this.counters.deleteMisses++;
    this.reply(lit('NOT_FOUND\r\n'));
  }

  private touch(buf: Uint8Array): void {
    this.noreplyMaybe(buf);
    const kLen = this.tokLen(1);
    if (kLen > KEY_MAX_BYTES) return this.reply(R_BAD_FORMAT);
    const t = this.tokInt32(buf, 2);
    if (Number.isNaN(t)) return this.reply(lit('CLIENT_ERROR invalid exptime argument\r\n'));
    this.counters.cmdTouch++;
    const s = this.tokStart[1];
    const it = this.store.find(buf, s, kLen, hashKey(buf, s, kLen));
    if (it === 0) {
      this.counters.touchMisses++;
      return this.reply(lit('NOT_FOUND\r\n'));
    }
    this.counters.touchHits++;
    this.store.setExpiry(it, this.absExpiry(t));
    this.reply(lit('TOUCHED\r\n'));
  }

  /** incr/decr: 64-bit unsigned, incr wraps, decr stops at 0 (memcached's do_add_delta). Rare: BigInt is fine here. */
  private arith(buf: Uint8Array, incr: boolean): void {
    this.noreplyMaybe(buf);
    const kLen = this.tokLen(1);
    if (kLen > KEY_MAX_BYTES) return this.reply(R_BAD_FORMAT);
    const delta = parseU64(buf, this.tokStart[2], this.tokEnd[2]);
    if (delta === null) return this.reply(lit('CLIENT_ERROR invalid numeric delta argument\r\n'));
    const s = this.tokStart[1];
    const hash = hashKey(buf, s, kLen);
    const store = this.store;
    const it = store.find(buf, s, kLen, hash);
    if (it === 0) {
      if (incr) this.counters.incrMisses++;
      else this.counters.decrMisses++;
      return this.reply(lit('NOT_FOUND\r\n'));
    }
    const next = this.applyDelta(it, buf, s, kLen, hash, incr, delta);
    if (next === null) return this.reply(lit('CLIENT_ERROR cannot increment or decrement non-numeric value\r\n'));
    if (next === false) return this.reply(lit('SERVER_ERROR out of memory\r\n'));
    if (incr) this.counters.incrHits++;
    else this.counters.decrHits++;
    this.replyStr(next.toString());
  }

  /** The value as memcached's safe_strtoull reads it (leading spaces, digits, trailing spaces), or null. */
  private numericValue(it: number, nbytes: number): bigint | null {
    this.store.copyOut(this.store.valueVa(it), this.scratch, 0, nbytes);
    let s = 0;
    while (s < nbytes && this.scratch[s] === SP) s++;
    let e = s;
    while (e < nbytes && this.scratch[e] >= 48 && this.scratch[e] <= 57) e++;
    for (let k = e; k < nbytes; k++) if (this.scratch[k] !== SP) return null;
    return parseU64(this.scratch, s, e);
  }

  private flushAll(buf: Uint8Array): void {
    this.noreplyMaybe(buf);
    const n = this.ntok + 1;
    let delay = 0;
    if (n !== (this.noreply ? 3 : 2)) {
      delay = this.tokInt53(buf, 1);
      if (Number.isNaN(delay)) return this.reply(lit('CLIENT_ERROR invalid exptime argument\r\n'));
    }
    this.counters.cmdFlush++;
    this.store.flushAll(delay > REALTIME_MAXDELTA_SEC ? delay - this.store.now : delay);
    this.reply(lit('OK\r\n'));
  }

  // --- stats --------------------------------------------------------------------

  private stats(buf: Uint8Array): void {
    if (this.ntok === 1) return this.statLines(generalStats(this.store, this.counters, this.settings));
    if (this.tokIs(buf, 1, 'settings')) return this.statLines(settingsStats(this.settings, this.store));
    if (this.tokIs(buf, 1, 'items')) return this.statLines(itemsStats(this.store));
    if (this.tokIs(buf, 1, 'slabs')) return this.statLines(slabsStats(this.store));
    if (this.tokIs(buf, 1, 'reset')) {
      resetCounters(this.counters);
      return this.reply(lit('RESET\r\n'));
    }
    this.reply(R_ERROR);
  }

  private statLines(lines: [string, string | number][]): void {
    let s = '';
    for (const [k, v] of lines) s += `STAT ${k} ${v}\r\n`;
    this.putStr(s + 'END\r\n');
  }
}

const EMPTY = new Uint8Array(0);
/** memcached 1.6's item header with its CAS (64-bit build), and the client flags word it adds when they are not 0 (for `me`'s size). */
const MEMCACHED_ITEM_HDR_BYTES = 56;
const MEMCACHED_FLAGS_BYTES = 4;

export const EMPTY_INPUT = EMPTY;
const TWO_32 = 2 ** 32;
const U64_MAX_DIGITS = '18446744073709551615';

/** Is the 20-digit decimal at buf[s..] <= `max` (20 digits)? Lexicographic on equal lengths. */
function notAbove(buf: Uint8Array, s: number, max: string): boolean {
  for (let k = 0; k < max.length; k++) {
    const d = buf[s + k];
    const m = max.charCodeAt(k);
    if (d !== m) return d < m;
  }
  return true;
}

function startsWith(buf: Uint8Array, pos: number, end: number, s: string): boolean {
  if (end - pos < s.length) return false;
  for (let k = 0; k < s.length; k++) if (buf[pos + k] !== s.charCodeAt(k)) return false;
  return true;
}

/** An unsigned 64-bit decimal in buf[s, e), or null (empty, non-digit, or >= 2^64). */
function parseU64(buf: Uint8Array, s: number, e: number): bigint | null {
  if (e === s || e - s > 20) return null;
  for (let k = s; k < e; k++) if (buf[k] < 48 || buf[k] > 57) return null;
  const v = BigInt(Buffer.from(buf.buffer, buf.byteOffset + s, e - s).toString('latin1'));
  return v <= 0xffffffffffffffffn ? v : null;
}

function resetCounters(c: KvCounters): void {
  const fresh = new KvCounters();
  fresh.startedSec = c.startedSec;
  fresh.currConnections = c.currConnections;
  fresh.totalConnections = c.totalConnections;
  Object.assign(c, fresh);
}

function generalStats(store: KvStore, c: KvCounters, settings: KvSettings): [string, string | number][] {
  const s = store.stats();
  const now = nowSec();
  const usage = process.resourceUsage();
  return [
    ['pid', process.pid],
    ['uptime', now - c.startedSec],
    ['time', now],
    ['version', KV_VERSION],
    ['morsel_kv', 1],
    ['pointer_size', 64],
    ['rusage_user', (usage.userCPUTime / 1e6).toFixed(6)],
    ['rusage_system', (usage.systemCPUTime / 1e6).toFixed(6)],
    ['max_connections', settings.maxConnections],
    ['curr_connections', c.currConnections],
    ['total_connections', c.totalConnections],
    ['cmd_get', c.cmdGet],
    ['cmd_set', c.cmdSet],
    ['cmd_flush', c.cmdFlush],
    ['cmd_touch', c.cmdTouch],
    ['get_hits', c.getHits],
    ['get_misses', c.getMisses],
    ['get_expired', c.getExpired],
    ['delete_misses', c.deleteMisses],
    ['delete_hits', c.deleteHits],
    ['incr_misses', c.incrMisses],
    ['incr_hits', c.incrHits],
    ['decr_misses', c.decrMisses],
    ['decr_hits', c.decrHits],
    ['cas_misses', c.casMisses],
    ['cas_hits', c.casHits],
    ['cas_badval', c.casBadval],
    ['touch_hits', c.touchHits],
    ['touch_misses', c.touchMisses],
    ['bytes_read', c.bytesRead],
    ['bytes_written', c.bytesWritten],
    ['limit_maxbytes', s.limitMaxBytes],
    ['threads', 1],
    ['bytes', s.bytes],
    ['curr_items', s.currItems],
    ['total_items', s.totalItems],
    ['evictions', s.evictions],
    ['reclaimed', s.reclaimed],
  ];
}

function settingsStats(settings: KvSettings, store: KvStore): [string, string | number][] {
  const s = store.stats();
  return [
    ['maxbytes', s.limitMaxBytes],
    ['maxconns', settings.maxConnections],
    ['tcpport', settings.port],
    ['udpport', 0],
    ['inter', settings.listen],
    ['verbosity', settings.verbosity],
    ['evictions', 'on'],
    ['growth_factor', '1.25'],
    ['chunk_size', 48],
    ['num_threads', 1],
    ['cas_enabled', 'yes'],
    ['item_size_max', 1024 * 1024],
    ['hashpower_init', Math.ceil(Math.log2(s.buckets))],
    ['lru_policy', 'clock'],
  ];
}

function itemsStats(store: KvStore): [string, string | number][] {
  const s = store.stats();
  return [
    ['items:1:number', s.currItems],
    ['items:1:evicted', s.evictions],
    ['items:1:reclaimed', s.reclaimed],
  ];
}

function slabsStats(store: KvStore): [string, string | number][] {
  const s = store.stats();
  return [
    ['active_slabs', s.pagesUsed > 0 ? 1 : 0],
    ['total_malloced', s.pagesUsed * 1024 * 1024],
  ];
}
