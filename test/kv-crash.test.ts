/**
 * Crash consistency of the kv server: a client writes (set, append, delete,
 * incr) one request at a time while the server is SIGKILLed at a random
 * moment; the restarted server must answer every acknowledged write, and
 * the one request in flight may show either its old or its new state,
 * never a torn value. KV_CRASH_CYCLES=100 runs the long version
 * (`KV_CRASH_CYCLES=100 node --test dist/test/kv-crash.test.js`).
 * At the end `morsel check` verifies the region's invariants.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { MORSEL_BIN, RawClient, endsGet, initRegion, parseGet, rng, startKv, valueOf } from './kv-helpers.js';
import { tempDir } from './helpers.js';

const CYCLES = Number(process.env.KV_CRASH_CYCLES ?? 8);

/**
 * strict: -m large enough that nothing is ever evicted: an absent
 * acknowledged key is a lost write. Not strict: a small -m, so writes also
 * evict; then "absent" is allowed for a key, a wrong value never.
 */
interface Shape {
  memMiB: number;
  keys: number;
  maxLen: number;
  strict: boolean;
}
const STRICT: Shape = { memMiB: 48, keys: 300, maxLen: 300, strict: true };
const EVICTING: Shape = { memMiB: 2, keys: 4000, maxLen: 3000, strict: false };

/** The states a key may be in after a restart: acknowledged state, plus the in-flight request's result. */
interface Model {
  acked: Map<string, string | null>;
  pending: { key: string; after: string | null } | null;
}

async function writeUntilKilled(port: number, shape: Shape, model: Model, rand: () => number, killAtMs: number, kill: () => Promise<void>): Promise<number> {
  const c = await RawClient.connect(port);
  let acked = 0;
  const killer = new Promise<void>((resolve) => setTimeout(() => void kill().then(resolve), killAtMs));
  let ver = Math.floor(rand() * 1e6);
  try {
    for (let i = 0; i < 1_000_000 && !c.closed; i++) {
      const key = `k${Math.floor(rand() * shape.keys)}`;
      const before = model.acked.get(key) ?? null;
      const r = rand();
      let req: string;
      let after: string | null;
      let ok: string;
      if (r < 0.7 || before === null) {
        const v = valueOf(key, ++ver, 1 + Math.floor(rand() * (rand() < 0.1 ? 20000 : shape.maxLen)));
        req = `set ${key} 0 0 ${v.length}\r\n${v}\r\n`;
        after = v;
        ok = 'STORED\r\n';
      } else if (r < 0.8) {
        req = `delete ${key}\r\n`;
        after = null;
        ok = 'DELETED\r\n';
      } else {
        const tail = `+${++ver}`;
        req = `append ${key} 0 0 ${tail.length}\r\n${tail}\r\n`;
        after = before + tail;
        ok = 'STORED\r\n';
      }
      model.pending = { key, after };
      c.send(req);
      const reply = (await c.until((b) => b.includes('\r\n'))).toString('latin1');
      if (reply === '') break; // killed
      if (reply === ok) {
        model.acked.set(key, after);
        acked++;
      } else if (reply === 'NOT_FOUND\r\n' || reply === 'NOT_STORED\r\n') {
        model.acked.set(key, null); // evicted meanwhile: the key is absent, and the request changed nothing
      } else {
        assert.fail(`unexpected reply ${JSON.stringify(reply)} to ${JSON.stringify(req.slice(0, 60))}`);
      }
      model.pending = null;
    }
  } finally {
    c.close();
    await killer;
  }
  return acked;
}

