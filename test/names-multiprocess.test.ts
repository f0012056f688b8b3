// Names, handles and usage across processes (CLI invocations and children).
// The tests marked [membership] need the membership layer's real user slots
// and slotAlive (each process its own slot); the rest work on any build.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Memory } from '../src/memory.js';
import { MORSEL, runMorsel, tempDir } from './helpers.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const bin = MORSEL;
const dir = tempDir('morsel-names-');

const morsel = runMorsel;

const errCode = (r: { json: any }) => r.json?.error?.code;

test('CLI: create/ls/stat/write/read by path, mv, chmod, rm; --region from $MORSEL_REGION', () => {
  const region = path.join(dir, 'cli.region');
  assert.equal(morsel(['init', region, '--size', '64MiB']).status, 0);
  const env = { MORSEL_REGION: region };
  assert.equal(morsel(['mkdir', '/models'], { env }).status, 0);
  const c = morsel(['create', '/models/w', '--size', '50MiB', '--mode', '0640', '--json'], { env });
  assert.equal(c.status, 0, c.out + c.err);
  assert.match(c.json.handle, /^0x[0-9a-f]{16}@\d+$/);
  assert.equal(c.json.order, 2, '50 MiB needs an order-2 morsel');
  const ls = morsel(['ls', '-l', '/models', '--json'], { env });
  assert.deepEqual(ls.json.entries.map((e: any) => [e.name, e.kind, e.mode, e.sizeBytes]), [['w', 'morsel', '0640', 50 * 1024 * 1024]]);
  assert.match(morsel(['ls', '-l', '/models'], { env }).out, /^-rw-r----- \d+ \d+ +52428800 0x[0-9a-f]{16}@\d+ w$/m);
  assert.equal(morsel(['write', '/models/w', '--offset', '3000000'], { env, input: Buffer.from('hello names') }).status, 0);
  assert.equal(morsel(['read', '/models/w', '--offset', '3000000', '--length', '11'], { env }).out, 'hello names');
  const small = morsel(['create', '/models/s', '--size', '100', '--json'], { env });
  assert.equal(small.status, 0);
  morsel(['write', '/models/s'], { env, input: Buffer.from('0123456789') });
  const whole = morsel(['read', '/models/s'], { env });
  assert.equal(whole.raw.length, 100, 'read without --length reads the logical size');
  assert.equal(whole.raw.subarray(0, 10).toString(), '0123456789');
  const st = morsel(['stat', '/models/w', '--json'], { env }).json;
  assert.equal(st.kind, 'morsel');
  assert.equal(st.mode, '0640');
  assert.equal(st.users, 0);
  assert.equal(st.handle, c.json.handle);
  assert.equal(morsel(['mv', '/models/w', '/models/v'], { env }).status, 0);
  assert.equal(errCode(morsel(['stat', '/models/w', '--json'], { env })), 'ENOENT');
  assert.equal(morsel(['chmod', '0600', '/models/v'], { env }).status, 0);
  assert.equal(morsel(['stat', '/models/v', '--json'], { env }).json.mode, '0600');
  assert.equal(morsel(['read', c.json.handle, '--offset', '3000000', '--length', '5'], { env }).out, 'hello', 'a handle reads the same morsel');
  assert.equal(errCode(morsel(['read', c.json.handle.split('@')[0] + '@999', '--length', '1', '--json'], { env })), 'ESTALE');
  assert.equal(errCode(morsel(['rmdir', '/models', '--json'], { env })), 'ENOTEMPTY');
  assert.equal(errCode(morsel(['create', '/models/v', '--size', '1', '--json'], { env })), 'EEXIST');
  assert.equal(errCode(morsel(['create', '/nope/x', '--size', '1', '--json'], { env })), 'ENOENT');
  assert.equal(errCode(morsel(['create', '/models/' + 'x'.repeat(256), '--size', '1', '--json'], { env })), 'ENAMETOOLONG');
  assert.equal(errCode(morsel(['create', '/models/../x', '--size', '1', '--json'], { env })), 'EINVAL');
  assert.equal(errCode(morsel(['read', '/models', '--json'], { env })), 'EISDIR');
  assert.equal(morsel(['rm', '/models/v'], { env }).status, 0);
  assert.equal(morsel(['rm', '/models/s'], { env }).status, 0);
  assert.equal(morsel(['rmdir', '/models'], { env }).status, 0);
  const region2 = morsel(['stat', '--json'], { env }).json;
  assert.equal(region2.morsels, 0, 'every morsel destroyed with its name');
});

