/**
 * `morsel web`: an HTTP server (node:http, no framework) that shows a region
 * in a browser while other processes work on it. The region is opened
 * read-only (PROT_READ mapping, no user slot, never recovered, never
 * written: src/memory.ts), so the server cannot change what it shows.
 *
 *   GET /                  the page (src/web/static, inlined: one request)
 *   GET /api/region        size, frames, allocator counters, live users
 *   GET /api/names         the namespace tree with each morsel's pages and users
 *   GET /api/morsel        one page table of one morsel (?name=/p | ?handle=0x…@g,
 *                          &path=i,j… indices from the root, &bits=1 decodes entries)
 *   GET /api/frames        the frame map by 2 MiB block
 *   GET /api/events        server-sent events: the change summary, at most
 *                          1000/EVENT_INTERVAL_MS per second, only when it changed
 *   GET /report/…          the evaluation report (bench/report.ts) when it exists
 *
 * Safe by default: it listens on loopback and then answers only requests
 * whose Host is a loopback name (no DNS rebinding); on any other address a
 * random token (printed at start) is required on every request, as
 * ?token= or the X-Morsel-Token header. Errors are JSON
 * {error:{code,message}} with an HTTP status per code. Bounded: requests
 * (URL length, no bodies), answers (src/web/inspect.ts), SSE clients, and
 * the CPU of the expensive views (recomputed only when the region changed,
 * at most once per COST_FACTOR times their last cost).
 */
import { randomBytes, timingSafeEqual } from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';
import { isIP } from 'node:net';
import * as path from 'node:path';
import { MorselError, check } from '../errors.js';
import { Memory } from '../memory.js';
import { changeSummary, frameMap, morselTable, namesTree, regionInfo } from './inspect.js';

export interface WebOptions {
  regionPath: string;
  /** 0: any free port. Default 8080. */
  port?: number;
  /** address to listen on, default 127.0.0.1; anything but loopback requires the token */
  listen?: string;
  /** where bench writes its report (index.html, results.json); default ./report */
  reportDir?: string;
}

export interface WebServer {
  /** the page's URL (with ?token= when one is required) */
  url: string;
  /** the access token, null on loopback */
  token: string | null;
  port: number;
  memory: Memory;
  /** Ends every event stream, stops listening and closes the region. */
  close(): Promise<void>;
}

/** Longest request target accepted (414 beyond). */
export const MAX_URL_BYTES = 4096;
/** Event streams open at once (503 beyond). */
export const MAX_SSE_CLIENTS = 8;
/** Least time between two change summaries (at most 4 events per second). */
export const EVENT_INTERVAL_MS = 250;
/** An expensive view is recomputed at most once per COST_FACTOR times its last cost: at most 1/COST_FACTOR of a core. */
const COST_FACTOR = 10;
/** A comment on idle event streams, so proxies and browsers keep them. */
const HEARTBEAT_MS = 15_000;
/** An event stream whose client does not read this much is dropped. */
const MAX_SSE_BACKLOG_BYTES = 1 << 20;
const TOKEN_BYTES = 16;
const DEFAULT_PORT = 8080;
const LOOPBACK_HOSTS = new Set(['localhost', '127.0.0.1', '[::1]', '::1']);
const REPORT_FILES: Record<string, { file: string; type: string }> = {
  '/report/': { file: 'index.html', type: 'text/html; charset=utf-8' },
  '/report/index.html': { file: 'index.html', type: 'text/html; charset=utf-8' },
  '/report/results.json': { file: 'results.json', type: 'application/json' },
};

/** HTTP status of each error code the API gives. */
const STATUS_BY_CODE: Record<string, number> = {
  EINVAL: 400, ERANGE: 400, EMISALIGNED: 400, ENOTDIR: 400, EISDIR: 400, ENAMETOOLONG: 400,
  EACCES: 403, EPERM: 403, ENOENT: 404, ESTALE: 410, EBUSY: 503,
};

/** An error with its HTTP status (the few statuses that are not one code's). */
class HttpError extends MorselError {
  constructor(readonly status: number, code: MorselError['code'], message: string) {
    super(code, message);
  }
}

/** Whether `host` (an address or name) is loopback. */
export function isLoopback(host: string): boolean {
  if (LOOPBACK_HOSTS.has(host)) return true;
  return isIP(host) === 4 && host.startsWith('127.');
}

/** The host name of a Host header ('' when there is none or it does not parse). */
function hostnameOf(header: string | undefined): string {
  try {
    return new URL(`http://${header ?? ''}`).hostname;
  } catch {
    return '';
  }
}

