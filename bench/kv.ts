/**
 * `morsel kv` against the real memcached (1 thread each: `--workers 1`
 * vs `memcached -t 1`), driven by the same load generator in this process:
 * C connections, each with D pipelined requests in flight, for a fixed
 * time, over K preloaded keys. Get-heavy (90% get) and set-heavy (90% set)
 * mixes at several value sizes: throughput and p50/p99 latency.
 * Restart-to-first-hit with N items: ours after SIGKILL, memcached -e after
 * a graceful shutdown (SIGUSR1), and memcached cold (it answers at once,
 * but misses: plus the time to re-warm N items).
 * Needs memcached (scripts/install-system-deps.sh); without it, only ours runs.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { claim, ticker, variant, type RunOptions } from './measure.js';
import type { ExperimentResult, VariantResult } from './stats.js';

const BIN = fileURLToPath(new URL('../../bin/morsel.js', import.meta.url));
const KEY_COUNT = 10_000;
const CONNECTIONS = 4;
const DEPTH = 16;
/** The issue's goals: >= 50% of memcached's throughput; warm restart after SIGKILL <= 100 ms at 1M items. */
const THROUGHPUT_GOAL = 0.5;
const RESTART_GOAL_MS = 100;

export interface KvParams {
  durationMs: number;
  valueSizes: number[];
  restartItems: number;
}

export function kvParams(quick: boolean): KvParams {
  return quick ? { durationMs: 1500, valueSizes: [32, 4096], restartItems: 100_000 } : { durationMs: 5000, valueSizes: [32, 1024, 16384], restartItems: 1_000_000 };
}

interface Server {
  child: ChildProcess;
  port: number;
  exited: Promise<void>;
}

/** A loopback port nobody listens on now (the tests use it too). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as net.AddressInfo).port;
      srv.close(() => resolve(port));
    });
  });
}

/** Spawns a server and resolves once `port` accepts a connection (bounded). */
/**
 * The servers' environment: ours without NODE_EXTRA_CA_CERTS, which makes
 * every Node start read and parse that CA bundle (set in some sandboxes and
 * CI images: `node -e 0` took 73 ms with it and 34 ms without on the
 * development machine); a cache server needs no extra CAs.
 */
const SERVER_ENV: NodeJS.ProcessEnv = Object.fromEntries(Object.entries(process.env).filter(([k]) => k !== 'NODE_EXTRA_CA_CERTS'));

async function spawnServer(cmd: string, args: string[], port: number): Promise<Server> {
  const child = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'], env: SERVER_ENV });
  let err = '';
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  for (let i = 0; i < 2000; i++) {
    if (child.exitCode !== null) throw new Error(`${cmd} exited: ${err}`);
    if (await canConnect(port)) return { child, port, exited };
    await new Promise((r) => setTimeout(r, 2));
  }
  child.kill('SIGKILL');
  throw new Error(`${cmd} did not listen on ${port}: ${err}`);
}

function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

async function stopServer(s: Server, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  s.child.kill(signal);
  await s.exited;
}

function startOurs(region: string, memMiB: number, port: number, workers = 1): Promise<Server> {
  return spawnServer(process.execPath, [BIN, 'kv', '--region', region, '--port', String(port), '-m', String(memMiB), '--workers', String(workers)], port);
}

/** memcached with `threads` worker threads (-t): the same worker count as ours. */
function startMemcached(memMiB: number, port: number, extra: string[] = [], threads = 1): Promise<Server> {
  const user = process.getuid?.() === 0 ? ['-u', 'root'] : [];
  return spawnServer('memcached', ['-l', '127.0.0.1', '-p', String(port), '-U', '0', '-t', String(threads), '-m', String(memMiB), ...user, ...extra], port);
}

/** Throughput runs: every value size and mix with one worker, and the first size again with MULTI_WORKERS on each side. */
const MULTI_WORKERS = 2;
function throughputRuns(valueSizes: number[]): { size: number; mix: 'get-heavy' | 'set-heavy'; getRatio: number; workers: number }[] {
  const mixes = [['get-heavy', 0.9], ['set-heavy', 0.1]] as const;
  const runs = valueSizes.flatMap((size) => mixes.map(([mix, getRatio]) => ({ size, mix, getRatio, workers: 1 })));
  return [...runs, ...mixes.map(([mix, getRatio]) => ({ size: valueSizes[0], mix, getRatio, workers: MULTI_WORKERS }))];
}

/**
 * One pipelined connection: counts replies by their last line (END or
 * STORED; values are all 'x', so no value line can look like one) and
 * records each request's latency.
 */
class LoadConn {
  private readonly sentAt = new Float64Array(DEPTH);
  private head = 0;
  private inFlight = 0;
  private lineLen = 0;
  private lineHead = '';
  done = 0;
  readonly latNs: number[] = [];
  private stopAt = 0;
  private finish: () => void = () => {};

