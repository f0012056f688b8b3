/**
 * Shared by the kv tests: start `morsel kv` (or a real memcached) as a child
 * process on a free loopback port, and talk to it over raw sockets.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import * as net from 'node:net';
import { fileURLToPath } from 'node:url';
import { freePort } from '../bench/kv.js';

export const MORSEL_BIN = fileURLToPath(new URL('../../bin/morsel.js', import.meta.url));

/** The apt packages the kv tests use, and how to get them. */
export const KV_INSTALL = 'apt-get install -y memcached libmemcached-tools python3-pymemcache nutcracker (or scripts/install-system-deps.sh as root)';

export function hasCommand(cmd: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;
}

/** Creates a region file of `size` (e.g. '64MiB') with the CLI. */
export function initRegion(file: string, size: string): void {
  const r = spawnSync(process.execPath, [MORSEL_BIN, 'init', file, '--size', size], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`morsel init failed: ${r.stderr}`);
}

export interface Served {
  child: ChildProcess;
  port: number;
  /** the line the server printed when it started listening */
  banner: string;
  /** ms from spawn to the banner */
  startMs: number;
  stderr(): string;
  /** SIGTERM and wait for exit; resolves with the exit code */
  stop(): Promise<number | null>;
  kill9(): Promise<void>;
}

/** Spawns `morsel kv --region file --port 0 ...args` and waits for its banner (bounded). */
export function startKv(file: string, args: string[] = [], timeoutMs = 20_000): Promise<Served> {
  return startChild(process.execPath, [MORSEL_BIN, 'kv', '--region', file, '--port', '0', ...args], /listening on [\d.]+:(\d+)/, timeoutMs);
}

/** Spawns a real memcached on a free port (found by binding port 0 first). */
export async function startMemcached(args: string[] = []): Promise<Served> {
  const port = await freePort();
  const extra = process.getuid?.() === 0 ? ['-u', 'root'] : [];
  const s = await startChild('memcached', ['-l', '127.0.0.1', '-p', String(port), '-U', '0', ...extra, ...args], null, 5000);
  await waitForPort(port, 5000);
  s.port = port;
  return s;
}

/** Starts twemproxy (`nutcracker -c conf`) with its stats on `statsPort`, and waits until `port` (its listen port) accepts. */
export async function startNutcracker(conf: string, port: number, statsPort: number): Promise<Served> {
  const s = await startChild('nutcracker', ['-c', conf, '-s', String(statsPort), '-a', '127.0.0.1'], null, 5000);
  try {
    await waitForPort(port, 5000);
  } catch (e) {
    await s.kill9();
    throw new Error(`${(e as Error).message}; nutcracker: ${s.stderr()}`);
  }
  s.port = port;
  return s;
}

async function waitForPort(port: number, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect(port, '127.0.0.1', () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => resolve(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`nothing listens on ${port} after ${timeoutMs} ms`);
}

function startChild(cmd: string, args: string[], banner: RegExp | null, timeoutMs: number): Promise<Served> {
  const t0 = performance.now();
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const served = (port: number, line: string): Served => ({
    child,
    port,
    banner: line,
    startMs: performance.now() - t0,
    stderr: () => err,
    stop: () => {
      child.kill('SIGTERM');
      return exited;
    },
    kill9: async () => {
      child.kill('SIGKILL');
      await exited;
    },
  });
  if (banner === null) return Promise.resolve(served(0, ''));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`no banner after ${timeoutMs} ms; stderr: ${err}`));
    }, timeoutMs);
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const m = banner.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve(served(Number(m[1]), out.trim()));
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`server exited (${code}) before listening: ${err}`));
    });
  });
}

/** A raw connection: send bytes, collect replies until a predicate says they are complete. */
export class RawClient {
  private buf = Buffer.alloc(0);
  private waiter: (() => void) | null = null;
  closed = false;

  private constructor(private readonly socket: net.Socket) {
    socket.on('data', (d: Buffer) => {
      this.buf = Buffer.concat([this.buf, d]);
      this.waiter?.();
    });
    socket.on('close', () => {
      this.closed = true;
      this.waiter?.();
    });
    socket.on('error', () => {});
  }

  static connect(port: number): Promise<RawClient> {
    return new Promise((resolve, reject) => {
      const s = net.connect(port, '127.0.0.1', () => resolve(new RawClient(s)));
      s.once('error', reject);
    });
  }

  send(data: string | Uint8Array): void {
    this.socket.write(typeof data === 'string' ? Buffer.from(data, 'latin1') : data);
  }

  /** Waits until `done(received)` (or the peer closes, or timeoutMs), then returns and consumes everything received. */
  async until(done: (b: Buffer) => boolean, timeoutMs = 5000): Promise<Buffer> {
    const deadline = Date.now() + timeoutMs;
    while (!done(this.buf) && !this.closed && Date.now() < deadline) {
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, Math.max(1, deadline - Date.now()));
        this.waiter = () => {
          clearTimeout(t);
          resolve();
        };
      });
      this.waiter = null;
    }
    const out = this.buf;
    this.buf = Buffer.alloc(0);
    return out;
  }

  /** Sends `data` and collects for `quietMs` after the last byte (for replies of unknown shape). */
  async exchange(data: string | Uint8Array, quietMs = 150): Promise<Buffer> {
    this.send(data);
    let last = -1;
    for (let rounds = 0; rounds < 200; rounds++) {
      await new Promise((r) => setTimeout(r, quietMs));
      if (this.buf.length === last || this.closed) break;
      last = this.buf.length;
    }
    return this.until(() => true, 0);
  }

  close(): void {
    this.socket.destroy();
  }
}

/** One request/one-line-reply round trip (set/delete/incr...). */
export async function oneLine(c: RawClient, data: string | Uint8Array): Promise<string> {
  c.send(data);
  return (await c.until((b) => b.includes('\r\n'))).toString('latin1');
}

/** Parses a get reply into key -> value (latin1); null if it is not a well-formed get reply. */
export function parseGet(reply: Buffer): Map<string, string> | null {
  const items = new Map<string, string>();
  let pos = 0;
  for (let guard = 0; guard < 1_000_000; guard++) {
    const nl = reply.indexOf('\r\n', pos);
    if (nl < 0) return null;
    const line = reply.toString('latin1', pos, nl);
    if (line === 'END') return nl + 2 === reply.length ? items : null;
    const m = /^VALUE (\S+) (\d+) (\d+)( \d+)?$/.exec(line);
    if (!m) return null;
    const n = Number(m[3]);
    const start = nl + 2;
    if (reply.toString('latin1', start + n, start + n + 2) !== '\r\n') return null;
    items.set(m[1], reply.toString('latin1', start, start + n));
    pos = start + n + 2;
  }
  return null;
}

export const endsGet = (b: Buffer): boolean => b.length >= 5 && b.toString('latin1', b.length - 5) === 'END\r\n';

/** A deterministic pseudo-random generator (xorshift32), so a failure names its seed. */
export function rng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 2 ** 32;
  };
}

/** The value of version `ver` of `key`: self-describing, so a torn value cannot pass for another. */
export function valueOf(key: string, ver: number, len: number): string {
  const head = `${key}:${ver}:`;
  const fill = String.fromCharCode(97 + (ver % 26));
  return (head + fill.repeat(Math.max(0, len - head.length))).slice(0, Math.max(len, head.length));
}
