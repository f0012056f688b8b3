/**
 * `morsel kv`: a memcached-compatible cache server whose items live in a
 * persistent morsel at a fixed address (src/apps/kv). Every acknowledged
 * store survives SIGKILL; a restart answers at once (no rebuild pass).
 *
 *   morsel kv --region R [--name /kv/default] [--listen 127.0.0.1]
 *             [--port 11211] [-m 64] [--workers N] [--standby] [-v]
 *
 * Prints one line when it listens (`morsel kv: listening on HOST:PORT ...`),
 * logs connections at -v, and closes cleanly on SIGTERM/SIGINT (exit 0).
 */
import cluster, { type Worker } from 'node:cluster';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { Command } from 'commander';
import { check } from '../errors.js';
import type { Memory } from '../memory.js';
import type { OpenCache } from '../apps/kv/open.js';
import type { KvServer } from '../apps/kv/server.js';
import { EXIT_PROBLEMS, parsePort, printError, regionOption } from './common.js';

/** The most worker processes (each holds a user slot of the region's 64). */
const WORKERS_MAX = 32;

interface KvOptions {
  region: string;
  name: string;
  listen: string;
  port: string;
  memoryLimit: string;
  workers: string;
  maxConns: string;
  standby?: boolean;
  verbose?: boolean;
}

/** The environment variable that makes a forked worker a standby (see servePrimary). */
const ROLE_ENV = 'MORSEL_KV_ROLE';
/** The primary's message that makes a standby serve (with the port to serve on), and the standby's that it listens for it. */
const TAKE_OVER = 'morsel-kv-take-over';
/**
 * The port the first worker bound, for workers forked later (with `--port
 * 0` each would bind a new one once no worker holds the shared socket).
 */
const PORT_ENV = 'MORSEL_KV_PORT';
const STANDBY_READY = 'morsel-kv-standby-ready';

/** A whole number in [min, max] from option `what`, else EINVAL. */
function intOption(text: string, what: string, min: number, max: number): number {
  const n = /^\d+$/.test(text) ? Number(text) : NaN;
  check(Number.isSafeInteger(n) && n >= min && n <= max, 'EINVAL', () => `${what} must be ${min}..${max}, got ${JSON.stringify(text)}`);
  return n;
}

/** The heavy modules, imported inside the action (start-up of other commands stays cheap). */
async function load() {
  const [{ Memory }, { openCache }, { startKvServer }] = await Promise.all([import('../memory.js'), import('../apps/kv/open.js'), import('../apps/kv/server.js')]);
  return { Memory, openCache, startKvServer };
}
type Mods = Awaited<ReturnType<typeof load>>;

interface Served {
  cache: OpenCache;
  memory: Memory;
  server: KvServer;
}

/** Opens the region and the cache `o.name`, and serves it on `port` (in this process). */
async function openAndServe(mods: Mods, o: KvOptions, memMiB: number, port: number, maxConnections: number, log: (msg: string) => void): Promise<Served> {
  const memory = mods.Memory.open(o.region, { mode: 'shared' });
  let cache: OpenCache;
  try {
    cache = mods.openCache(memory, o.name, memMiB);
  } catch (e) {
    memory.close();
    throw e;
  }
  const server = await mods.startKvServer(cache, { memMiB, port, listen: o.listen, maxConnections, verbosity: o.verbose ? 1 : 0 }, log).catch((e: unknown) => {
    cache.close();
    memory.close();
    throw e;
  });
  return { cache, memory, server };
}

/** Closes connections, the cache and the region on SIGTERM/SIGINT, then exits 0. */
function stopOnSignals(s: Served, verbose: boolean, log: (msg: string) => void): void {
  const stop = (signal: string): void => {
    if (verbose) log(`${signal}: shutting down`);
    void s.server.close().then(() => {
      s.cache.close();
      s.memory.close();
      process.exit(0);
    });
  };
  process.once('SIGTERM', () => stop('SIGTERM'));
  process.once('SIGINT', () => stop('SIGINT'));
}