  constructor(
    private readonly socket: net.Socket,
    private readonly request: () => Buffer,
  ) {
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
  }

  run(durationMs: number): Promise<void> {
    this.stopAt = performance.now() + durationMs;
    return new Promise((resolve) => {
      this.finish = resolve;
      for (let i = 0; i < DEPTH; i++) this.send();
    });
  }

  private send(): void {
    this.sentAt[(this.head + this.inFlight) % DEPTH] = performance.now();
    this.inFlight++;
    this.socket.write(this.request());
  }

  private onData(chunk: Buffer): void {
    let pos = 0;
    for (;;) {
      const nl = chunk.indexOf(10, pos);
      const end = nl < 0 ? chunk.length : nl;
      if (this.lineHead.length < 7) this.lineHead += chunk.toString('latin1', pos, Math.min(end, pos + 7 - this.lineHead.length));
      this.lineLen += end - pos;
      if (nl < 0) return;
      if ((this.lineLen === 4 && this.lineHead === 'END\r') || (this.lineLen === 7 && this.lineHead === 'STORED\r')) this.complete();
      this.lineLen = 0;
      this.lineHead = '';
      pos = nl + 1;
    }
  }

  private complete(): void {
    const now = performance.now();
    this.latNs.push((now - this.sentAt[this.head]) * 1e6);
    this.head = (this.head + 1) % DEPTH;
    this.inFlight--;
    this.done++;
    if (now < this.stopAt) this.send();
    else if (this.inFlight === 0) this.finish();
  }
}

function connect(port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1', () => resolve(s));
    s.setNoDelay(true);
    s.once('error', reject);
  });
}

/** Sets keys [0, n) to `size`-byte values over one pipelined connection (batches of 100). */
async function preload(port: number, n: number, size: number): Promise<void> {
  const s = await connect(port);
  const value = 'x'.repeat(size);
  let acked = 0;
  let pending = '';
  await new Promise<void>((resolve, reject) => {
    s.on('data', (d: Buffer) => {
      pending += d.toString('latin1');
      const lines = pending.split('\r\n');
      pending = lines.pop()!;
      for (const l of lines) if (l !== 'STORED') reject(new Error(`preload: ${l}`));
      acked += lines.length;
      if (acked === n) resolve();
      else if (acked % 100 === 0 && acked < n) sendBatch(acked);
    });
    const sendBatch = (from: number): void => {
      let batch = '';
      for (let i = from; i < Math.min(n, from + 100); i++) batch += `set key:${i} 0 0 ${size}\r\n${value}\r\n`;
      s.write(batch);
    };
    sendBatch(0);
  });
  s.destroy();
}

/** Runs one mix for `durationMs` and returns ops/s and latency samples. */
async function drive(port: number, getRatio: number, size: number, durationMs: number): Promise<{ opsPerS: number; latNs: number[] }> {
  const setValue = 'x'.repeat(size);
  let seed = 12345;
  const rand = (): number => {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
    return seed / 2 ** 32;
  };
  const request = (): Buffer => {
    const key = `key:${Math.floor(rand() * KEY_COUNT)}`;
    return Buffer.from(rand() < getRatio ? `get ${key}\r\n` : `set ${key} 0 0 ${size}\r\n${setValue}\r\n`, 'latin1');
  };
  const conns = await Promise.all(Array.from({ length: CONNECTIONS }, async () => new LoadConn(await connect(port), request)));
  const t0 = performance.now();
  await Promise.all(conns.map((c) => c.run(durationMs)));
  const seconds = (performance.now() - t0) / 1000;
  const latNs = conns.flatMap((c) => c.latNs);
  return { opsPerS: conns.reduce((a, c) => a + c.done, 0) / seconds, latNs };
}

/** ms from spawn until a get of `key` returns a value (a hit), bounded. */
async function timeToFirstHit(start: () => Promise<Server>, port: number, key: string): Promise<{ ms: number; server: Server }> {
  const t0 = performance.now();
  const server = await start();
  const reply = await getOnce(port, key);
  return { ms: reply.startsWith('VALUE') ? performance.now() - t0 : NaN, server }; // NaN: it answers, but the cache is empty
}

/** Take-overs measured per item count with --standby (median reported). */
const TAKEOVERS = 3;

/**
 * `morsel kv --standby` with `items` items: SIGKILL of the serving worker,
 * then ms until a get of the last key hits (connections are refused while
 * no worker listens: retried every ms), TAKEOVERS times; the killed worker's
 * spare serves the next round once the primary reports a new spare ready.
 */
