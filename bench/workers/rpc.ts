/**
 * Request/response over a worker's parentPort: the main side sends
 * `{ id, msg }` and awaits `{ id, result }` or `{ id, error }`; the worker
 * side serves a handler. Plus a start barrier so workers begin a timed
 * section together.
 */
import { Worker, parentPort, type MessagePort, type Transferable } from 'node:worker_threads';

interface Reply {
  id: number;
  result?: unknown;
  error?: string;
}

export class WorkerClient {
  private seq = 0;
  private readonly pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  private failure: Error | null = null;

  constructor(readonly worker: Worker) {
    worker.on('message', (r: Reply) => {
      const p = this.pending.get(r.id);
      if (p === undefined) return;
      this.pending.delete(r.id);
      if (r.error !== undefined) p.reject(new Error(r.error));
      else p.resolve(r.result);
    });
    const failAll = (e: Error): void => {
      this.failure = e;
      for (const p of this.pending.values()) p.reject(e);
      this.pending.clear();
    };
    worker.on('error', failAll);
    worker.on('exit', (code) => failAll(new Error(`worker exited (${code})`)));
  }

  /** Starts `url` (a compiled worker module) with `workerData` (ports in it go in `transferList`). */
  static start(url: URL, workerData: unknown, transferList: Transferable[] = []): WorkerClient {
    return new WorkerClient(new Worker(url, { workerData, transferList }));
  }

  call<T>(msg: unknown, transfer: Transferable[] = []): Promise<T> {
    if (this.failure !== null) return Promise.reject(this.failure);
    const id = ++this.seq;
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      this.worker.postMessage({ id, msg }, transfer);
    });
  }

  /** Asks the worker to clean up (`{ op: 'exit' }`), then terminates it. */
  async close(): Promise<void> {
    try {
      if (this.failure === null) await this.call({ op: 'exit' });
    } finally {
      this.worker.removeAllListeners('exit');
      await this.worker.terminate();
    }
  }
}

/** Worker side: answers every request with `handler`'s (awaited) result. */
export function serve(handler: (msg: { op: string; [k: string]: unknown }) => unknown | Promise<unknown>): void {
  const port = parentPort;
  if (port === null) throw new Error('serve() must run in a worker');
  port.on('message', async ({ id, msg }: { id: number; msg: { op: string } }) => {
    try {
      const result = await handler(msg);
      port.postMessage({ id, result });
    } catch (e) {
      port.postMessage({ id, error: e instanceof Error ? `${e.message}\n${e.stack ?? ''}` : String(e) });
    }
  });
}

/**
 * A reusable start barrier on shared memory: `arrive` blocks until `parties`
 * threads have arrived in the current generation. Word 0 counts, word 1 is
 * the generation.
 */
export class Barrier {
  readonly words: Int32Array;
  constructor(
    readonly parties: number,
    sab = new SharedArrayBuffer(8),
  ) {
    this.words = new Int32Array(sab);
  }

  get sab(): SharedArrayBuffer {
    return this.words.buffer as SharedArrayBuffer;
  }

  arrive(): void {
    const gen = Atomics.load(this.words, 1);
    if (Atomics.add(this.words, 0, 1) + 1 === this.parties) {
      Atomics.store(this.words, 0, 0);
      Atomics.add(this.words, 1, 1);
      Atomics.notify(this.words, 1);
      return;
    }
    while (Atomics.load(this.words, 1) === gen) Atomics.wait(this.words, 1, gen, 1000);
  }
}

/** Messages arriving on a port, taken in order with `next()`. */
export class Inbox {
  private readonly queue: unknown[] = [];
  private wake: (() => void) | null = null;

  constructor(port: MessagePort) {
    port.on('message', (m: unknown) => {
      this.queue.push(m);
      this.wake?.();
    });
  }

  async next(): Promise<unknown> {
    while (this.queue.length === 0) await new Promise<void>((r) => (this.wake = r));
    this.wake = null;
    return this.queue.shift();
  }
}

/** Posts `msg` to a raw Worker and resolves with its next message (rejects on its error). */
export function request(w: Worker, msg: unknown): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const onError = (e: Error): void => {
      w.off('message', onMessage);
      reject(e);
    };
    const onMessage = (m: unknown): void => {
      w.off('error', onError);
      resolve(m);
    };
    w.once('message', onMessage);
    w.once('error', onError);
    w.postMessage(msg);
  });
}
