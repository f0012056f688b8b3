/**
 * Cross-thread coordination inside one torture child, on SharedArrayBuffers:
 * a lock for lifecycle operations and a one-slot mailbox for cofaults.
 */

export function newLock(): SharedArrayBuffer {
  return new SharedArrayBuffer(4);
}

export function acquire(lock: Int32Array): void {
  while (Atomics.compareExchange(lock, 0, 0, 1) !== 0) Atomics.wait(lock, 0, 1, 10);
}

export function release(lock: Int32Array): void {
  Atomics.store(lock, 0, 0);
  Atomics.notify(lock, 0, 1);
}

const IDLE = 0;
const CLAIMED = 1; // an owner is filling in the job
const POSTED = 2;
const JOINED = 3;
const DONE = 4;
/** A peer that joined finishes within this long unless something is badly wrong. */
const FINISH_TIMEOUT_MS = 30_000;

/**
 * One cofault job at a time: an owner posts (base, pages); one peer may join
 * and fault the same pages while the owner does; the owner waits for the
 * peer before it goes on (so it never unmaps or destroys under the peer).
 */
export class Mailbox {
  private readonly i32: Int32Array;
  private readonly f64: Float64Array;

  constructor(readonly sab: SharedArrayBuffer) {
    this.i32 = new Int32Array(sab, 0, 4);
    this.f64 = new Float64Array(sab, 16, 1);
  }

  static create(): SharedArrayBuffer {
    return new SharedArrayBuffer(32);
  }

  /** Posts a job; false if another is in progress. */
  post(owner: number, base: number, pages: number): boolean {
    if (Atomics.compareExchange(this.i32, 0, IDLE, CLAIMED) !== IDLE) return false;
    this.i32[1] = owner;
    this.i32[2] = pages;
    this.f64[0] = base;
    Atomics.store(this.i32, 0, POSTED); // publishes the fields
    return true;
  }

  /** Owner: waits up to `ms` for a peer to join, so both fault at once. */
  awaitJoin(ms: number): void {
    Atomics.wait(this.i32, 0, POSTED, ms);
  }

  /** Owner: withdraws the job if nobody joined, else waits for the peer to finish. */
  finish(): void {
    if (Atomics.compareExchange(this.i32, 0, POSTED, IDLE) === POSTED) return;
    const deadline = Date.now() + FINISH_TIMEOUT_MS;
    while (Atomics.load(this.i32, 0) !== DONE) {
      if (Date.now() > deadline) throw new Error('cofault peer never finished');
      Atomics.wait(this.i32, 0, JOINED, 100);
    }
    Atomics.store(this.i32, 0, IDLE);
  }

  /** Peer: takes a posted job of another thread, or null. */
  join(me: number): { base: number; pages: number } | null {
    if (Atomics.load(this.i32, 0) !== POSTED || this.i32[1] === me) return null;
    if (Atomics.compareExchange(this.i32, 0, POSTED, JOINED) !== POSTED) return null;
    Atomics.notify(this.i32, 0);
    return { base: this.f64[0], pages: this.i32[2] };
  }

  /** Peer: the joined job is finished. */
  done(): void {
    Atomics.store(this.i32, 0, DONE);
    Atomics.notify(this.i32, 0);
  }
}
