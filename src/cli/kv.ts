/**
 * `morsel kv`: a memcached-compatible cache server whose items live in a
 * persistent morsel at a fixed address (src/apps/kv). Every acknowledged
 * store survives SIGKILL; a restart answers at once (no rebuild pass).
 *
 *   morsel kv --region R [--name /kv/default] [--listen 127.0.0.1]
 *             [--port 11211] [-m 64] [--workers N] [-v]
 *
 * Prints one line when it listens (`morsel kv: listening on HOST:PORT ...`),
 * logs connections at -v, and closes cleanly on SIGTERM/SIGINT (exit 0).
 */
import cluster from 'node:cluster';
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
  verbose?: boolean;
}

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
    const s = await openAndServe(mods, o, memMiB, port, maxConnections, log);
    stopOnSignals(s, !!o.verbose, log);
    return;
  }
  if (workers > 1) return servePrimary(mods, o, memMiB, port, workers, log);
  const s = await openAndServe(mods, o, memMiB, port, maxConnections, log);
  const addr = s.server.address();
  const items = s.cache.store.stats().currItems;
  process.stdout.write(`morsel kv: listening on ${addr.address}:${addr.port} (region ${o.region}, name ${o.name}, ${s.cache.created ? 'created' : 'opened'} ${s.cache.id.toString(16)}, -m ${memMiB} MiB, ${items} items)\n`);
  stopOnSignals(s, !!o.verbose, log);
}

/**
 * `--workers N`: this process creates the cache (so workers never race to
 * format it), then forks N workers (node:cluster) that each open the region
 * and serve the same cache on the shared listening socket. A worker that
 * dies is replaced; SIGTERM/SIGINT stops every worker, then exits 0.
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
  let stopping = false;
  let listening = 0;
  const fork = (): void => void cluster.fork();
  cluster.on('listening', (w, addr) => {
    if (++listening !== workers) return;
    const pids = Object.values(cluster.workers ?? {}).map((x) => x?.process.pid);
    process.stdout.write(`morsel kv: listening on ${addr.address ?? o.listen}:${addr.port} (region ${o.region}, name ${o.name}, ${created ? 'created' : 'opened'} ${id}, -m ${memMiB} MiB, ${items} items, ${workers} workers: pids ${pids.join(',')})\n`);
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
    .option('-v, --verbose', 'log connections to stderr')
    .action((o: KvOptions) => serve(o).catch((e: unknown) => printError(false, e)));
}