async function standbyTakeovers(region: string, memMiB: number, port: number, items: number): Promise<number[]> {
  const child = spawn(process.execPath, [BIN, 'kv', '--standby', '-v', '--region', region, '--port', String(port), '-m', String(memMiB)], { stdio: ['ignore', 'pipe', 'pipe'], env: SERVER_ENV });
  let out = '';
  let err = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  const until = async (what: string, ok: () => boolean): Promise<void> => {
    for (let i = 0; i < 5000 && !ok(); i++) {
      if (child.exitCode !== null) throw new Error(`morsel kv --standby exited waiting for ${what}: ${err}`);
      await new Promise((r) => setTimeout(r, 2));
    }
    if (!ok()) throw new Error(`morsel kv --standby: no ${what} within 10 s: ${err.slice(-500)}`);
  };
  const readies = (): number => (err.match(/standby \d+ ready/g) ?? []).length;
  try {
    await until('banner', () => /pids (\d+)/.test(out));
    await preload(port, items, 32);
    let worker = Number(/pids (\d+)/.exec(out)![1]);
    const ms: number[] = [];
    for (let round = 0; round < TAKEOVERS; round++) {
      await until('a ready standby', () => readies() > round);
      const t0 = performance.now();
      process.kill(worker, 'SIGKILL');
      for (;;) {
        const reply = await getOnce(port, `key:${items - 1}`);
        if (reply.startsWith('VALUE')) break;
        if (reply !== '' || performance.now() - t0 > 10_000) throw new Error(`take-over ${round}: ${JSON.stringify(reply.slice(0, 80))} ${err.slice(-500)}`);
        await new Promise((r) => setTimeout(r, 1));
      }
      ms.push(performance.now() - t0);
      const next = [...err.matchAll(/standby (\d+) takes over/g)];
      worker = Number(next[next.length - 1][1]);
    }
    return ms;
  } finally {
    child.kill('SIGTERM');
    if (child.exitCode === null) await new Promise((r) => child.once('exit', r));
  }
}

/** One connection, one get: the reply ('' when the connection is refused or closed first). */
function getOnce(port: number, key: string): Promise<string> {
  return new Promise((resolve) => {
    let got = '';
    const s = net.connect(port, '127.0.0.1', () => s.write(`get ${key}\r\n`));
    s.on('data', (d: Buffer) => {
      got += d.toString('latin1');
      if (got.endsWith('END\r\n')) {
        s.destroy();
        resolve(got);
      }
    });
    s.once('error', () => resolve(''));
    s.once('close', () => resolve(got));
  });
}

function initRegion(file: string, sizeMiB: number): void {
  const r = spawnSync(process.execPath, [BIN, 'init', file, '--size', `${sizeMiB}MiB`], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`morsel init: ${r.stderr}`);
}