/**
 * A value computed by `compute` at most once per max(minIntervalMs,
 * COST_FACTOR × its last cost), and again only when `key` (what the region
 * looked like) changed. Between, the last value is served with `retryMs`.
 */
class Throttled<T> {
  private value: T | null = null;
  private key = '';
  private atMs = 0;
  private costMs = 0;

  constructor(
    private readonly compute: () => T,
    private readonly minIntervalMs: number,
  ) {}

  get(key: string): { value: T; current: boolean; retryMs: number } {
    const now = performance.now();
    const waitMs = Math.max(this.minIntervalMs, COST_FACTOR * this.costMs) - (now - this.atMs);
    if (this.value !== null && (key === this.key || waitMs > 0)) {
      const current = key === this.key;
      return { value: this.value, current, retryMs: current ? 0 : Math.ceil(waitMs) };
    }
    const value = this.compute();
    this.atMs = performance.now();
    this.costMs = this.atMs - now;
    this.value = value;
    this.key = key;
    return { value, current: true, retryMs: 0 };
  }
}

/** The page: index.html with style.css and app.js inlined (every request needs the token, sub-resources too). */
function loadPage(): string {
  const dir = new URL('../../../src/web/static/', import.meta.url);
  const read = (name: string): string => fs.readFileSync(new URL(name, dir), 'utf8');
  return read('index.html').replace('/*STYLE*/', () => read('style.css')).replace('/*SCRIPT*/', () => read('app.js'));
}

/** Starts the server (resolves once it listens). The caller closes it. */
export async function startWeb(opts: WebOptions): Promise<WebServer> {
  const listen = opts.listen ?? '127.0.0.1';
  const port = opts.port ?? DEFAULT_PORT;
  check(Number.isInteger(port) && port >= 0 && port < 65536, 'EINVAL', () => `port must be 0..65535, got ${port}`);
  const token = isLoopback(listen) ? null : randomBytes(TOKEN_BYTES).toString('hex');
  const page = loadPage();
  const memory = Memory.open(opts.regionPath, { mode: 'readonly' });
  const app = new WebApp(memory, token, page, path.resolve(opts.reportDir ?? 'report'));
  const server = http.createServer({ maxHeaderSize: 16 * 1024 }, (req, res) => app.handle(req, res));
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, listen, () => resolve());
    });
  } catch (e) {
    memory.close();
    throw new MorselError('EBUSY', `cannot listen on ${listen}:${port}: ${(e as Error).message}`, { cause: e });
  }
  const bound = (server.address() as { port: number }).port;
  const host = listen.includes(':') ? `[${listen}]` : listen;
  const url = `http://${host}:${bound}/${token === null ? '' : `?token=${token}`}`;
  let closed: Promise<void> | null = null;
  return {
    url,
    token,
    port: bound,
    memory,
    close: () =>
      (closed ??= new Promise<void>((resolve) => {
        app.stop();
        server.close(() => {
          memory.close();
          resolve();
        });
        server.closeAllConnections();
      })),
  };
}

/** One SSE client. */
interface Stream {
  res: http.ServerResponse;
}

/** Routing, access and the shared state of one server. */
class WebApp {
  private readonly streams = new Set<Stream>();
  private readonly names: Throttled<unknown>;
  private readonly frames: Throttled<unknown>;
  private summary: { text: string; atMs: number; costMs: number } = { text: '', atMs: -Infinity, costMs: 0 };
  private eventId = 0;
  private ticker: NodeJS.Timeout | null = null;
  private heartbeat: NodeJS.Timeout | null = null;
  private stopped = false;

  constructor(
    private readonly memory: Memory,
    private readonly token: string | null,
    private readonly page: string,
    private readonly reportDir: string,
  ) {
    this.names = new Throttled(() => namesTree(memory, { deep: true }), EVENT_INTERVAL_MS);
    this.frames = new Throttled(() => frameMap(memory), EVENT_INTERVAL_MS);
  }

  handle(req: http.IncomingMessage, res: http.ServerResponse): void {
    try {
      this.route(req, res);
    } catch (e) {
      this.fail(res, e);
    }
  }