test('a stale handle after destroy + create of the same order: ESTALE in every command, never the new data', () => {
  const region = path.join(dir, 'stale.region');
  morsel(['init', region, '--size', '16MiB']);
  const env = { MORSEL_REGION: region };
  const old = morsel(['create', '/a', '--size', '4KiB', '--json'], { env }).json.handle as string;
  morsel(['write', '/a'], { env, input: Buffer.from('old') });
  assert.equal(morsel(['rm', '/a'], { env }).status, 0);
  const fresh = morsel(['create', '/b', '--size', '4KiB', '--json'], { env }).json.handle as string;
  morsel(['write', '/b'], { env, input: Buffer.from('new') });
  assert.equal(fresh.split('@')[0], old.split('@')[0], 'the raw ID was reused');
  assert.notEqual(fresh, old);
  for (const cmd of [['read', old, '--length', '3'], ['write', old], ['inspect', old], ['destroy', old]]) {
    const r = morsel([...cmd, '--json'], { env, input: Buffer.from('x') });
    assert.equal(errCode(r), 'ESTALE', `${cmd[0]}: ${r.out}`);
  }
  assert.equal(morsel(['read', '/b', '--length', '3'], { env }).out, 'new', 'the new morsel is untouched');
  assert.equal(errCode(morsel(['read', old.split('@')[0], '--length', '3', '--json'], { env })), undefined, 'a raw ID is the primitive level: it names whatever lives there');
});

test('CLI as another user: a path is opened with its mode checked (EACCES, nothing written), a raw ID is the primitive level', { skip: process.getuid?.() !== 0 ? 'needs root to run the CLI as nobody' : false }, () => {
  const sub = fs.mkdtempSync(path.join(dir, 'modes-'));
  for (const d of [dir, sub]) fs.chmodSync(d, 0o755);
  const region = path.join(sub, 'modes.region');
  morsel(['init', region, '--size', '16MiB']);
  fs.chmodSync(region, 0o666);
  const env = { MORSEL_REGION: region };
  const pub = morsel(['create', '/pub', '--size', '4KiB', '--mode', '0644', '--json'], { env }).json.handle as string;
  morsel(['write', '/pub'], { env, input: Buffer.from('root') });
  morsel(['create', '/open', '--size', '4KiB', '--mode', '0666'], { env });
  const asNobody = (args: string[], input?: Buffer) => {
    const r = spawnSync(process.execPath, [bin, ...args, '--json'], { input, uid: 65534, gid: 65534, env: { ...process.env, ...env } });
    return { status: r.status, json: JSON.parse(r.stdout.toString() || 'null') };
  };
  assert.equal(Buffer.from(asNobody(['read', '/pub', '--length', '4']).json.base64, 'base64').toString(), 'root', 'other: r--');
  const denied = asNobody(['write', '/pub'], Buffer.from('nope'));
  assert.equal(denied.json?.error?.code, 'EACCES', JSON.stringify(denied.json));
  assert.equal(denied.status, 4);
  assert.equal(morsel(['read', '/pub', '--length', '4'], { env }).out, 'root', 'nothing was written');
  assert.equal(asNobody(['write', '/open'], Buffer.from('mine')).json.written, 4, 'other: rw-');
  assert.equal(asNobody(['chmod', '0666', '/pub']).json?.error?.code, 'EPERM', 'only the owner or root changes a mode');
  assert.equal(asNobody(['write', pub.split('@')[0]], Buffer.from('raw!')).json.written, 4, 'a raw ID is the primitive: whoever can open the region file reaches its bytes');
});

