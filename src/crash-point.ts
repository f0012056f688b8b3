/**
 * Deterministic crash injection. Every multi-step persistent update calls
 * `crashPoint(name)` between two of its steps. Normally that is one
 * comparison. With MORSEL_CRASH_AT="name:k" in the environment, the k-th time
 * a thread passes point `name` the whole process dies by SIGKILL right there,
 * exactly like a random kill that happened to land in that window: no exit
 * handlers, no unwinding, and every store executed so far stays in the region.
 *
 * The crash-torture harness (src/recovery/torture) arms each point in turn so
 * that every window is exercised, not only the ones a random kill tends to
 * hit. Counting is per thread (each worker has its own module instance): "the
 * k-th hit in some thread" is deterministic enough to reach every window.
 */
import { writeSync } from 'node:fs';

/** The primitive layers' crash windows, named after the step that has just completed. */
const PRIMITIVE_CRASH_POINTS = [
  // morsel lifecycle (src/morsel/morsels.ts)
  'create:before-register', // root allocated and zeroed, not yet in the live table
  'createMeta:before-meta-page', // data root allocated, meta page not yet
  'createMeta:before-register', // meta page written, not yet in the live table
  'populate:before-link', // table/page allocated and zeroed, CAS not yet done
  'populate:lost-race', // CAS lost to another thread, own frame not yet freed
  'huge:before-link', // order-9 frame of a 2 MiB leaf allocated and zeroed, CAS not yet done
  'destroy:after-unregister', // gone from the live table, nothing freed yet
  'destroy:after-unlink', // one subtree entry cleared, its frame not yet freed
  'destroy:meta-after-clear-id', // meta page's data ID cleared, data root not yet freed
  'destroy:before-free-root', // subtree freed, root not yet
  // copy-on-write (src/morsel/cow.ts)
  'cow:before-link', // private (lazy) copy built, not yet linked
  'cow:after-link', // copy linked, the shared original's count not yet lowered
  'clone:after-capture', // a lazy copy holds its source's entries, not yet attached (a clone root, or a table a write copies)
  'clone:before-register', // clone root built (children shared), not yet in the live table
  // registry growth (src/morsel/registry.ts)
  'registry:before-link-table', // registry table allocated, not yet linked
  // address spaces (src/space/address-space.ts)
  'space:before-register', // space root allocated, not yet registered
  'space:before-link-table', // space table allocated, not yet linked
  'space:teardown-after-unlink', // space table unlinked, not yet freed
  // allocator (src/alloc/llfree.ts)
  'alloc:after-reserve', // tree reserved ({n, 0} -> {0, reserved}), frames held locally
  'alloc:after-counter', // child counter decremented (allocSmallBatch: a whole child's, {512} -> {0}), bit(s) not yet set
  'free:after-bit-clear', // bit cleared, counters not yet incremented
  'open:rebuild-counters', // part of the counters rebuilt at open
  // recovery itself (src/memory.ts, FrameAllocator.rebuildFrom)
  'recover:after-drop-spaces', // spaces root dropped, allocator not yet rebuilt
  'recover:rebuild-bitfields', // part of the bitfields rebuilt from reachability
] as const;

/**
 * The namespace's crash windows (src/manage/namespace.ts), a subset of
 * CRASH_POINTS: test/namespace-crash.test.ts arms each of these alone.
 */
export const NAMESPACE_CRASH_POINTS = [
  'names:before-link-table', // namespace table allocated and zeroed, not yet linked
  'names:after-count', // parent's child count raised, record not yet published
  'names:after-claim', // record claimed and written, not yet published
  'names:after-tomb', // name removed (tombstone), record not freed, parent count not lowered
  'names:rmdir-after-dying', // directory marked dying, its name not yet removed
  'names:rename-after-mark', // old name marked moving, new name not yet inserted
  'names:rename-after-pending', // new name inserted pending, rename not yet committed
  'names:rename-after-commit', // rename committed, old record not freed, new name still pending
  'names:update-after-swap', // new record published, old one not yet freed
  'names:free-after-seq', // record's sequence bumped (dead), its bit not yet cleared
] as const;

/** The name layer's crash windows: the namespace's and Names.unlink's (src/manage/names.ts), armed by the torture harness in its names child. */
export const NAME_CRASH_POINTS = [
  ...NAMESPACE_CRASH_POINTS,
  'names:unlink-after-dying', // an unused morsel marked DYING and PENDING, its name not yet removed
  'names:unlink-after-unname', // its name removed, the morsel not yet destroyed
] as const;

export type CrashPointName = (typeof PRIMITIVE_CRASH_POINTS)[number] | (typeof NAME_CRASH_POINTS)[number];
/** Every crash window: the torture harness must see each one fire. */
export const CRASH_POINTS: readonly CrashPointName[] = [...PRIMITIVE_CRASH_POINTS, ...NAME_CRASH_POINTS];
const ARMABLE: readonly string[] = CRASH_POINTS;

/** Points only reached while a crashed region is being recovered. */
export const RECOVERY_CRASH_POINTS: readonly CrashPointName[] = ['recover:after-drop-spaces', 'recover:rebuild-bitfields'];

export const CRASH_ENV = 'MORSEL_CRASH_AT';
/** The line a dying process writes to stderr, so the harness knows which point fired. */
export const CRASH_MARK = 'morsel-crash-point';

interface Armed {
  name: string;
  k: number;
}

function parseArmed(spec: string | undefined): Armed | null {
  if (spec === undefined || spec === '') return null;
  const m = /^([a-zA-Z:-]+):(\d+)$/.exec(spec);
  if (m === null || !ARMABLE.includes(m[1]) || Number(m[2]) < 1) {
    // A typo would silently never fire and make a torture run look better than it is.
    throw new Error(`${CRASH_ENV}=${spec}: expected <point>:<k> with k >= 1 and point one of ${ARMABLE.join(', ')}`);
  }
  return { name: m[1], k: Number(m[2]) };
}

const armed = parseArmed(process.env[CRASH_ENV]);
let hits = 0;

/** Dies by SIGKILL if this is the armed point's k-th hit in this thread. */
export function crashPoint(name: CrashPointName): void {
  if (armed === null || name !== armed.name) return;
  if (++hits < armed.k) return;
  try {
    writeSync(2, `${CRASH_MARK} ${name}:${hits}\n`);
  } catch {
    // stderr closed: die anyway
  }
  process.kill(process.pid, 'SIGKILL');
}
