/**
 * A futex-style mutex on one int32 word of shared memory (Drepper, "Futexes
 * are tricky", mutex 2): 0 = free, 1 = locked, 2 = locked with waiters. It
 * guards the baselines (the locked free list, the conventional page cache's
 * index, standing in for the kernel's i_pages lock): an uncontended acquire
 * is one CAS, a contended one spins briefly and then sleeps on the word. A
 * mutex wait is unbounded by nature; holders keep critical sections short.
 *
 * Atomics.wait is allowed on Node's main thread, so every thread may lock.
 *
 * The spinlock below stands in for the kernel's spinlocks (the page-table
 * lock, the i_pages lock): waiters spin instead of sleeping. A JavaScript
 * thread cannot disable preemption as a kernel holder does, so after
 * SPINLOCK_SPINS reads a waiter yields for SPINLOCK_YIELD_MS and spins again
 * (a descheduled holder would otherwise burn the waiter's whole time slice).
 */
const FREE = 0;
const LOCKED = 1;
const CONTENDED = 2;
/** CAS attempts before sleeping (a spinlock holder is never descheduled for long). */
const SPINS = 100;

/** Acquires the mutex in word `i` of `w`. */
export function mutexLock(w: Int32Array, i: number): void {
    let c = Atomics.compareExchange(w, i, FREE, LOCKED);
    if (c === FREE) return;
    for (let spin = 0; spin < SPINS; spin++) {
      c = Atomics.compareExchange(w, i, FREE, LOCKED);
      if (c === FREE) return;
    }
    if (c !== CONTENDED) c = Atomics.exchange(w, i, CONTENDED);
    while (c !== FREE) {
      Atomics.wait(w, i, CONTENDED);
      c = Atomics.exchange(w, i, CONTENDED);
    }
}

/** Releases the mutex in word `i` of `w`, waking one sleeper if there are any. */
export function mutexUnlock(w: Int32Array, i: number): void {
  if (Atomics.sub(w, i, 1) !== LOCKED) {
    Atomics.store(w, i, FREE);
    Atomics.notify(w, i, 1);
  }
}

/** Reads of the lock word a spinlock waiter makes before it yields once. */
const SPINLOCK_SPINS = 1 << 14;
/** How long a spinlock waiter yields after SPINLOCK_SPINS reads (then it spins again). */
const SPINLOCK_YIELD_MS = 0.05;

/** Acquires the spinlock in word `i` of `w` (0 free, 1 held): test-and-test-and-set, spinning. */
export function spinLock(w: Int32Array, i: number): void {
  for (;;) {
    if (Atomics.compareExchange(w, i, FREE, LOCKED) === FREE) return;
    for (let spin = 0; spin < SPINLOCK_SPINS && Atomics.load(w, i) !== FREE; spin++);
    if (Atomics.load(w, i) !== FREE) Atomics.wait(w, i, LOCKED, SPINLOCK_YIELD_MS);
  }
}

/** Releases the spinlock in word `i` of `w` (no waiter sleeps on it for long: a timed yield at most). */
export function spinUnlock(w: Int32Array, i: number): void {
  Atomics.store(w, i, FREE);
}

/** The mutex in word `index` of `words`. */
export class Mutex {
  constructor(
    private readonly words: Int32Array,
    private readonly index: number,
  ) {}

  lock(): void {
    mutexLock(this.words, this.index);
  }

  unlock(): void {
    mutexUnlock(this.words, this.index);
  }
}