test('Float32Array stored under a name in one process, read back in another', () => {
  const region = path.join(dir, 'f32.region');
  Memory.create(region, 16 * 1024 * 1024).close();
  const writer = spawnSync(process.execPath, [path.join(here, 'workers/names-f32.js'), region, 'write'], { encoding: 'utf8' });
  assert.equal(writer.status, 0, writer.stderr);
  const reader = spawnSync(process.execPath, [path.join(here, 'workers/names-f32.js'), region, 'read'], { encoding: 'utf8' });
  assert.equal(reader.status, 0, reader.stderr);
  assert.deepEqual(JSON.parse(reader.stdout), [0.5, 1.5, -2.25, 1e-3].map((x) => Math.fround(x)));
});

test('[membership] destroy in B while A maps: B gets EBUSY, rm defers, A keeps its data, A\'s unmap destroys', async () => {
  const region = path.join(dir, 'share.region');
  morsel(['init', region, '--size', '32MiB']);
  const env = { MORSEL_REGION: region };
  const h = morsel(['create', '/shared', '--size', '3MiB', '--mode', '0666', '--json'], { env }).json.handle as string;
  const child = spawn(process.execPath, [path.join(here, 'workers/names-holder.js'), region, '/shared'], { stdio: ['pipe', 'pipe', 'inherit'] });
  const lines: string[] = [];
  let waiter: (() => void) | null = null;
  child.stdout.setEncoding('utf8').on('data', (d: string) => {
    lines.push(...d.split('\n').filter(Boolean));
    waiter?.();
  });
  const next = async (): Promise<string> => {
    for (let i = 0; i < 300 && lines.length === 0; i++) await new Promise<void>((r) => ((waiter = r), setTimeout(r, 100)));
    return lines.shift() ?? 'timeout';
  };
  try {
    assert.equal(await next(), 'mapped');
    assert.equal(errCode(morsel(['destroy', '/shared', '--json'], { env })), 'EBUSY');
    assert.equal(errCode(morsel(['destroy', h, '--json'], { env })), 'EBUSY', 'raw destroy sees the other process\'s mapping');
    const rm = morsel(['rm', '/shared', '--json'], { env });
    assert.equal(rm.json.destroyed, false, 'deferred to the last user');
    child.stdin.write('check\n');
    assert.equal(await next(), 'intact');
  } finally {
    child.stdin.end();
    if (child.exitCode === null && child.signalCode === null) await new Promise((r) => child.once('exit', r));
  }
  assert.equal(child.exitCode, 0);
  assert.equal(errCode(morsel(['inspect', h, '--json'], { env })), 'ESTALE', 'A\'s unmap was the last use: destroyed');
});

