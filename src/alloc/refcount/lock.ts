/**
 * Bucket locks of the reference-count tables: one int32 word in the shared
 * region, taken by CAS and released by a store, usable across threads and
 * processes. The word doubles as a seqlock for lock-free readers and carries
 * the bucket's "migrated" mark during a resize:
 *
 *   bits 0-15   version: bumped by every unlock (readers retry when it moved)
 *   bits 16-22  holder's user slot + 1 (0 = unlocked)
 *   bits 23-29  holder's thread tag (threadId & 0x7f; diagnostics, and so a
 *               waiter can tell two threads of one process apart)
 *   bit  30     migrated: the bucket's keys now live in the new array
 *   bit  31     partial: a migration of the bucket began and has not
 *               finished (kept by unlock and by breaking a dead holder's
 *               lock, cleared by the unlock that sets migrated)
 *
 * Atomics.wait/notify do not pair across processes, so waiters spin with a
 * bounded exponential backoff. A waiter that has spun for a while asks
 * whether the holder's process is alive (region.slotAlive); a dead holder's
 * lock is taken over (broken). A live holder that keeps a lock longer than
 * LOCK_TIMEOUT_MS is reported as ETIMEDOUT.
 *
 * # Warning
 * A broken lock may leave the half-done update of the dead holder behind.
 * Every table update is ordered so that the bucket is structurally valid
 * after each single store and so that an interrupted update leaves a count
 * too high (or a pool entry leaked), never too low: increments store the new
 * count before they publish a key, removals unpublish the key first, a
 * migration copies before it marks the old bucket migrated and re-copying
 * overwrites. Recovery recomputes the counts from the trees anyway.
 */
import { threadId } from 'node:worker_threads';
import { MorselError } from '../../errors.js';
import type { Region } from '../../physical/region.js';

export const VERSION_MASK = 0xffff;
const HOLDER_SHIFT = 16;
const SLOT_MASK = 0x7f;
const TAG_SHIFT = 23;
const TAG_MASK = 0x7f;
export const MIGRATED = 1 << 30;
export const PARTIAL = 1 << 31;
const HOLDER_MASK = (SLOT_MASK << HOLDER_SHIFT) | (TAG_MASK << TAG_SHIFT);

/** A live holder keeping one bucket locked longer than this is a bug or a hang: ETIMEDOUT. */
export const LOCK_TIMEOUT_MS = 2000;
/** Busy spins before the first sleep. */
const SPINS = 64;
/** Sleeps double from BACKOFF_MIN_MS up to BACKOFF_MAX_MS. */
const BACKOFF_MIN_MS = 0.01;
const BACKOFF_MAX_MS = 1;
/** Sleeps between two liveness probes of the holder (a probe is a syscall). */
const SLEEPS_PER_PROBE = 8;
/** Hard bound on the wait loop (the timeout normally ends it first). */
const MAX_SLEEPS = 1_000_000;

const sleeper = new Int32Array(new SharedArrayBuffer(4));

export const isLocked = (w: number): boolean => (w & HOLDER_MASK) !== 0;
export const isMigrated = (w: number): boolean => (w & MIGRATED) !== 0;
/** The user slot holding a locked word. */
export const holderSlot = (w: number): number => ((w >>> HOLDER_SHIFT) & SLOT_MASK) - 1;

/** The holder bits this thread writes into lock words of `region`. */
export function holderBits(region: Region): number {
  if (region.userSlot < 0) region.denyWrite(); // no slot: a read-only or inspection session
  return ((region.userSlot + 1) << HOLDER_SHIFT) | ((threadId & TAG_MASK) << TAG_SHIFT);
}

/** Sleeps `ms` without burning the CPU (works on the main thread too). */
export function pause(ms: number): void {
  Atomics.wait(sleeper, 0, 0, ms);
}

/**
 * Takes the lock word at words[i]; returns the word as it was before (an
 * unlocked form: version and migrated bit). Breaks the lock of a dead holder;
 * ETIMEDOUT when a live one holds it past LOCK_TIMEOUT_MS.
 */
export function lockWord(region: Region, words: Int32Array, i: number, me: number): number {
  for (let spin = 0; spin < SPINS; spin++) {
    const w = Atomics.load(words, i);
    if (!isLocked(w) && Atomics.compareExchange(words, i, w, w | me) === w) return w;
  }
  return lockSlow(region, words, i, me);
}

function lockSlow(region: Region, words: Int32Array, i: number, me: number): number {
  const started = performance.now();
  let sleepMs = BACKOFF_MIN_MS;
  for (let sleeps = 1; sleeps < MAX_SLEEPS; sleeps++) {
    pause(sleepMs);
    sleepMs = Math.min(BACKOFF_MAX_MS, sleepMs * 2);
    const w = Atomics.load(words, i);
    if (!isLocked(w)) {
      if (Atomics.compareExchange(words, i, w, w | me) === w) return w;
      continue;
    }
    if (sleeps % SLEEPS_PER_PROBE !== 0) continue;
    if (!region.slotAlive(holderSlot(w))) {
      // Dead holder: take the lock over as it stands (see the # Warning above).
      const free = w & ~HOLDER_MASK;
      if (Atomics.compareExchange(words, i, w, free | me) === w) return free;
    } else if (performance.now() - started > LOCK_TIMEOUT_MS) {
      throw new MorselError('ETIMEDOUT', `reference-count bucket lock held by user slot ${holderSlot(w)} for over ${LOCK_TIMEOUT_MS} ms`);
    }
  }
  throw new MorselError('ETIMEDOUT', `reference-count bucket lock not acquired after ${MAX_SLEEPS} waits`);
}

/** Releases a lock taken as `before` (from lockWord): bumps the version; sets the migrated bit (clearing partial) if asked, else keeps before's migrated and partial bits. */
export function unlockWord(words: Int32Array, i: number, before: number, migrated = false): void {
  const version = ((before & VERSION_MASK) + 1) & VERSION_MASK;
  Atomics.store(words, i, version | (migrated ? MIGRATED : before & (MIGRATED | PARTIAL)));
}

/**
 * Waits (bounded) until the lock word at words[i] is unlocked and returns it,
 * for lock-free readers (seqlock begin). A reader never breaks a lock: after
 * the bound it returns the locked word and the caller treats the read as racy
 * (retries, then falls back to taking the lock).
 */
export function readStable(words: Int32Array, i: number): number {
  let w = Atomics.load(words, i);
  for (let spin = 0; spin < SPINS && isLocked(w); spin++) w = Atomics.load(words, i);
  return w;
}
