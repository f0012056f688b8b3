// Region membership bound to the file (OFD locks): users, links, exclusive
// sessions, dead users' slots, read-only opens. Multi-process throughout.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fork, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Memory } from '../src/memory.js';
import { isMorselError } from '../src/errors.js';
import { USER_SLOTS } from '../src/physical/layout.js';
import { STATE_CLEAN, STATE_DIRTY } from '../src/physical/superblock.js';
import { runCheck } from '../src/cli/check.js';
import { checkRegion } from '../src/recovery/check.js';
import { reapDeadSlots } from '../src/space/user-slots.js';
import { MiB } from '../src/units.js';
import { tempDir } from './helpers.js';

const dir = tempDir('morsel-membership-');
let seq = 0;
const fresh = (): string => path.join(dir, `r${seq++}.region`);
const sha = (f: string): string => crypto.createHash('sha256').update(fs.readFileSync(f)).digest('hex');
const code = (c: string) => (e: unknown) => isMorselError(e, c as never);
const dist = (rel: string): string => fileURLToPath(new URL(rel, import.meta.url));
const bin = dist('../../bin/morsel.js');

interface UserMsg {
  id: string;
  report: { crashed: boolean; joined?: boolean };
  slot: number;
}

async function startUser(file: string): Promise<{ child: ChildProcess } & UserMsg> {
  const child = fork(dist('./workers/region-user.js'), [file], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const msg = await new Promise<UserMsg>((res, rej) => child.once('message', res as never).once('exit', (c) => rej(new Error(`child exited ${c}`))));
  return { child, ...msg };
}

const exited = (c: ChildProcess): Promise<unknown> => new Promise((r) => (c.exitCode !== null || c.signalCode !== null ? r(null) : c.once('exit', r)));

/** A fresh region whose live-morsel table exists (its tables persist once made, so frame counts compare from here). */
function created(sizeBytes: number): string {
  const file = fresh();
  const m = Memory.create(file, sizeBytes);
  m.morsels.destroy(m.morsels.create(0));
  m.close();
  return file;
}

/** Free frames of a region opened alone (no user holds anything). */
function freeWhenAlone(file: string): number {
  const m = Memory.open(file, { mode: 'exclusive' });
  try {
    return m.alloc.freeFrames();
  } finally {
    m.close();
  }
}

test('two processes open and close one region 10,000 times: never a recovery, no double free', async () => {
  const file = created(8 * MiB);
  const free = freeWhenAlone(file);
  const rounds = 5_000; // per process; ~2 s each here
  const run = (): Promise<{ recoveries: number; joined: number }> =>
    new Promise((res, rej) => {
      const c = spawn(process.execPath, [dist('./workers/open-close.js'), file, String(rounds)], { stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      let err = '';
      c.stdout.on('data', (d) => (out += d));
      c.stderr.on('data', (d) => (err += d));
      c.on('exit', (status) => (status === 0 ? res(JSON.parse(out)) : rej(new Error(`child exited ${status}: ${err}`))));
    });
  const results = await Promise.all([run(), run()]);
  for (const r of results) assert.equal(r.recoveries, 0, 'no open ever found the region crashed');
  assert.ok(results.some((r) => r.joined > 0), 'the two processes did overlap');
  const m = Memory.open(file);
  assert.equal(m.report?.crashed, false, 'the last to leave marked it clean');
  const report = checkRegion(m);
  assert.equal(report.ok, true, JSON.stringify(report.problems));
  assert.equal(report.lostFrames, 0);
  m.close();
  assert.equal(freeWhenAlone(file), free, 'every frame came back');
});

test('a symlink and a hard link reach the same locks: no recovery under a live user, no exclusive session', async () => {
  const file = fresh();
  Memory.create(file, 8 * MiB).close();
  const soft = file + '.soft';
  const hard = file + '.hard';
  fs.symlinkSync(file, soft);
  fs.linkSync(file, hard);
  const a = await startUser(file);
  try {
    for (const link of [soft, hard]) {
      const m = Memory.open(link);
      assert.equal(m.report?.crashed, false, `${link}: no recovery`);
      assert.equal(m.report?.joined, true, `${link}: joined the live user`);
      assert.notEqual(m.region.userSlot, a.slot);
      assert.ok(m.region.slotAlive(a.slot), "the other process's slot is alive");
      m.close();
      assert.throws(() => Memory.open(link, { mode: 'exclusive' }), code('EBUSY'));
    }
  } finally {
    a.child.send('close');
    await exited(a.child);
  }
  const again = Memory.open(hard);
  assert.equal(again.report?.crashed, false, 'the user left it clean');
  again.close();
});

test('check --repair and init --force on a region in use: EBUSY, nothing changed', async () => {
  const file = fresh();
  Memory.create(file, 8 * MiB).close();
  const a = await startUser(file);
  try {
    const before = sha(file);
    assert.throws(() => runCheck(file, { repair: true, apply: true }), code('EBUSY'));
    assert.throws(() => Memory.create(file, 8 * MiB, { force: true }), code('EBUSY'));
    for (const args of [['check', '--region', file, '--repair'], ['init', file, '--size', '4MiB', '--force']]) {
      const r = spawnSync(process.execPath, [bin, ...args, '--json'], { encoding: 'utf8' });
      assert.notEqual(r.status, 0);
      assert.equal(JSON.parse(r.stdout).error.code, 'EBUSY', r.stdout + r.stderr);
    }
    assert.equal(sha(file), before, 'the live region is untouched');
    // A plain check beside the live user: read-only; the user's slot tables are seen (no lost
    // frames). Its tree reservation still reads as TREE_RESERVED: check's part (src/recovery).
    const r = runCheck(file, { repair: false, apply: false });
    assert.deepEqual(r.problems, []);
    assert.equal(r.lostFrames, 0);
    assert.equal(sha(file), before);
    // A read-only user alone is enough to refuse an exclusive session too.
    a.child.send('close');
    await exited(a.child);
    const reader = Memory.open(file, { mode: 'readonly' });
    assert.throws(() => Memory.create(file, 8 * MiB, { force: true }), code('EBUSY'));
    reader.close();
  } finally {
    a.child.kill();
  }
  assert.equal(Memory.create(file, 4 * MiB, { force: true }).region.frameCount, 1024, 'alone: --force goes ahead');
});

test("a SIGKILLed user's slot and spaces are reclaimed by a survivor; the next exclusive open recovers the rest", async () => {
  const file = created(16 * MiB);
  const free = freeWhenAlone(file);
  const survivor = Memory.open(file);
  const a = await startUser(file);
  assert.equal(a.report.joined, true);
  const freeBefore = survivor.alloc.freeFrames();
  assert.ok(survivor.region.slotAlive(a.slot));
  assert.equal(reapDeadSlots(survivor.morsels).slots, 0, 'a live user is never reaped');
  a.child.kill('SIGKILL');
  await exited(a.child);
  assert.equal(survivor.region.slotAlive(a.slot), false, 'the kernel dropped its lock');
  assert.ok(survivor.region.slotOccupied(a.slot));
  const reaped = reapDeadSlots(survivor.morsels);
  assert.deepEqual(reaped, { slots: 1, spaces: 1 });
  assert.equal(survivor.region.slotOccupied(a.slot), false, 'record cleared');
  assert.equal(survivor.region.state, STATE_DIRTY, 'dirty: its in-flight frames wait for a recovery');
  survivor.alloc.release();
  // Its space root, inner tables and registry tables came back; its morsel (registered) stays.
  assert.ok(survivor.alloc.freeFrames() > freeBefore, 'the dead space tables were freed');
  assert.equal(survivor.morsels.list().length, 1);
  // A newcomer finds nothing left to reap and can claim the freed slot.
  const b = Memory.open(file);
  assert.equal(b.report?.reapedSlots, 0);
  b.close();
  survivor.close(); // dirty: not marked clean
  const next = Memory.open(file);
  assert.equal(next.report?.crashed, true, 'recovered at the next exclusive open');
  const report = checkRegion(next);
  assert.equal(report.ok, true, JSON.stringify(report.problems));
  assert.equal(report.lostFrames, 0);
  next.morsels.destroy(next.morsels.list()[0]);
  next.close();
  assert.equal(freeWhenAlone(file), free, 'frames are right after recovery: only the destroyed morsel was used');
});

test('a newcomer reaps a dead user on open; exit without close() closes cleanly', async () => {
  const file = fresh();
  Memory.create(file, 8 * MiB).close();
  const a = await startUser(file);
  const b = await startUser(file);
  a.child.kill('SIGKILL');
  await exited(a.child);
  const m = Memory.open(file);
  assert.equal(m.report?.joined, true);
  assert.equal(m.report?.reapedSlots, 1);
  assert.equal(m.report?.reapedSpaces, 1);
  m.close();
  // b leaves through process.exit without close(): its spaces and slot go, nothing reads as a crash.
  b.child.send('exit');
  await exited(b.child);
  const again = Memory.open(file, { mode: 'exclusive' });
  // dirty (a died while b stayed) but b's own slot is empty
  assert.equal(again.report?.crashed, true);
  assert.equal(again.report?.reapedSlots, 0, "b's exit hook released its slot");
  again.close();
  const c = await startUser(file);
  c.child.send('exit');
  await exited(c.child);
  const last = Memory.open(file, { mode: 'readonly' });
  assert.equal(last.region.state, STATE_CLEAN, 'a lone user that exits without close() leaves it clean');
  for (let s = 0; s < USER_SLOTS; s++) assert.equal(last.region.slotOccupied(s), false);
  last.close();
});

test('read-only open of a crashed region: recovery pending, every write EACCES, not one byte changed', async () => {
  const file = fresh();
  Memory.create(file, 8 * MiB).close();
  const a = await startUser(file);
  a.child.kill('SIGKILL');
  await exited(a.child);
  const before = sha(file);
  const m = Memory.open(file, { mode: 'readonly' });
  assert.equal(m.report?.crashed, true);
  assert.equal(m.report?.readonly, true);
  assert.equal(m.recoveryPending, true);
  assert.equal(m.morsels.list().length, 1, 'reads work');
  const id = m.morsels.list()[0];
  assert.throws(() => m.morsels.create(0), code('EACCES'));
  assert.throws(() => m.morsels.destroy(id), code('EACCES'));
  assert.throws(() => m.createSpace(), code('EACCES'));
  assert.throws(() => m.alloc.alloc(0), code('EACCES'));
  assert.throws(() => m.region.zeroFrame(300 as never), code('EACCES'));
  assert.equal(reapDeadSlots(m.morsels).slots, 0, 'a reader never reaps');
  const r = checkRegion(m);
  assert.equal(r.crashed, true);
  m.close();
  assert.equal(sha(file), before, 'not one byte changed');
  // the CLI's stat and check are read-only too
  for (const args of [['check', '--region', file], ['stat', '--region', file]]) {
    spawnSync(process.execPath, [bin, ...args, '--json'], { encoding: 'utf8' });
    assert.equal(sha(file), before, `${args[0]} changed nothing`);
  }
  const rec = Memory.open(file);
  assert.equal(rec.report?.crashed, true, 'the next read-write open recovers');
  rec.close();
});

test('a region file the user can only read opens read-only (run as nobody)', { skip: process.getuid?.() !== 0 ? 'needs root to run a child as nobody' : false }, () => {
  const sub = fs.mkdtempSync(path.join(dir, 'ro-'));
  for (const d of [dir, sub]) fs.chmodSync(d, 0o755);
  const file = path.join(sub, 'r.region');
  Memory.create(file, 8 * MiB).close();
  fs.chmodSync(file, 0o644);
  const before = sha(file);
  const src = `import { Memory } from ${JSON.stringify(dist('../src/memory.js'))};
    const m = Memory.open(${JSON.stringify(file)});
    const out = { report: m.report, writable: m.region.writable, errors: [] };
    for (const f of [() => m.morsels.create(0), () => m.createSpace(), () => m.alloc.free(400)]) {
      try { f(); out.errors.push('none'); } catch (e) { out.errors.push(e.code); }
    }
    try { Memory.open(${JSON.stringify(file)}, { mode: 'shared' }); } catch (e) { out.explicit = e.code; }
    m.close();
    process.stdout.write(JSON.stringify(out));`;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', src], { encoding: 'utf8', uid: 65534, gid: 65534 });
  assert.equal(r.status, 0, r.stderr);
  const out = JSON.parse(r.stdout);
  assert.equal(out.report.readonly, true);
  assert.equal(out.writable, false);
  assert.deepEqual(out.errors, ['EACCES', 'EACCES', 'EACCES']);
  assert.equal(out.explicit, 'EACCES', 'an explicit read-write mode is refused, not downgraded');
  assert.equal(sha(file), before);
});

test('two opens in one process are two users (OFD locks belong to the open file, not the process)', () => {
  const file = fresh();
  const a = Memory.create(file, 8 * MiB);
  const b = Memory.open(file);
  assert.equal(b.report?.joined, true);
  assert.notEqual(a.region.userSlot, b.region.userSlot);
  assert.ok(a.region.slotAlive(b.region.userSlot) && b.region.slotAlive(a.region.userSlot));
  const space = b.createSpace();
  space.map(a.morsels.create(0));
  a.close();
  assert.equal(b.region.state !== STATE_CLEAN, true, 'not the last user: still open');
  b[Symbol.dispose](); // what `using` calls: close(), which destroys its space
  assert.throws(() => b.close(), (e: unknown) => (e as { code?: string }).code === 'EBADF'); // a second close is misuse
  const c = Memory.open(file, { mode: 'exclusive' });
  assert.equal(c.report?.crashed, false);
  c.close();
});

test('users SIGKILLed at random moments while another keeps opening and closing: never an error, nothing lost', async () => {
  const file = created(8 * MiB);
  const free = freeWhenAlone(file);
  const start = (rounds: number): { c: ChildProcess; done: Promise<{ status: number | null; signal: string | null; err: string }> } => {
    const c = spawn(process.execPath, [dist('./workers/open-close.js'), file, String(rounds)], { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    c.stderr!.on('data', (d) => (err += d));
    return { c, done: new Promise((res) => c.on('exit', (status, signal) => res({ status, signal, err }))) };
  };
  const steady = start(6_000);
  let seed = 7;
  const rand = (): number => ((seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0) / 2 ** 32);
  for (let kill = 0; kill < 8; kill++) {
    const victim = start(1_000_000);
    await new Promise((r) => setTimeout(r, 100 + rand() * 200)); // node starts in ~80 ms: most die mid-loop
    victim.c.kill('SIGKILL');
    const v = await victim.done;
    assert.equal(v.signal, 'SIGKILL', `the victim failed before its kill: ${v.err}`);
  }
  assert.equal(steady.c.exitCode, null, 'the steady user was still at it through every kill');
  const s = await steady.done;
  assert.equal(s.status, 0, `the steady user never saw an error: ${s.err}`);
  const m = Memory.open(file, { mode: 'exclusive' });
  const report = checkRegion(m);
  assert.equal(report.ok, true, JSON.stringify(report.problems));
  assert.equal(report.lostFrames, 0);
  // A victim's acknowledged create (killed before its destroy) is a live morsel, as it must be.
  for (const id of m.morsels.list()) m.morsels.destroy(id);
  m.close();
  assert.equal(freeWhenAlone(file), free, 'every frame came back');
});