/** Every key reads as acknowledged (or in-flight) state; evicted keys may be absent, but never wrong. */
async function verify(port: number, shape: Shape, model: Model): Promise<{ present: number; evicted: number }> {
  const c = await RawClient.connect(port);
  try {
    const keys = Array.from({ length: shape.keys }, (_, i) => `k${i}`);
    c.send(`get ${keys.join(' ')}\r\n`);
    const got = parseGet(await c.until(endsGet, 10_000));
    assert.ok(got, 'a well-formed get reply after restart');
    let present = 0;
    let evicted = 0;
    for (const key of keys) {
      const want = model.acked.get(key) ?? null;
      const have: string | null = got.get(key) ?? null;
      const inFlight = model.pending?.key === key ? model.pending.after : undefined;
      if (have === want || (inFlight !== undefined && have === inFlight)) {
        if (have !== null) present++;
        model.acked.set(key, have);
        continue;
      }
      // Not what was acknowledged: only eviction (absent) is allowed, and only when the shape evicts.
      assert.ok(!shape.strict, `key ${key}: acknowledged ${JSON.stringify(want?.slice(0, 40))} but read ${JSON.stringify(have?.slice(0, 40))} (nothing is evicted at -m ${shape.memMiB})`);
      assert.equal(have, null, `key ${key}: read ${JSON.stringify(have?.slice(0, 40))}, acknowledged ${JSON.stringify(want?.slice(0, 40))}`);
      evicted++;
      model.acked.set(key, null);
    }
    model.pending = null;
    return { present, evicted };
  } finally {
    c.close();
  }
}

for (const shape of [STRICT, EVICTING]) {
  const what = shape.strict ? 'every acknowledged write survives' : 'under eviction, no key ever reads a wrong or torn value';
  test(`SIGKILL at random moments, -m ${shape.memMiB}: ${what} (${CYCLES} cycles)`, { timeout: 60_000 + CYCLES * 5_000 }, () => crashCycles(shape));
}

/** A fresh 128 MiB region, the run's seed (KV_CRASH_SEED or the clock) with its generator, and an empty write model. */
function crashRun(prefix: string): { region: string; seed: number; rand: ReturnType<typeof rng>; model: Model } {
  const region = path.join(tempDir(prefix), 'r.bin');
  initRegion(region, '128MiB');
  const seed = Number(process.env.KV_CRASH_SEED ?? Date.now() % 1e9);
  return { region, seed, rand: rng(seed), model: { acked: new Map(), pending: null } };
}

async function crashCycles(shape: Shape): Promise<void> {
  const { region, seed, rand, model } = crashRun('kv-crash-');
  const args = ['-m', String(shape.memMiB)];
  let totalAcked = 0;
  let totalEvicted = 0;
  for (let cycle = 0; cycle < CYCLES; cycle++) {
    const kv = await startKv(region, args);
    const { evicted } = await verify(kv.port, shape, model);
    totalEvicted += evicted;
    totalAcked += await writeUntilKilled(kv.port, shape, model, rand, 50 + Math.floor(rand() * 250), () => kv.kill9());
  }
  const kv = await startKv(region, args);
  const final = await verify(kv.port, shape, model);
  assert.equal(await kv.stop(), 0, 'clean exit on SIGTERM');
  assert.ok(totalAcked > CYCLES * 20, `the writer got work done (${totalAcked} acknowledged writes)`);
  assert.ok(final.present > 0, 'items present at the end');
  const check = spawnSync(process.execPath, [MORSEL_BIN, 'check', '--region', region], { encoding: 'utf8' });
  assert.equal(check.status, 0, `morsel check: ${check.stdout}${check.stderr}`);
  console.log(`# -m ${shape.memMiB}, seed ${seed}: ${CYCLES} SIGKILL cycles, ${totalAcked} acknowledged writes, ${final.present} items present, ${totalEvicted} evicted`);
}

/** Sends `cmds` and waits for `lines` reply lines. */
async function lines(c: RawClient, cmds: string, n: number): Promise<string> {
  c.send(cmds);
  return (await c.until((b) => b.toString('latin1').split('\r\n').length > n)).toString('latin1');
}

