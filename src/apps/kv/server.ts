/**
 * The kv TCP server: one Session per connection over one KvStore, all on
 * the event loop of one process (other worker processes may serve the same
 * store: see the locks in store.ts). Each socket
 * read is parsed and executed inside one access section of the store's
 * Mmu; its replies go out in one write. A reply is written only after the
 * commands it answers have reached the region (see store.ts: commit points).
 *
 * Bounds: a session buffers at most one command line (or multi-get line)
 * and one value (protocol.ts), and executes at most OUT_BATCH_BYTES of
 * replies per step; a client that stops reading its replies stops being
 * read (and served) once OUT_HIGH_WATER_BYTES wait in its socket.
 */
import * as net from 'node:net';
import { MorselError, isMorselError } from '../../errors.js';
import { EMPTY_INPUT, KvCounters, Session, type KvSettings } from './protocol.js';
import type { OpenCache } from './open.js';

/** Unsent reply bytes per connection before we stop reading it. */
const OUT_HIGH_WATER_BYTES = 4 * 1024 * 1024;
/** Reply batches one connection gets in a row before the others run. */
const PUMP_ROUNDS_MAX = 8;

export interface KvServer {
  server: net.Server;
  counters: KvCounters;
  address(): net.AddressInfo;
  /** Stops listening, ends every connection, resolves when all are closed. */
  close(): Promise<void>;
}

export function startKvServer(cache: OpenCache, settings: KvSettings, log: (msg: string) => void): Promise<KvServer> {
  const counters = new KvCounters();
  const sockets = new Set<net.Socket>();
  const mmu = cache.mmu;
  const section = (fn: () => void): void => {
    mmu.enter();
    try {
      fn();
    } finally {
      cache.store.unlockAll(); // the stripe lock the section's last key took
      mmu.exit();
    }
  };
  const server = net.createServer({ noDelay: true }, (socket) => {
    counters.currConnections++;
    counters.totalConnections++;
    sockets.add(socket);
    if (settings.verbosity > 0) log(`<${socket.remotePort} new client connection`);
    const session = new Session(cache.store, counters, settings, section);
    /** Feeds input and writes the replies; stops reading while replies back up (bounded memory per connection). */
    const pump = (chunk: Uint8Array): void => {
      for (let rounds = 0; rounds < PUMP_ROUNDS_MAX; rounds++) {
        let out: Uint8Array;
        try {
          out = session.feed(rounds === 0 ? chunk : EMPTY_INPUT);
        } catch (e) {
          const err = isMorselError(e) ? e : new MorselError('EINTERNAL', e instanceof Error ? e.message : String(e));
          log(`SERVER_ERROR ${err.code}: ${err.message}`);
          socket.end(`SERVER_ERROR ${err.code}\r\n`);
          return;
        }
        if (out.length > 0) socket.write(out);
        if (session.closing) {
          socket.end();
          return;
        }
        if (socket.writableLength > OUT_HIGH_WATER_BYTES) {
          socket.pause();
          socket.once('drain', () => {
            socket.resume();
            if (session.moreInput) pump(EMPTY_INPUT);
          });
          return;
        }
        if (!session.moreInput) return;
      }
      setImmediate(() => pump(EMPTY_INPUT)); // bound reached: let other connections run first
    };
    socket.on('data', (chunk: Buffer) => pump(chunk));
    socket.on('error', () => socket.destroy());
    socket.on('close', () => {
      counters.currConnections--;
      sockets.delete(socket);
      if (settings.verbosity > 0) log(`<${socket.remotePort} connection closed.`);
    });
  });
  server.maxConnections = settings.maxConnections;
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(settings.port, settings.listen, () => {
      server.off('error', reject);
      resolve({
        server,
        counters,
        address: () => server.address() as net.AddressInfo,
        close: () =>
          new Promise<void>((done) => {
            server.close(() => done());
            for (const s of sockets) s.destroy();
          }),
      });
    });
  });
}
