/**
 * `morsel kv --workers 2`: two processes serve one cache in one region.
 * Real sockets from several clients (spread over both workers by the
 * cluster's round robin) hammer overlapping keys: a shared counter's incr
 * must lose no update (the stripe lock makes find + replace atomic across
 * processes), values of shared keys are never torn, and each client's own
 * keys read back what it last stored. The second test SIGKILLs a worker
 * (while another is known to serve) in the middle of that load, three
 * times: the other worker keeps serving (a lock the dead
 * one held is broken), and no acknowledged item is lost or corrupted.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { Memory } from '../src/memory.js';
import { openCache } from '../src/apps/kv/open.js';
import { hashKey } from '../src/apps/kv/store.js';
import { RawClient, endsGet, initRegion, oneLine, parseGet, rng, startKv, valueOf } from './kv-helpers.js';
import { tempDir } from './helpers.js';

const CLIENTS = 6;
const OPS_PER_CLIENT = 500;
/** The kill run: longer, so the primary's replacement workers start and serve between kills. */
const OPS_PER_CLIENT_KILLED = 2500;
const KILL_ROUNDS_MAX = 100;
/** Clients open a fresh connection this often, so the round robin also reaches replacement workers. */
const RECONNECT_EVERY_OPS = 150;
const SHARED_KEYS = 16;
const OWN_KEYS = 24;
const KILLS = 3;

function wellFormed(key: string, v: string): boolean {
  const m = /^([^:]+):(\d+):/.exec(v);
  return m !== null && m[1] === key && valueOf(key, Number(m[2]), v.length) === v;
}

interface Tally {
  incrAcked: number;
  /** incrs whose connection died before the reply: each may or may not have happened */
  incrUnsure: number;
  /** own key -> the values it may hold (one when acknowledged; two after a write cut by a kill) */
  own: Map<string, (string | null)[]>;
  opsByPid: Map<number, number>;
  reconnects: number;
}

const CONNECT_TRIES = 50;

/** A connection and the pid of the worker serving it; retried while a dying worker drops new connections. */
async function connect(port: number): Promise<{ c: RawClient; pid: number }> {
  for (let tries = 0; tries < CONNECT_TRIES; tries++) {
    const c = await RawClient.connect(port);
    c.send('stats\r\n');
    const m = /STAT pid (\d+)/.exec((await c.until(endsGet)).toString('latin1'));
    if (m) return { c, pid: Number(m[1]) };
    c.close();
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`no worker answered stats in ${CONNECT_TRIES} connections`);
}

