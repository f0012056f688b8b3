/**
 * `morsel kv`: a memcached-compatible cache server whose items live in a
 * persistent morsel at a fixed address (src/apps/kv). Every acknowledged
 * store survives SIGKILL; a restart answers at once (no rebuild pass).
 *
 *   morsel kv --region R [--name /kv/default] [--listen 127.0.0.1]
 *             [--port 11211] [-m 64] [--workers 1] [-v]
 *
 * Prints one line when it listens (`morsel kv: listening on HOST:PORT ...`),
 * logs connections at -v, and closes cleanly on SIGTERM/SIGINT (exit 0).
 */
import type { Command } from 'commander';
import { MorselError, check } from '../errors.js';
import { printError, regionOption } from './common.js';

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

async function serve(o: KvOptions): Promise<void> {
  const port = intOption(o.port, '--port', 0, 65535);
  const memMiB = intOption(o.memoryLimit, '-m', 1, 1 << 20);
  const workers = intOption(o.workers, '--workers', 1, 256);
  const maxConnections = intOption(o.maxConns, '-c', 1, 1 << 20);
  if (workers !== 1) throw new MorselError('ENOTSUP', '--workers N > 1 is not built yet (the store has one writer process)');
  const { Memory } = await import('../memory.js');
  const { openCache } = await import('../apps/kv/open.js');
  const { startKvServer } = await import('../apps/kv/server.js');
  const memory = Memory.open(o.region);
  let cache;
  try {
    cache = openCache(memory, o.region, o.name, memMiB);
  } catch (e) {
    memory.close();
    throw e;
  }
  const verbosity = o.verbose ? 1 : 0;
  const log = (msg: string): void => void process.stderr.write(`morsel kv: ${msg}\n`);
  const server = await startKvServer(cache, { memMiB, port, listen: o.listen, maxConnections, verbosity }, log).catch((e: unknown) => {
    cache.close();
    memory.close();
    throw e;
  });
  const addr = server.address();
  const items = cache.store.stats().currItems;
  process.stdout.write(`morsel kv: listening on ${addr.address}:${addr.port} (region ${o.region}, name ${o.name}, ${cache.created ? 'created' : 'opened'} ${cache.id.toString(16)}, -m ${memMiB} MiB, ${items} items)\n`);
  const stop = (signal: string): void => {
    if (verbosity) log(`${signal}: shutting down`);
    void server.close().then(() => {
      cache.close();
      memory.close();
      process.exit(0);
    });
  };
  process.once('SIGTERM', () => stop('SIGTERM'));
  process.once('SIGINT', () => stop('SIGINT'));
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
    .option('--workers <n>', 'server processes (only 1 is built)', '1')
    .option('-v, --verbose', 'log connections to stderr')
    .action((o: KvOptions) => serve(o).catch((e: unknown) => printError(false, e)));
}
