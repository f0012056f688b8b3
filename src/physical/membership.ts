/**
 * Who uses a region file: membership bound to the FILE, not its path.
 *
 * Every user holds an OFD lock (open-file-description lock, see mmap.cc) on
 * the region file. The kernel keeps these locks with the open file itself, so
 * a symlink or hard link reaches the same locks, two opens in one process
 * conflict like two processes, and the kernel drops a dead process's locks:
 * "is anyone else alive" needs no pid guessing. Lock bytes of the file:
 *
 *   MEMBER_BYTE   shared by every read-write user; exclusive for the first
 *                 user while it recovers, for the last user while it marks the
 *                 region clean, and for exclusive sessions (`init --force`,
 *                 `check --repair`)
 *   1 + i         exclusive by the owner of user slot i (slotByte)
 *   GATE_BYTE     exclusive, held for a few microseconds: serializes the
 *                 open decision ("am I the first?") with the close decision
 *                 ("am I the last?"), so a newcomer can never see the state a
 *                 leaving user has not yet marked clean as "crashed"
 *   READERS_BYTE  shared by read-only users (`stat`, `ls`, `check`); they
 *                 never block recovery (they never write and report what they
 *                 see), but exclusive sessions wait for none of them: EBUSY
 *
 * Opening (read-write): under the gate, try MEMBER exclusive; got it: we are
 * alone (recover if the state says so, then downgrade to shared). Else take
 * MEMBER shared and join. Neither (someone holds it exclusively: recovery or
 * a repair runs): leave the gate, sleep, retry, bounded by OPEN_RETRIES.
 * Closing: under the gate, try to convert our shared MEMBER lock to
 * exclusive; success means no other user is left: mark clean.
 *
 * Locks must be dropped explicitly before the fd is closed: the mapping holds
 * a reference to the open file description, which keeps its locks alive
 * until the mapping is garbage-collected.
 */
import * as fs from 'node:fs';
import { MorselError } from '../errors.js';
import { USER_SLOTS } from './layout.js';
import { EXCLUSIVE, SHARED, UNLOCK, lockByte, lockConflicts } from './native.js';

export type OpenMode = 'shared' | 'exclusive' | 'readonly';

export const MEMBER_BYTE = 0;
export const GATE_BYTE = 1 + USER_SLOTS;
export const READERS_BYTE = 2 + USER_SLOTS;
/** Attempts x RETRY_SLEEP_MS to join while another process holds the region exclusively. */
const OPEN_RETRIES = 10_000;
const RETRY_SLEEP_MS = 1;
const sleeper = new Int32Array(new SharedArrayBuffer(4));

/** The lock byte owning user slot `slot`. */
export function slotByte(slot: number): number {
  return 1 + slot;
}

export class Membership {
  private open = true;

  private constructor(
    readonly fd: number,
    readonly path: string,
    private modeNow: OpenMode,
    /** MEMBER_BYTE held exclusively (first user before downgrade, or an exclusive session) */
    private aloneNow: boolean,
  ) {}

  get mode(): OpenMode {
    return this.modeNow;
  }

  get alone(): boolean {
    return this.aloneNow;
  }

  /** Joins the users of the file behind `fd` (opened O_RDWR, or O_RDONLY for 'readonly'). EBUSY when it cannot. */
  static join(fd: number, path: string, mode: OpenMode): Membership {
    if (mode === 'readonly') {
      for (let attempt = 0; attempt < OPEN_RETRIES; attempt++) {
        if (lockByte(fd, READERS_BYTE, SHARED)) return new Membership(fd, path, mode, false);
        Atomics.wait(sleeper, 0, 0, RETRY_SLEEP_MS);
      }
      throw new MorselError('EBUSY', `${path} is held exclusively (repair or init --force) by another process`);
    }
    if (mode === 'exclusive') {
      const got = withGate(fd, () => {
        if (!lockByte(fd, MEMBER_BYTE, EXCLUSIVE)) return 'in use by another process';
        if (lockByte(fd, READERS_BYTE, EXCLUSIVE)) return null;
        lockByte(fd, MEMBER_BYTE, UNLOCK);
        return 'being read by another process';
      });
      if (got !== null) throw new MorselError('EBUSY', `${path} is ${got}`);
      return new Membership(fd, path, mode, true);
    }
    for (let attempt = 0; attempt < OPEN_RETRIES; attempt++) {
      const alone = withGate(fd, () => (lockByte(fd, MEMBER_BYTE, EXCLUSIVE) ? true : lockByte(fd, MEMBER_BYTE, SHARED) ? false : null));
      if (alone !== null) return new Membership(fd, path, mode, alone);
      Atomics.wait(sleeper, 0, 0, RETRY_SLEEP_MS);
    }
    throw new MorselError('EBUSY', `${path} stayed held exclusively (recovery or repair) for ${(OPEN_RETRIES * RETRY_SLEEP_MS) / 1000} s`);
  }

  /** The first user, done recovering, lets others join: MEMBER exclusive -> shared in one step. */
  downgrade(): void {
    if (!this.aloneNow) return;
    if (this.modeNow === 'exclusive') lockByte(this.fd, READERS_BYTE, UNLOCK);
    lockByte(this.fd, MEMBER_BYTE, SHARED);
    this.aloneNow = false;
    this.modeNow = 'shared';
  }

  /** Whether some other read-write user or exclusive session holds the file (a probe). */
  othersUsing(): boolean {
    return lockConflicts(this.fd, MEMBER_BYTE, EXCLUSIVE);
  }

  /** Takes user slot `slot`'s lock; false if another holder has it. */
  tryLockSlot(slot: number): boolean {
    return lockByte(this.fd, slotByte(slot), EXCLUSIVE);
  }

  unlockSlot(slot: number): void {
    lockByte(this.fd, slotByte(slot), UNLOCK);
  }

  /**
   * Leaves: `onLast` runs if this was the last read-write user (MEMBER then
   * held exclusively, under the gate, so no newcomer decides meanwhile).
   * Read-only users never run it. Closes the fd.
   */
  leave(onLast: () => void): void {
    if (!this.open) return;
    try {
      if (this.modeNow === 'readonly') lockByte(this.fd, READERS_BYTE, UNLOCK);
      else if (this.aloneNow) {
        onLast();
      } else {
        withGate(this.fd, () => {
          if (lockByte(this.fd, MEMBER_BYTE, EXCLUSIVE)) onLast();
          lockByte(this.fd, MEMBER_BYTE, UNLOCK);
        });
      }
    } finally {
      this.abandon();
    }
  }

  /** Drops every lock and the fd, exactly as the kernel does when the process dies. */
  abandon(): void {
    if (!this.open) return;
    this.open = false;
    for (let byte = MEMBER_BYTE; byte <= READERS_BYTE; byte++) lockByte(this.fd, byte, UNLOCK);
    fs.closeSync(this.fd);
  }
}

/**
 * Runs `fn` holding the gate. The blocking wait is bounded by the holder's
 * critical section (a few lock calls and, for a last user, marking the
 * superblock clean), and a dead holder's gate is dropped by the kernel.
 */
function withGate<T>(fd: number, fn: () => T): T {
  lockByte(fd, GATE_BYTE, EXCLUSIVE, true);
  try {
    return fn();
  } finally {
    lockByte(fd, GATE_BYTE, UNLOCK);
  }
}