/** One client: OPS_PER_CLIENT operations; reconnects when its worker dies (the request in flight becomes "unsure"). */
async function client(port: number, id: number, seed: number, ops: number, tally: Tally): Promise<void> {
  const rand = rng(seed);
  let { c, pid } = await connect(port);
  let ver = 0;
  try {
    for (let i = 0; i < ops; i++) {
      if (i > 0 && i % RECONNECT_EVERY_OPS === 0) {
        c.close();
        ({ c, pid } = await connect(port));
      }
      const r = rand();
      let req: string;
      let check: (reply: string) => void;
      let cut: () => void;
      let done: (b: Buffer) => boolean = (b) => b.includes('\r\n');
      if (r < 0.3) {
        req = 'incr ctr 1\r\n';
        check = (reply) => {
          assert.match(reply, /^\d+\r\n$/, `incr reply ${JSON.stringify(reply)}`);
          tally.incrAcked++;
        };
        cut = () => void tally.incrUnsure++;
      } else if (r < 0.55) {
        const key = `s${Math.floor(rand() * SHARED_KEYS)}`;
        const v = valueOf(key, ++ver * 100 + id, 1 + Math.floor(rand() * 3000));
        req = `set ${key} 0 0 ${v.length}\r\n${v}\r\n`;
        check = (reply) => assert.equal(reply, 'STORED\r\n');
        cut = () => {};
      } else if (r < 0.8) {
        const keys = Array.from({ length: 4 }, () => `s${Math.floor(rand() * SHARED_KEYS)}`);
        req = `get ${keys.join(' ')}\r\n`;
        done = endsGet;
        check = (reply) => {
          const got = parseGet(Buffer.from(reply, 'latin1'));
          assert.ok(got, `a well-formed get reply: ${JSON.stringify(reply.slice(0, 80))}`);
          for (const [k, v] of got) assert.ok(wellFormed(k, v), `shared key ${k} holds a torn value ${JSON.stringify(v.slice(0, 60))}`);
        };
        cut = () => {};
      } else {
        const key = `c${id}_${Math.floor(rand() * OWN_KEYS)}`;
        const v = valueOf(key, ++ver, 1 + Math.floor(rand() * 3000));
        const before = tally.own.get(key) ?? [null];
        req = `set ${key} 0 0 ${v.length}\r\n${v}\r\n`;
        check = (reply) => {
          assert.equal(reply, 'STORED\r\n');
          tally.own.set(key, [v]);
        };
        cut = () => void tally.own.set(key, [...before, v]);
      }
      c.send(req);
      const reply = (await c.until(done, 20_000)).toString('latin1');
      if (c.closed && !done(Buffer.from(reply, 'latin1'))) {
        cut(); // the worker died with this request in flight
        tally.reconnects++;
        ({ c, pid } = await connect(port));
        continue;
      }
      check(reply);
      tally.opsByPid.set(pid, (tally.opsByPid.get(pid) ?? 0) + 1);
    }
  } finally {
    c.close();
  }
}