test('[membership] wait/notify on an int32 of a named morsel across two processes', async () => {
  const region = path.join(dir, 'futex.region');
  const m = Memory.create(region, 16 * 1024 * 1024);
  try {
    m.names.close(m.names.create('/flag', { sizeBytes: 4096, mode: 0o666 }));
    const h = m.names.open('/flag', { write: true });
    const child = spawn(process.execPath, [path.join(here, 'workers/names-waiter-process.js'), region, '/flag'], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
    let woke = 0;
    for (let i = 0; i < 1000 && woke === 0; i++) {
      await new Promise((r) => setTimeout(r, 10));
      woke = m.names.notify(h, 64, 1); // > 0 only once the child sleeps on this very word
    }
    await new Promise((r) => child.once('exit', r));
    assert.equal(woke, 1);
    assert.equal(out.trim(), 'ok');
    m.names.close(h);
  } finally {
    m.close();
  }
});

test('[membership] SIGKILL during create/unlink: after reaping the dead slot, 0 orphaned morsels, 0 dangling names, 0 stuck counts', async () => {
  const region = path.join(dir, 'churn.region');
  const m = Memory.create(region, 64 * 1024 * 1024);
  const { reapDeadSlots } = await import('../src/space/user-slots.js');
  try {
    m.names.mkdir('/c', { mode: 0o777 });
    const KILLS = 12;
    for (let k = 0; k < KILLS; k++) {
      const child = spawn(process.execPath, [path.join(here, 'workers/names-churn.js'), region, String(k * 7919 + 1)], { stdio: ['ignore', 'pipe', 'inherit'] });
      await new Promise<void>((resolve) => child.stdout.once('data', () => resolve()));
      await new Promise((r) => setTimeout(r, 20 + ((k * 37) % 120)));
      child.kill('SIGKILL');
      await new Promise((r) => child.once('exit', r));
      assert.equal(child.signalCode, 'SIGKILL', 'the child was killed mid-loop, not failed');
      assert.equal(reapDeadSlots(m.morsels).slots, 1, 'the dead slot is reaped');
      m.names.reapPending();
      const named = m.names.list('/c');
      for (const { name, rec } of named) {
        const h = m.names.open(`/c/${name}`); // ESTALE would be a dangling name
        m.names.close(h);
        assert.equal(m.names.stat(`/c/${name}`).users, 0, 'no stuck count');
        void rec;
      }
      const live = m.morsels.list().length;
      if (live !== named.length) {
        const namedRoots = new Set(named.map((e) => Number((e.rec.id >> 12n) & 0xffffffffn)));
        for (const id of m.morsels.list()) {
          const root = Number((id >> 12n) & 0xffffffffn);
          if (!namedRoots.has(root)) console.log('# orphan', root, (m.morsels.words.load(root) & 3).toString(2), m.morsels.usage.total(root));
        }
      }
      assert.equal(live, named.length, `kill ${k}: every live morsel has a name (no orphan), every name a morsel`);
      // A create killed between recording its morsel word and registering leaves a top that still
      // looks live until the next recovery declares that word dead (Morsels.clearUnownedWords).
      const reserved = m.names.reservations.list().filter((r) => !r.stale && m.morsels.live.get(r.metaRoot) !== null);
      assert.equal(reserved.length, named.filter((e) => e.rec.fixedAddress !== null).length, 'one live reservation per fixed-address name');
    }
  } finally {
    m.close();
  }
  // The reaped slots left the region dirty: the next sole opener recovers, and then every top that is not stale is a name's.
  const r = Memory.open(region);
  try {
    assert.equal(r.report?.crashed, true);
    const fixedNames = r.names.list('/c').filter((e) => e.rec.fixedAddress !== null).length;
    assert.equal(r.names.reservations.list().filter((x) => !x.stale).length, fixedNames, 'after recovery: one live reservation per fixed-address name');
  } finally {
    r.close();
  }
});

test('names, their data and reservations survive a crash and the recovery that follows', () => {
  const region = path.join(dir, 'crash.region');
  const m = Memory.create(region, 32 * 1024 * 1024);
  m.names.mkdir('/keep');
  const h = m.names.create('/keep/a', { sizeBytes: 8192, fixedAddress: 2 ** 30 });
  m.names.write(h, 100, Buffer.from('survives'));
  m.names.close(h);
  m.abandon(); // as if SIGKILLed
  const r = Memory.open(region);
  try {
    assert.equal(r.report?.crashed, true);
    // allocate a lot after recovery: frames recovery wrongly freed would be reused and overwritten
    r.names.mkdir('/more');
    for (let i = 0; i < 200; i++) r.names.close(r.names.create(`/more/m${i}`, { sizeBytes: 4096 }));
    const g = r.names.open('/keep/a');
    assert.equal(Buffer.from(r.names.read(g, 100, 8)).toString(), 'survives');
    r.names.close(g);
    assert.equal(r.names.reservations.list().filter((x) => !x.stale).length, 1);
    assert.throws(() => r.names.create('/keep/b', { sizeBytes: 4096, fixedAddress: 2 ** 30 }), (e: unknown) => (e as { code?: string }).code === 'EEXIST');
  } finally {
    r.close();
  }
});

test('[membership] an unlink killed between marking PENDING and removing the name: the last close elsewhere keeps the named morsel; the sweep after the reap clears the flag', async () => {
  const region = path.join(dir, 'half-unlink.region');
  const m = Memory.create(region, 16 * 1024 * 1024);
  const { reapDeadSlots } = await import('../src/space/user-slots.js');
  const { decodeIdBits } = await import('../src/morsel/id.js');
  try {
    m.names.close(m.names.create('/kept', { sizeBytes: 4096, mode: 0o666 }));
    const h = m.names.open('/kept'); // a live user, open across the other process's death
    const root = decodeIdBits(h.id).rootFrame;
    const child = spawn(process.execPath, [path.join(here, 'workers/names-half-unlink.js'), region, '/kept'], { stdio: ['ignore', 'pipe', 'inherit'] });
    await new Promise<void>((resolve, reject) => {
      child.stdout.once('data', () => resolve());
      child.once('exit', (c) => reject(new Error(`child exited ${c} before marking`)));
    });
    child.kill('SIGKILL');
    if (child.exitCode === null && child.signalCode === null) await new Promise((r) => child.once('exit', r));
    m.names.close(h); // the last live use of a PENDING morsel whose name stands
    assert.equal(m.morsels.generationOf(root), h.generation, 'not destroyed: a dead process may have been unlinking it');
    assert.equal(reapDeadSlots(m.morsels).slots, 1);
    m.names.reapPending(); // named: the flag is cleared
    const again = m.names.open('/kept');
    m.names.close(again);
    assert.equal(m.morsels.generationOf(root), h.generation, 'still alive after its next last close: no longer PENDING');
    assert.equal(m.names.stat('/kept').stale, false);
  } finally {
    m.close();
  }
});

test('[membership] an unlink of an unused morsel SIGKILLed holding DYING: before the name goes, the reap keeps the morsel named; after, it is destroyed', async () => {
  const { reapDeadSlots } = await import('../src/space/user-slots.js');
  const { decodeIdBits } = await import('../src/morsel/id.js');
  const { CRASH_ENV, CRASH_MARK } = await import('../src/crash-point.js');
  for (const [point, named] of [['names:unlink-after-dying', true], ['names:unlink-after-unname', false]] as const) {
    const region = path.join(dir, `fast-unlink-${named}.region`);
    const m = Memory.create(region, 16 * 1024 * 1024);
    try {
      m.names.close(m.names.create('/x', { sizeBytes: 4096, mode: 0o666 }));
      const rec = m.names.ns.lookup('/x');
      const root = decodeIdBits(rec.id).rootFrame;
      const child = spawnSync(process.execPath, [path.join(here, 'workers/names-unlink.js'), region, '/x'], { env: { ...process.env, [CRASH_ENV]: `${point}:1` }, encoding: 'utf8' });
      assert.equal(child.signal, 'SIGKILL', `${point}: the child died at the point (${child.stderr})`);
      assert.ok(child.stderr.includes(`${CRASH_MARK} ${point}`), child.stderr);
      assert.equal(reapDeadSlots(m.morsels).slots, 1, 'the dead slot is reaped (its DYING cleared)');
      m.names.reapPending();
      if (named) {
        const h = m.names.open('/x'); // not ESTALE: the morsel lives
        m.names.close(h); // its last use: a PENDING flag left over would destroy it
        assert.equal(m.morsels.generationOf(root), rec.generation, `${point}: still alive, not PENDING`);
        assert.equal(m.morsels.words.load(root) & 3, 0, 'no flag left');
      } else {
        assert.throws(() => m.names.stat('/x'), (e: unknown) => (e as { code?: string }).code === 'ENOENT');
        assert.notEqual(m.morsels.generationOf(root), rec.generation, `${point}: the unnamed morsel was destroyed by the sweep`);
      }
      assert.equal(m.morsels.list().length, m.names.list('/').length, 'no orphan, no dangling name');
    } finally {
      m.close();
    }
  }
});