  private route(req: http.IncomingMessage, res: http.ServerResponse): void {
    const target = req.url ?? '/';
    if (Buffer.byteLength(target) > MAX_URL_BYTES) throw new HttpError(414, 'ERANGE', `request target longer than ${MAX_URL_BYTES} bytes`);
    if (req.method !== 'GET' && req.method !== 'HEAD') throw new HttpError(405, 'EINVAL', `method ${req.method} not allowed: this server only reads`);
    const length = Number(req.headers['content-length'] ?? 0);
    if (length > 0 || req.headers['transfer-encoding'] !== undefined) throw new HttpError(413, 'ERANGE', 'requests carry no body here');
    const url = new URL(target, 'http://localhost');
    this.authorize(req, url);
    const query = new Query(url.searchParams);
    switch (url.pathname) {
      case '/':
        query.done();
        return this.send(res, 200, 'text/html; charset=utf-8', this.page);
      case '/favicon.ico':
        return this.send(res, 204, 'image/x-icon', '');
      case '/api/region':
        query.done();
        return this.json(res, { ...regionInfo(this.memory), report: this.reportExists() ? '/report/' : null });
      case '/api/names':
        query.done();
        return this.json(res, this.throttled(this.names));
      case '/api/frames':
        query.done();
        return this.json(res, this.throttled(this.frames));
      case '/api/morsel':
        return this.json(res, this.morsel(query));
      case '/api/events':
        query.done();
        return this.openStream(req, res);
      default:
        if (url.pathname in REPORT_FILES) {
          query.done();
          return this.report(res, REPORT_FILES[url.pathname]);
        }
        throw new HttpError(404, 'ENOENT', `no such page or API: ${url.pathname}`);
    }
  }

  /** Loopback: the Host must be a loopback name. Otherwise: the token, in the query or a header. */
  private authorize(req: http.IncomingMessage, url: URL): void {
    if (this.token === null) {
      if (!isLoopback(hostnameOf(req.headers.host))) throw new HttpError(403, 'EACCES', `Host ${JSON.stringify(req.headers.host)} is not a loopback name`);
      return;
    }
    const given = url.searchParams.get('token') ?? req.headers['x-morsel-token'];
    const ok = typeof given === 'string' && given.length === this.token.length && timingSafeEqual(Buffer.from(given), Buffer.from(this.token));
    if (!ok) throw new HttpError(401, 'EACCES', 'missing or wrong access token (printed when the server started): add ?token=… or the X-Morsel-Token header');
  }

  private morsel(query: Query): unknown {
    const name = query.take('name', /^\/.{0,4094}$/s, 'an absolute path');
    const handle = query.take('handle', /^0x[0-9a-fA-F]{1,16}@\d{1,10}$/, 'a handle 0x…@generation');
    const pathText = query.take('path', /^(\d{1,3}(,\d{1,3}){0,3})?$/, 'table indices like 3,17');
    const bits = query.take('bits', /^[01]$/, '0 or 1');
    query.done();
    const indices = pathText ? pathText.split(',').map(Number) : [];
    return morselTable(this.memory, { name, handle, path: indices, bits: bits === '1' });
  }

  /** A throttled view keyed by the change summary, with whether it is current and when to ask again. */
  private throttled(view: Throttled<unknown>): unknown {
    const { value, current, retryMs } = view.get(this.summaryText());
    return { ...(value as object), current, retryMs };
  }

  /** The change summary, recomputed at most once per EVENT_INTERVAL_MS (or COST_FACTOR × its cost). */
  private summaryText(): string {
    const now = performance.now();
    if (now - this.summary.atMs >= Math.max(EVENT_INTERVAL_MS, COST_FACTOR * this.summary.costMs)) {
      const text = JSON.stringify(changeSummary(this.memory));
      const done = performance.now();
      this.summary = { text, atMs: done, costMs: done - now };
    }
    return this.summary.text;
  }

  // --- server-sent events ------------------------------------------------------------------

  private openStream(req: http.IncomingMessage, res: http.ServerResponse): void {
    if (this.streams.size >= MAX_SSE_CLIENTS) throw new HttpError(503, 'EBUSY', `${MAX_SSE_CLIENTS} event streams are open already`);
    res.writeHead(200, { 'Content-Type': 'text/event-stream', 'Cache-Control': 'no-store', Connection: 'keep-alive', 'X-Content-Type-Options': 'nosniff' });
    const stream: Stream = { res };
    this.streams.add(stream);
    req.on('close', () => this.dropStream(stream));
    this.write(stream, `retry: 1000\nid: ${this.eventId}\nevent: summary\ndata: ${this.summaryText()}\n\n`);
    this.ticker ??= setTimeout(() => this.tick(), EVENT_INTERVAL_MS);
    this.heartbeat ??= setInterval(() => this.broadcast(': heartbeat\n\n'), HEARTBEAT_MS);
  }

