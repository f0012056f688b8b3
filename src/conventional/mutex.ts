/**
 * A futex-style mutex on one int32 word of shared memory (Drepper, "Futexes
 * are tricky", mutex 2): 0 = free, 1 = locked, 2 = locked with waiters. It
 * stands in for the kernel's i_pages spinlock: an uncontended acquire is one
 * CAS, a contended one spins briefly and then sleeps on the word.
 *
 * Atomics.wait is allowed on Node's main thread, so every thread may lock.
 */
const FREE = 0;
const LOCKED = 1;
const CONTENDED = 2;
/** CAS attempts before sleeping (a spinlock holder is never descheduled for long). */
const SPINS = 100;

export class Mutex {
  constructor(
    private readonly words: Int32Array,
    private readonly index: number,
  ) {}

  lock(): void {
    const w = this.words;
    const i = this.index;
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

  unlock(): void {
    if (Atomics.sub(this.words, this.index, 1) !== LOCKED) {
      Atomics.store(this.words, this.index, FREE);
      Atomics.notify(this.words, this.index, 1);
    }
  }
}