async function serve(o: KvOptions): Promise<void> {
  const port = parsePort(o.port);
  const memMiB = intOption(o.memoryLimit, '-m', 1, 1 << 20);
  const workers = intOption(o.workers, '--workers', 1, WORKERS_MAX);
  const maxConnections = intOption(o.maxConns, '-c', 1, 1 << 20);
  const mods = await load();
  const log = (msg: string): void => void process.stderr.write(`morsel kv${cluster.isWorker ? ` worker ${process.pid}` : ''}: ${msg}\n`);
  if (cluster.isWorker) {
    const standby = process.env[ROLE_ENV] === 'standby';
    let servePort = process.env[PORT_ENV] === undefined ? port : Number(process.env[PORT_ENV]);
    if (standby) {
      warmUp(mods, log);
      servePort = await untilTakeOver(o, log);
    }
    const t0 = performance.now();
    const s = await openAndServe(mods, o, memMiB, servePort, maxConnections, log);
    if (standby && o.verbose) log(`standby: serving ${(performance.now() - t0).toFixed(1)} ms after the take-over (${JSON.stringify(s.memory.report)})`);
    stopOnSignals(s, !!o.verbose, log);
    return;
  }
  if (workers > 1 || o.standby) return servePrimary(mods, o, memMiB, port, workers, log);
  const s = await openAndServe(mods, o, memMiB, port, maxConnections, log);
  const addr = s.server.address();
  const items = s.cache.store.stats().currItems;
  process.stdout.write(`morsel kv: listening on ${addr.address}:${addr.port} (region ${o.region}, name ${o.name}, ${s.cache.created ? 'created' : 'opened'} ${s.cache.id.toString(16)}, -m ${memMiB} MiB, ${items} items)\n`);
  stopOnSignals(s, !!o.verbose, log);
}

/** The scratch region a standby warms up on, and its cache's -m. */
const WARM_REGION_BYTES = 64 * 1024 * 1024;
const WARM_CACHE_MIB = 1;

/**
 * A standby runs the take-over path once on a scratch region in the temp
 * directory (create the cache, die as if killed, open again: crash
 * recovery, open the cache), then deletes it: a take-over then runs
 * compiled code instead of compiling it on first use. A failure only costs
 * the warm-up.
 */