test('meta item state (fetched bit, win token, stale mark, ttls) survives SIGKILL: it lives in the item header', async () => {
  const dir = tempDir('kv-crash-meta-');
  const region = path.join(dir, 'r.bin');
  initRegion(region, '96MiB');
  let kv = await startKv(region, ['-m', '4']);
  let c = await RawClient.connect(kv.port);
  assert.equal(
    await lines(c, 'set seen 0 0 1\r\ns\r\nmg seen h\r\nmg viv N100 t\r\nset old 0 0 1\r\no\r\nms old 1 C1 I\r\nn\r\nset r 0 100 1\r\nr\r\nmg r R200\r\nma cnt N0 J7 T300\r\n', 8),
    'STORED\r\nHD h0\r\nHD t100 W\r\nSTORED\r\nHD\r\nSTORED\r\nHD W\r\nHD\r\n',
  );
  c.close();
  await kv.kill9();
  kv = await startKv(region, ['-m', '4']);
  c = await RawClient.connect(kv.port);
  try {
    const reply = await lines(c, 'mg seen h\r\nmg viv h\r\nmg old v h\r\nmg r R200 h\r\nmg cnt v t\r\n', 7);
    assert.match(reply, /^HD h1\r\nHD h1 Z\r\nVA 1 h0 X W\r\nn\r\nHD h1 Z\r\nVA 1 t(299|300)\r\n7\r\n$/);
  } finally {
    c.close();
    assert.equal(await kv.stop(), 0);
  }
});

/** Waits (bounded) until `port` accepts a connection again (a take-over in progress refuses them). */
async function untilServing(port: number): Promise<void> {
  for (let i = 0; i < 2000; i++) {
    try {
      (await RawClient.connect(port)).close();
      return;
    } catch {
      await new Promise((r) => setTimeout(r, 5));
    }
  }
  assert.fail(`nothing serves on ${port} after 10 s`);
}

/** Polls (bounded) until `count()` reaches `n`. */
async function until(what: string, n: number, count: () => number): Promise<void> {
  for (let i = 0; i < 2000 && count() < n; i++) await new Promise((r) => setTimeout(r, 5));
  assert.ok(count() >= n, `${what}: ${count()} of ${n} within 10 s`);
}

test('--standby: the serving worker SIGKILLed at random moments; the spare takes over on the same port with every acknowledged write, and a new spare is forked', { timeout: 120_000 }, async () => {
  const { region, rand, model } = crashRun('kv-standby-');
  const kv = await startKv(region, ['-m', String(STRICT.memMiB), '--standby', '-v']);
  const matches = (re: RegExp): string[] => [...kv.stderr().matchAll(re)].map((m) => m[1]);
  try {
    let worker = Number(/pids (\d+)/.exec(kv.banner)?.[1]);
    const spare = Number(/standby pid (\d+)/.exec(kv.banner)?.[1]);
    assert.ok(worker > 0 && spare > 0 && spare !== worker, `the banner names the worker and the spare: ${kv.banner}`);
    const ROUNDS = 4;
    let acked = 0;
    for (let round = 0; round < ROUNDS; round++) {
      await until('spares ready', round + 1, () => matches(/standby (\d+) ready/g).length);
      acked += await writeUntilKilled(kv.port, STRICT, model, rand, 50 + Math.floor(rand() * 200), async () => void process.kill(worker, 'SIGKILL'));
      await until('take-overs', round + 1, () => matches(/standby (\d+) takes over/g).length);
      const next = Number(matches(/standby (\d+) takes over/g)[round]);
      assert.notEqual(next, worker, 'another process serves');
      worker = next;
      await untilServing(kv.port);
      await verify(kv.port, STRICT, model);
    }
    assert.ok(acked > ROUNDS * 20, `the writer got work done (${acked} acknowledged writes)`);
    await until('spares ready', ROUNDS + 1, () => matches(/standby (\d+) ready/g).length);
    assert.equal(new Set(matches(/standby (\d+) ready/g)).size, ROUNDS + 1, 'a new spare after every take-over');
    assert.equal(await kv.stop(), 0, 'clean exit on SIGTERM');
  } finally {
    kv.child.kill('SIGKILL');
  }
  const check = spawnSync(process.execPath, [MORSEL_BIN, 'check', '--region', region], { encoding: 'utf8' });
  assert.equal(check.status, 0, `morsel check: ${check.stdout}${check.stderr}`);
});
