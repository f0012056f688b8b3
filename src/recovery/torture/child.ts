/**
 * A torture child process. argv[2] is a JSON ChildConfig.
 *
 *   mode "ops":     open the region (recovering it if needed), create one
 *                   address space shared by all workers, hand the live
 *                   morsels out to `threads` worker threads and let them run
 *                   operations until killed (or, with a finite budget, until
 *                   done: then close cleanly). Prints "ready" once every
 *                   worker runs, so the parent's kill timer measures from there.
 *   mode "names":   open the region next to a running "ops" child (a second
 *                   process, joining it) and run the names driver (names.ts)
 *                   in the main thread until killed or done. Prints "ready"
 *                   once it runs.
 *   mode "recover": only open the region (running recovery; a crash point
 *                   armed inside recovery kills it there) and close it.
 *
 * Exit 0 after a clean close; 3 when a worker hit an unexpected error (a bug:
 * the message is on stderr); death by SIGKILL otherwise.
 */
import { Worker } from 'node:worker_threads';
import { isMorselError } from '../../errors.js';
import { Memory } from '../../memory.js';
import type { AddressSpace } from '../../space/address-space.js';
import { LogWriter } from './log.js';
import { decodeIdBits, hex } from '../../morsel/id.js';
import { W_PENDING } from '../../morsel/words.js';
import { NamesDriver } from './names.js';
import { newLock, Mailbox } from './sync.js';
import { subSeed } from './prng.js';
import type { WorkerConfig } from './worker.js';

export interface ChildConfig {
  mode: 'ops' | 'names' | 'recover';
  region: string;
  logPath: string;
  run: number;
  seed: number;
  threads: number;
  /** operations per thread; null = until killed */
  budget: number | null;
}

/**
 * The shared space, destroying morsels (logged, as thread `threads`) while
 * the region is too full to hold its tables: a crash at a full region must
 * not wedge every later run.
 */
function spaceOrMakeRoom(memory: Memory, cfg: ChildConfig): AddressSpace {
  const log = new LogWriter(cfg.logPath);
  try {
    for (let s = 0; ; s++) {
      try {
        return memory.createSpace({ levels: 5 });
      } catch (e) {
        const victim = primitiveMorsels(memory)[0];
        if (!isMorselError(e, 'ENOSPC') || victim === undefined) throw e;
        const event = { r: cfg.run, t: cfg.threads, s, op: 'destroy' as const, id: hex(victim) };
        log.begin(event);
        memory.morsels.destroy(victim);
        log.ack(event);
      }
    }
  } finally {
    log.close();
  }
}

/**
 * Live morsels that belong to the primitive workers: not named (the names
 * child's, from earlier runs) and not PENDING (being named or unlinked).
 */
function primitiveMorsels(memory: Memory): bigint[] {
  const named = new Set([...memory.names.namedIncarnations()].map((s) => Number(s.split('@')[0])));
  return memory.morsels.list().filter((id) => {
    const root = decodeIdBits(id).rootFrame;
    return !named.has(root) && (memory.morsels.words.load(root) & W_PENDING) === 0;
  });
}

/** Attempts at creating the names child's space while the primitive child makes room in a full region. */
const SPACE_ATTEMPTS = 50;
const SPACE_RETRY_MS = 20;

function runNames(memory: Memory, cfg: ChildConfig): void {
  let space: AddressSpace | null = null;
  for (let attempt = 0; space === null; attempt++) {
    try {
      space = memory.createSpace({ levels: 5 });
    } catch (e) {
      if (!isMorselError(e, 'ENOSPC') || attempt + 1 === SPACE_ATTEMPTS) throw e;
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, SPACE_RETRY_MS);
    }
  }
  const driver = new NamesDriver(memory, space, cfg);
  process.stdout.write('ready\n');
  driver.run(cfg.budget ?? Number.POSITIVE_INFINITY);
  memory.close();
}

function fail(message: string): never {
  process.stderr.write(`torture child: ${message}\n`);
  process.exit(3);
}

/** A child runs until killed: if the harness itself dies first, nobody would kill it. */
function watchParent(): void {
  const parent = process.ppid;
  setInterval(() => {
    if (process.ppid !== parent) process.kill(process.pid, 'SIGKILL');
  }, 250).unref();
}

async function main(): Promise<void> {
  const cfg = JSON.parse(process.argv[2]) as ChildConfig;
  watchParent();
  const memory = Memory.open(cfg.region);
  if (cfg.mode === 'recover') {
    memory.close();
    return;
  }
  if (cfg.mode === 'names') return runNames(memory, cfg);
  const space = spaceOrMakeRoom(memory, cfg);
  const ids = primitiveMorsels(memory).map((id) => hex(id));
  const lock = newLock();
  const mailbox = Mailbox.create();
  const workers: Promise<void>[] = [];
  const ready: Promise<void>[] = [];
  for (let t = 0; t < cfg.threads; t++) {
    const wcfg: WorkerConfig = {
      region: memory.share(),
      space: space.share(),
      lock,
      mailbox,
      logPath: cfg.logPath,
      run: cfg.run,
      thread: t,
      seed: subSeed(cfg.seed, t),
      budget: cfg.budget ?? Number.POSITIVE_INFINITY,
      ids: ids.filter((_, i) => i % cfg.threads === t),
    };
    const w = new Worker(new URL('./worker.js', import.meta.url), { workerData: wcfg });
    let isReady: () => void;
    ready.push(new Promise<void>((res) => (isReady = res)));
    workers.push(
      new Promise<void>((resolve) => {
        w.on('message', (m) => (m === 'ready' ? isReady() : m === 'done' ? resolve() : undefined));
        w.on('error', (e) => fail(`worker ${t}: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`));
        w.on('exit', (code) => (code !== 0 ? fail(`worker ${t} exited with ${code}`) : undefined));
      }),
    );
  }
  await Promise.all(ready);
  process.stdout.write('ready\n');
  await Promise.all(workers);
  // Spaces are left registered on purpose: the next open reaps them (the clean-close path).
  memory.close();
}

main().then(
  () => process.exit(0),
  (e: unknown) => fail(e instanceof Error ? (e.stack ?? e.message) : String(e)),
);