function warmUp(mods: Mods, log: (msg: string) => void): void {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'morsel-kv-standby-'));
  try {
    const file = path.join(dir, 'warm.region');
    const first = mods.Memory.create(file, WARM_REGION_BYTES);
    mods.openCache(first, '/kv/warm', WARM_CACHE_MIB);
    first.abandon(); // as if killed
    const again = mods.Memory.open(file, { mode: 'shared' });
    mods.openCache(again, '/kv/warm', WARM_CACHE_MIB).close();
    again.close();
  } catch (e) {
    log(`standby: warm-up failed (${(e as Error).message}); a take-over compiles as it goes`);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * A standby worker: its modules are loaded and compiled; it waits (holding
 * nothing: no region, no socket) until the primary says take over, or
 * exits 0 on SIGTERM/SIGINT.
 */
function untilTakeOver(o: KvOptions, log: (msg: string) => void): Promise<number> {
  const quit = (): never => process.exit(0);
  process.once('SIGTERM', quit);
  process.once('SIGINT', quit);
  return new Promise((resolve) => {
    const onMessage = (m: unknown): void => {
      if (!(typeof m === 'object' && m !== null && (m as { cmd?: unknown }).cmd === TAKE_OVER)) return;
      process.off('message', onMessage);
      process.off('SIGTERM', quit);
      process.off('SIGINT', quit);
      if (o.verbose) log('standby: taking over');
      resolve((m as { port: number }).port);
    };
    process.on('message', onMessage);
    process.send!(STANDBY_READY); // a message sent before the listener would be lost
  });
}

/**
 * `--workers N` (or `--standby`): this process creates the cache (so
 * workers never race to format it), then forks N workers (node:cluster)
 * that each open the region and serve the same cache on the shared
 * listening socket. A worker that dies is replaced; SIGTERM/SIGINT stops
 * every worker, then exits 0.
 *
 * `--standby` keeps one more worker forked, its modules loaded, waiting:
 * when a serving worker dies it is told to take over at once (it opens the
 * region then, so crash recovery or the reap of the dead worker's slot runs
 * as for any restart, and the items are there without a rebuild pass), and
 * a new standby is forked. The replacement pays only the region open, not
 * Node's start and module loading (measured in `npm run bench -- kv`).
 */
async function servePrimary(mods: Mods, o: KvOptions, memMiB: number, port: number, workers: number, log: (msg: string) => void): Promise<void> {
  const memory = mods.Memory.open(o.region, { mode: 'shared' });
  let created: boolean;
  let id: string;
  let items: number;
  try {
    const cache = mods.openCache(memory, o.name, memMiB);
    created = cache.created;
    id = cache.id.toString(16);
    items = cache.store.stats().currItems;
    cache.close();
  } finally {
    memory.close();
  }
  // With a standby the workers accept on the shared socket themselves: the
  // primary's round robin hands a connection that arrives as a worker dies
  // to the dead worker, and its client hangs; shared, it is refused or
  // waits in the backlog for the next worker, as clients of any restart see.
  if (o.standby) cluster.schedulingPolicy = cluster.SCHED_NONE;
  let stopping = false;
  let listening = 0;
  let standby: Worker | null = null;
  let standbyReady = false;
  /** the standby told to take over, until it listens (its successor is forked then: a fork's start would compete for the CPU) */
  let takingOver: Worker | null = null;
  /** the port the workers serve on, once the first listens (0 before) */
  let boundPort = 0;
  const fork = (): void => void cluster.fork(boundPort === 0 ? {} : { [PORT_ENV]: String(boundPort) });
  const forkStandby = (): void => {
    standby = cluster.fork({ [ROLE_ENV]: 'standby' });
    standbyReady = false;
  };
  cluster.on('message', (w, m) => {
    if (w !== standby || m !== STANDBY_READY) return;
    standbyReady = true;
    if (o.verbose) log(`standby ${w.process.pid} ready`);
  });
  cluster.on('listening', (w, addr) => {
    boundPort = addr.port;
    if (w === takingOver) {
      takingOver = null;
      forkStandby();
    }
    if (++listening !== workers) return;
    const pids = Object.values(cluster.workers ?? {}).filter((x) => x !== standby).map((x) => x?.process.pid);
    const spare = standby === null ? '' : `, standby pid ${standby.process.pid}`;
    process.stdout.write(`morsel kv: listening on ${addr.address ?? o.listen}:${addr.port} (region ${o.region}, name ${o.name}, ${created ? 'created' : 'opened'} ${id}, -m ${memMiB} MiB, ${items} items, ${workers} workers: pids ${pids.join(',')}${spare})\n`);
  });
  cluster.on('exit', (w, code, signal) => {
    if (stopping) {
      if (Object.keys(cluster.workers ?? {}).length === 0) process.exit(0);
      return;
    }
    if (listening < workers) {
      // A worker that dies before all listen would die again (bad region, rights, port): no restart loop.
      log(`worker ${w.process.pid} exited (${signal ?? code}) before listening: stopping`);
      for (const x of Object.values(cluster.workers ?? {})) x?.process.kill('SIGKILL');
      process.exit(EXIT_PROBLEMS);
    }
    if (w === standby) {
      log(`standby ${w.process.pid} exited (${signal ?? code}); starting another`);
      forkStandby();
      return;
    }
    if (w === takingOver) {
      log(`worker ${w.process.pid} exited (${signal ?? code}) taking over; starting another and a standby`);
      takingOver = null;
      fork();
      forkStandby();
      return;
    }
    const spare: Worker | null = standby;
    if (spare !== null && standbyReady && spare.isConnected()) {
      log(`worker ${w.process.pid} exited (${signal ?? code}); standby ${spare.process.pid} takes over`);
      spare.send({ cmd: TAKE_OVER, port: boundPort });
      standby = null;
      takingOver = spare;
      return;
    }
    log(`worker ${w.process.pid} exited (${signal ?? code}); starting another`);
    fork();
  });
  const stop = (signal: string): void => {
    if (o.verbose) log(`${signal}: stopping ${workers} workers`);
    stopping = true;
    const live = Object.values(cluster.workers ?? {});
    if (live.length === 0) process.exit(0);
    for (const w of live) w?.process.kill('SIGTERM');
  };
  process.once('SIGTERM', () => stop('SIGTERM'));
  process.once('SIGINT', () => stop('SIGINT'));
  for (let i = 0; i < workers; i++) fork();
  if (o.standby) forkStandby();
}

export function registerKv(program: Command): void {
  program
    .command('kv')
    .description('serve a memcached-compatible cache whose items live in a persistent morsel (survives SIGKILL)')
    .addOption(regionOption())
    .option('--name <name>', 'name of the cache morsel', '/kv/default')
    .option('--listen <host>', 'address to listen on', '127.0.0.1')
    .option('-p, --port <port>', 'TCP port (0: any free port)', '11211')
    .option('-m, --memory-limit <MiB>', 'item memory in MiB (fixed when the cache is created)', '64')
    .option('-c, --max-conns <n>', 'most simultaneous connections', '1024')
    .option('--workers <n>', `server processes sharing one cache (1..${WORKERS_MAX})`, '1')
    .option('--standby', 'keep a spare server process loaded: when a worker dies it takes over at once')
    .option('-v, --verbose', 'log connections to stderr')
    .action((o: KvOptions) => serve(o).catch((e: unknown) => printError(false, e)));
}