export async function runKv(opts: RunOptions & { params?: KvParams }): Promise<ExperimentResult> {
  const p = opts.params ?? kvParams(opts.quick);
  const haveMemcached = spawnSync('sh', ['-c', 'command -v memcached'], { stdio: 'ignore' }).status === 0;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'morsel-kv-bench-'));
  const results: VariantResult[] = [];
  const claims = [];
  const notes: string[] = [`${CONNECTIONS} connections x ${DEPTH} pipelined requests, ${KEY_COUNT} keys, ${p.durationMs} ms per run, one load generator (this process) for both servers`];
  const runs = throughputRuns(p.valueSizes);
  const tick = ticker(runs.length + 3, opts.progress);
  try {
    const throughput: Record<string, number> = {};
    const threadsOf: Record<string, number> = {};
    for (const { size, mix, getRatio, workers } of runs) {
      for (const kind of haveMemcached ? ['morsel kv', 'memcached'] : ['morsel kv']) {
        const port = await freePort();
        const memMiB = 64;
        let server: Server;
        if (kind === 'morsel kv') {
          const region = path.join(dir, `t-${size}-${mix}-${workers}.region`);
          initRegion(region, 160);
          server = await startOurs(region, memMiB, port, workers);
        } else {
          server = await startMemcached(memMiB, port, [], workers);
        }
        try {
          await preload(port, KEY_COUNT, size);
          const r = await drive(port, getRatio, size, p.durationMs);
          const name = `${kind}${workers > 1 ? ` x${workers}` : ''} ${mix} ${size} B`;
          threadsOf[name] = workers;
          throughput[name] = r.opsPerS;
          results.push(variant(name, 'ops_per_s', [r.opsPerS], size));
          results.push(variant(name, 'latency_ns', r.latNs, size));
        } finally {
          await stopServer(server);
        }
      }
      tick();
    }
    if (haveMemcached) {
      for (const name of Object.keys(throughput).filter((n) => n.startsWith('morsel kv'))) {
        const ratio = throughput[name] / throughput[name.replace('morsel kv', 'memcached')];
        const t = threadsOf[name];
        claims.push(claim(`kv: ${name.replace('morsel kv ', '')} throughput${t > 1 ? ` (--workers ${t})` : ''} vs memcached -t ${t} (goal >= ${THROUGHPUT_GOAL})`, ratio, { goal: THROUGHPUT_GOAL }));
      }
    }
    // Restart to first hit with N items.
    const n = p.restartItems;
    const lastKey = `key:${n - 1}`;
    const memMiB = Math.ceil((n * 96) / 2 ** 20) + 32;
    const bare = performance.now();
    spawnSync(process.execPath, [BIN, '--version'], { stdio: 'ignore', env: SERVER_ENV });
    const startMs = performance.now() - bare;
    results.push(variant('morsel --version (process start alone)', 'start_ms', [startMs]));
    // Ours at n/10 and n items: the restart time should not grow with the item count.
    for (const items of [Math.floor(n / 10), n]) {
      const port = await freePort();
      const region = path.join(dir, `restart-${items}.region`);
      initRegion(region, memMiB + 96);
      const first = await startOurs(region, memMiB, port);
      await preload(port, items, 32);
      await stopServer(first, 'SIGKILL');
      const { ms, server } = await timeToFirstHit(() => startOurs(region, memMiB, port), port, `key:${items - 1}`);
      await stopServer(server);
      fs.rmSync(region, { force: true });
      results.push(variant('morsel kv after SIGKILL', 'restart_to_first_hit_ms', [ms], items));
      initRegion(region, memMiB + 96);
      const takeovers = await standbyTakeovers(region, memMiB, await freePort(), items);
      fs.rmSync(region, { force: true });
      results.push(variant('morsel kv --standby, worker SIGKILLed', 'restart_to_first_hit_ms', takeovers, items));
      if (items === n) {
        const median = [...takeovers].sort((a, b) => a - b)[Math.floor(takeovers.length / 2)];
        claims.push(claim(`kv: restart to first hit after SIGKILL of the serving process with ${n} items, --standby (a loaded spare opens the region), ms (lower is better; goal <= ${RESTART_GOAL_MS} at 1M)`, median, { goal: RESTART_GOAL_MS, met: median <= RESTART_GOAL_MS }));
        claims.push(claim(`kv: restart to first hit after SIGKILL with ${n} items, a new process, ms (lower is better)`, ms, { note: `a new process pays Node's start (\`morsel --version\`: ${startMs.toFixed(0)} ms here) and the loading of the server's modules before it opens the region; --standby paid both before the crash` }));
      }
    }
    tick();
    if (haveMemcached) {
      const port = await freePort();
      const memFile = path.join(fs.existsSync('/dev/shm') ? '/dev/shm' : dir, `morsel-kv-bench-${process.pid}`);
      // memcached -e needs far more than n * 96 bytes before it evicts (measured: -m 42 kept 35k of 100k items).
      const mcMiB = Math.ceil((n * 512) / 2 ** 20) + 64;
      try {
        const first = await startMemcached(mcMiB, port, ['-e', memFile]);
        await preload(port, n, 32);
        await stopServer(first, 'SIGUSR1'); // memcached -e saves only on a graceful stop
        const warm = await timeToFirstHit(() => startMemcached(mcMiB, port, ['-e', memFile]), port, lastKey);
        await stopServer(warm.server, 'SIGKILL');
        results.push(variant('memcached -e after SIGUSR1', 'restart_to_first_hit_ms', [warm.ms], n));
        if (Number.isNaN(warm.ms)) {
          notes.push("memcached -e missed after its graceful restart too: Debian's 1.6.18 rejects its own restart metadata ('[restart] restart incompatible due to setting for [stop_time]' with -vv; the stop_time bug that docker-library/memcached patches), so it starts cold");
        }
        const crashed = await timeToFirstHit(() => startMemcached(mcMiB, port, ['-e', memFile]), port, lastKey);
        results.push(variant('memcached -e after SIGKILL', 'restart_to_first_hit_ms', [crashed.ms], n));
        const t0 = performance.now();
        await preload(port, n, 32);
        results.push(variant('memcached cold: re-warm N items', 'rewarm_ms', [performance.now() - t0], n));
        await stopServer(crashed.server);
      } finally {
        fs.rmSync(memFile, { force: true });
      }
      notes.push('memcached -e restarts warm only after SIGUSR1 (graceful); after SIGKILL it answers but misses (NaN = no hit)');
    } else {
      notes.push('memcached not installed: only morsel kv measured (scripts/install-system-deps.sh)');
    }
    tick();
    return { id: 'kv', title: 'morsel kv vs memcached 1.6', anchor: 'issue 15: >= 50% of memcached throughput; warm restart after SIGKILL <= 100 ms at 1M items', params: { ...p, connections: CONNECTIONS, depth: DEPTH, keys: KEY_COUNT }, results, claims, notes };
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