/** After the load: the counter, and every own key, read as acknowledged (or as one of a cut write's states). */
async function verify(port: number, tally: Tally): Promise<number> {
  const { c } = await connect(port);
  try {
    c.send('get ctr\r\n');
    const ctr = Number(parseGet(await c.until(endsGet))?.get('ctr'));
    assert.ok(ctr >= tally.incrAcked && ctr <= tally.incrAcked + tally.incrUnsure, `counter ${ctr}: ${tally.incrAcked} acknowledged incrs (+ ${tally.incrUnsure} cut by a kill): an update was lost or doubled`);
    const keys = [...tally.own.keys()];
    c.send(`get ${keys.join(' ')}\r\n`);
    const got = parseGet(await c.until(endsGet, 10_000));
    assert.ok(got, 'a well-formed get of the own keys');
    for (const key of keys) {
      const have = got.get(key) ?? null;
      assert.ok(tally.own.get(key)!.includes(have), `own key ${key}: read ${JSON.stringify(have?.slice(0, 40))}, allowed ${JSON.stringify(tally.own.get(key)!.map((v) => v?.slice(0, 40)))}`);
    }
    return ctr;
  } finally {
    c.close();
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function run(kill: boolean): Promise<void> {
  const dir = tempDir('kv-workers-');
  const region = path.join(dir, 'r.bin');
  initRegion(region, '128MiB');
  const kv = await startKv(region, ['-m', '48', '--workers', '2']);
  try {
    const pids = /pids (\d+),(\d+)/.exec(kv.banner);
    assert.ok(pids, `the banner names both workers: ${kv.banner}`);
    const first = await RawClient.connect(kv.port);
    assert.equal(await oneLine(first, 'set ctr 0 0 1\r\n0\r\n'), 'STORED\r\n');
    first.close();
    const tally: Tally = { incrAcked: 0, incrUnsure: 0, own: new Map(), opsByPid: new Map(), reconnects: 0 };
    const seed = Number(process.env.KV_WORKERS_SEED ?? Date.now() % 1e9);
    const ops = kill ? OPS_PER_CLIENT_KILLED : OPS_PER_CLIENT;
    let loadDone = false;
    const load = Promise.all(Array.from({ length: CLIENTS }, (_, i) => client(kv.port, i, seed + i, ops, tally))).finally(() => void (loadDone = true));
    let killed = 0;
    if (kill) {
      const rand = rng(seed);
      for (let k = 0; k < KILL_ROUNDS_MAX && killed < KILLS && !loadDone; k++) {
        await new Promise((r) => setTimeout(r, 100 + Math.floor(rand() * 200)));
        // Only while another worker is known to serve: "the others keep serving" is what is tested.
        const live = [...tally.opsByPid.keys()].filter((p) => alive(p));
        if (live.length < 2) continue;
        process.kill(live[Math.floor(rand() * live.length)], 'SIGKILL');
        killed++;
      }
    }
    await load;
    const ctr = await verify(kv.port, tally);
    const servedBy = [...tally.opsByPid.entries()].filter(([, n]) => n > 0).length;
    assert.ok(servedBy >= 2, `both workers served requests: ${JSON.stringify([...tally.opsByPid])}`);
    if (kill) assert.ok(tally.reconnects > 0 && killed > 0, `kills cut connections (${killed} kills, ${tally.reconnects} reconnects)`);
    console.log(`# seed ${seed}: ${CLIENTS} clients x ${ops} ops over ${tally.opsByPid.size} worker pids, counter ${ctr} (${tally.incrUnsure} unsure), ${killed} kills, ${tally.reconnects} reconnects`);
    assert.equal(await kv.stop(), 0, 'clean exit on SIGTERM');
  } catch (e) {
    await kv.kill9();
    throw e;
  }
}

test('two workers hammering overlapping keys lose no update and tear no value', { timeout: 120_000 }, () => run(false));

test('SIGKILL of workers mid-load: the others keep serving, no acknowledged item lost or corrupted', { timeout: 120_000 }, () => run(true));

/** A child that opens the cache, takes the stripe lock of `key` (find holds it) and reports, then waits to be killed. */
const LOCK_HOLDER = `
const [memoryJs, openJs, storeJs, region, key] = process.argv.slice(2);
const { Memory } = await import(memoryJs);
const { openCache } = await import(openJs);
const { hashKey } = await import(storeJs);
const m = Memory.open(region, { mode: 'shared' });
const c = openCache(m, '/kv/default', 8);
c.mmu.enter();
const k = Buffer.from(key);
c.store.find(k, 0, k.length, hashKey(k, 0, k.length));
process.stdout.write('locked\\n');
setInterval(() => {}, 1000);
`;

test('a stripe lock held by a SIGKILLed process is broken by the next process that needs it', { timeout: 60_000 }, async () => {
  const dir = tempDir('kv-lockbreak-');
  const region = path.join(dir, 'r.bin');
  initRegion(region, '64MiB');
  const m = Memory.open(region, { mode: 'shared' });
  const cache = openCache(m, '/kv/default', 8);
  try {
    const script = path.join(dir, 'holder.mjs');
    fs.writeFileSync(script, LOCK_HOLDER);
    const mod = (rel: string): string => fileURLToPath(new URL(rel, import.meta.url));
    const child = spawn(process.execPath, [script, mod('../src/memory.js'), mod('../src/apps/kv/open.js'), mod('../src/apps/kv/store.js'), region, 'contended'], { stdio: ['ignore', 'pipe', 'inherit'] });
    const exited = new Promise((resolve) => child.once('exit', resolve));
    await new Promise<void>((resolve, reject) => {
      child.stdout!.on('data', (d: Buffer) => d.toString().includes('locked') && resolve());
      child.once('exit', (code) => reject(new Error(`lock holder exited (${code}) before taking the lock`)));
    });
    child.kill('SIGKILL');
    await exited;
    const k = Buffer.from('contended');
    const v = Buffer.from('value');
    cache.mmu.enter();
    try {
      const r = cache.store.store('set', k, 0, k.length, hashKey(k, 0, k.length), 0, 0, v, 0, v.length, 0, new Uint8Array(4096));
      assert.equal(r, 'STORED');
      assert.equal(cache.store.brokenLocks, 1, 'the dead holder\'s lock was broken, once');
    } finally {
      cache.store.unlockAll();
      cache.mmu.exit();
    }
  } finally {
    cache.close();
    m.close();
  }
});
