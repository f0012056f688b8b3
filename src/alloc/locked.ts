/**
 * The baseline a user would otherwise write: free lists of frame numbers
 * (Int32Array stacks in a SharedArrayBuffer) behind one Atomics-based mutex.
 * Same alloc/free API as FrameAllocator for orders 0 and 9, shared by worker
 * threads through share()/fromShare(). It exists to be measured against.
 *
 * The order split: at creation, `hugeFraction` of the wholly allocatable
 * 2 MiB children (the highest ones) go to an order-9 list of 512-aligned
 * blocks; every other allocatable frame goes to the order-0 list. Blocks
 * never move between the lists (no splitting or merging), so an order-9
 * request can fail while order-0 memory is free and vice versa. That makes
 * the baseline simpler and faster than a real one, never slower.
 *
 * Layout of the shared buffer (int32 words):
 *   [0]        the mutex: 0 unlocked, 1 locked, 2 locked with waiters
 *              (alone on its 64-byte line)
 *   [16..23]   top0, top9, cap0, cap9, first, frameCount
 *   [32..)     order-0 stack (cap0 words), then order-9 stack (cap9 words)
 *   then       one state byte per frame: 0 free, 1 order-0 allocated,
 *              9 head of an allocated order-9 block (double-free detection)
 */
import { MorselError, assert } from '../errors.js';
import { type Frame } from '../units.js';
import { CHILD_FRAMES, firstAllocatableFrame } from '../physical/layout.js';
import type { Region } from '../physical/region.js';
import type { Order } from './llfree.js';
import { mutexLock, mutexUnlock } from '../sync/mutex.js';

const LOCK = 0;
const TOP0 = 16;
const TOP9 = 17;
const CAP0 = 18;
const CAP9 = 19;
const FIRST = 20;
const FRAME_COUNT = 21;
const STACKS = 32;

const STATE_FREE = 0;
const STATE_SMALL = 1;
const STATE_HUGE = 9;

export interface LockedShare {
  sab: SharedArrayBuffer;
}

export class LockedAllocator {
  private readonly w: Int32Array;
  private readonly state: Uint8Array;
  private readonly stack9: number;
  private readonly first: number;
  private readonly frameCount: number;

  private constructor(readonly sab: SharedArrayBuffer) {
    this.w = new Int32Array(sab);
    this.first = this.w[FIRST];
    this.frameCount = this.w[FRAME_COUNT];
    this.stack9 = STACKS + this.w[CAP0];
    const stateByte = (this.stack9 + this.w[CAP9]) * 4;
    this.state = new Uint8Array(sab, stateByte, this.frameCount);
  }

  /** A fresh allocator for `region`'s allocatable frames, all free. */
  static create(region: Region, opts: { hugeFraction?: number } = {}): LockedAllocator {
    const hugeFraction = opts.hugeFraction ?? 0.5;
    if (!(hugeFraction >= 0 && hugeFraction <= 1)) throw new MorselError('EINVAL', `hugeFraction ${hugeFraction} outside [0, 1]`);
    const frameCount = region.frameCount;
    const first = firstAllocatableFrame(frameCount);
    const firstWholeChild = Math.ceil(first / CHILD_FRAMES);
    const wholeChildren = Math.max(0, Math.floor(frameCount / CHILD_FRAMES) - firstWholeChild);
    const cap9 = Math.floor(wholeChildren * hugeFraction);
    const hugeStart = (firstWholeChild + wholeChildren - cap9) * CHILD_FRAMES; // huge blocks: [hugeStart, hugeEnd)
    const hugeEnd = hugeStart + cap9 * CHILD_FRAMES;
    const cap0 = frameCount - first - cap9 * CHILD_FRAMES;
    const sab = new SharedArrayBuffer((STACKS + cap0 + cap9) * 4 + frameCount);
    const w = new Int32Array(sab);
    w[CAP0] = cap0;
    w[CAP9] = cap9;
    w[FIRST] = first;
    w[FRAME_COUNT] = frameCount;
    // Push in descending order so pops hand out low frames first.
    let top0 = 0;
    for (let f = frameCount - 1; f >= first; f--) if (f < hugeStart || f >= hugeEnd) w[STACKS + top0++] = f;
    let top9 = 0;
    for (let f = hugeEnd - CHILD_FRAMES; f >= hugeStart; f -= CHILD_FRAMES) w[STACKS + cap0 + top9++] = f;
    assert(top0 === cap0 && top9 === cap9, 'every allocatable frame is on exactly one list');
    w[TOP0] = top0;
    w[TOP9] = top9;
    return new LockedAllocator(sab);
  }

  share(): LockedShare {
    return { sab: this.sab };
  }

  static fromShare(share: LockedShare): LockedAllocator {
    return new LockedAllocator(share.sab);
  }

  private lock(): void {
    mutexLock(this.w, LOCK);
  }

  private unlock(): void {
    mutexUnlock(this.w, LOCK);
  }

  // --- API ------------------------------------------------------------------

  alloc(order: Order = 0): Frame {
    if (order !== 0 && order !== 9) throw new MorselError('EINVAL', `unsupported order ${String(order)} (0 or 9)`);
    const w = this.w;
    let frame = -1;
    this.lock();
    // Plain accesses inside the critical section are race-free: the lock's
    // atomics order them (JS memory model: synchronizes-with).
    if (order === 0) {
      if (w[TOP0] > 0) {
        frame = w[STACKS + --w[TOP0]];
        this.state[frame] = STATE_SMALL;
      }
    } else if (w[TOP9] > 0) {
      frame = w[this.stack9 + --w[TOP9]];
      this.state[frame] = STATE_HUGE;
    }
    this.unlock();
    if (frame < 0) throw new MorselError('ENOSPC', `no free order-${order} frame on the locked list`);
    return frame as Frame;
  }

  free(frame: Frame, order: Order = 0): void {
    if (order !== 0 && order !== 9) throw new MorselError('EINVAL', `unsupported order ${String(order)} (0 or 9)`);
    if (!(Number.isInteger(frame) && frame >= this.first && frame < this.frameCount)) throw new MorselError('EINVAL', `frame ${frame} is outside the allocatable range`);
    if (order === 9 && frame % CHILD_FRAMES !== 0) throw new MorselError('EINVAL', `order-9 frame ${frame} is not 512-aligned`);
    const w = this.w;
    const want = order === 0 ? STATE_SMALL : STATE_HUGE;
    let ok = false;
    this.lock();
    if (this.state[frame] === want) {
      ok = true;
      this.state[frame] = STATE_FREE;
      if (order === 0) w[STACKS + w[TOP0]++] = frame;
      else w[this.stack9 + w[TOP9]++] = frame;
    }
    this.unlock();
    if (!ok) throw new MorselError('EINVAL', `frame ${frame} is not an allocated order-${order} frame (double free?)`);
  }

  isAllocated(frame: Frame): boolean {
    if (!(Number.isInteger(frame) && frame >= 0 && frame < this.frameCount)) throw new MorselError('EINVAL', `frame ${frame} outside the region`);
    if (frame < this.first) return true;
    const head = frame - (frame % CHILD_FRAMES);
    return Atomics.load(this.state, frame) === STATE_SMALL || (head >= this.first && Atomics.load(this.state, head) === STATE_HUGE);
  }

  freeFrames(): number {
    return Atomics.load(this.w, TOP0) + Atomics.load(this.w, TOP9) * CHILD_FRAMES;
  }

  totalAllocatable(): number {
    return this.frameCount - this.first;
  }

  /** Nothing is held per thread; present for API parity with FrameAllocator. */
  release(): void {}
}