  /** Forgets a closed stream; the last one stops the heartbeat (the ticker stops by itself). */
  private dropStream(s: Stream): void {
    this.streams.delete(s);
    if (this.streams.size === 0 && this.heartbeat !== null) {
      clearInterval(this.heartbeat);
      this.heartbeat = null;
    }
  }

  /** One round: sends the summary to every stream if it changed, then schedules the next round while any stream is open. */
  private tick(): void {
    this.ticker = null;
    if (this.stopped || this.streams.size === 0) return;
    const before = this.summary.text;
    let text: string;
    try {
      text = this.summaryText();
    } catch (e) {
      const err = e instanceof MorselError ? e : new MorselError('EINTERNAL', String(e));
      text = before;
      this.broadcast(`event: failure\ndata: ${JSON.stringify({ error: { code: err.code, message: err.message } })}\n\n`);
    }
    if (text !== before) this.broadcast(`id: ${++this.eventId}\nevent: summary\ndata: ${text}\n\n`);
    this.ticker = setTimeout(() => this.tick(), Math.max(EVENT_INTERVAL_MS, COST_FACTOR * this.summary.costMs));
  }

  private broadcast(chunk: string): void {
    for (const s of this.streams) this.write(s, chunk);
  }

  /** Writes to one stream; a client that stopped reading is dropped. */
  private write(s: Stream, chunk: string): void {
    if (s.res.writableLength > MAX_SSE_BACKLOG_BYTES) {
      this.dropStream(s);
      s.res.destroy();
      return;
    }
    s.res.write(chunk);
  }

  stop(): void {
    this.stopped = true;
    if (this.ticker !== null) clearTimeout(this.ticker);
    if (this.heartbeat !== null) clearInterval(this.heartbeat);
    for (const s of this.streams) s.res.end();
    this.streams.clear();
  }

  // --- report ------------------------------------------------------------------------

  private reportExists(): boolean {
    return fs.existsSync(path.join(this.reportDir, 'index.html'));
  }

  /** One of the report's two files, read-only, as bench wrote it. */
  private report(res: http.ServerResponse, f: { file: string; type: string }): void {
    let body: Buffer;
    try {
      body = fs.readFileSync(path.join(this.reportDir, f.file));
    } catch {
      throw new HttpError(404, 'ENOENT', `no evaluation report in ${this.reportDir} (npm run bench writes one)`);
    }
    this.send(res, 200, f.type, body);
  }

  // --- answers -----------------------------------------------------------------------

  private json(res: http.ServerResponse, body: unknown): void {
    this.send(res, 200, 'application/json', JSON.stringify(body));
  }

  private send(res: http.ServerResponse, status: number, type: string, body: string | Buffer): void {
    res.writeHead(status, { 'Content-Type': type, 'Cache-Control': 'no-store', 'X-Content-Type-Options': 'nosniff', 'Content-Security-Policy': "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'" });
    res.end(body);
  }

  /** Any failure as {error:{code,message}} with its status; a non-MorselError is a bug (EINTERNAL, logged). */
  private fail(res: http.ServerResponse, e: unknown): void {
    let status = 500;
    let code = 'EINTERNAL';
    let message = 'internal error in morsel web (see the server log)';
    if (e instanceof HttpError) [status, code, message] = [e.status, e.code, e.message];
    else if (e instanceof MorselError) [status, code, message] = [STATUS_BY_CODE[e.code] ?? 500, e.code, e.message];
    else process.stderr.write(`morsel web: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
    if (res.headersSent) {
      res.destroy();
      return;
    }
    this.send(res, status, 'application/json', JSON.stringify({ error: { code, message } }));
  }
}

/** Query parameters, each taken at most once and checked against a pattern; anything left over is EINVAL. */
class Query {
  private readonly seen = new Set<string>(['token']);

  constructor(private readonly params: URLSearchParams) {}

  take(name: string, pattern: RegExp, what: string): string | undefined {
    const all = this.params.getAll(name);
    this.seen.add(name);
    if (all.length === 0) return undefined;
    check(all.length === 1, 'EINVAL', () => `parameter ${name} given ${all.length} times`);
    check(pattern.test(all[0]), 'EINVAL', () => `parameter ${name} must be ${what}, got ${JSON.stringify(all[0].slice(0, 80))}`);
    return all[0];
  }

  done(): void {
    for (const key of this.params.keys()) check(this.seen.has(key), 'EINVAL', () => `unknown parameter ${JSON.stringify(key.slice(0, 80))}`);
  }
}
