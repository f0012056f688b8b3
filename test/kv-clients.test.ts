/**
 * Unmodified memcached clients against `morsel kv`: pymemcache (Python) and
 * libmemcached's memccp/memccat. Skipped with the reason and the install
 * command when they are absent, unless MORSEL_REQUIRE_KV_CLIENTS=1.
 * Also: a bounded flood of connections (hundreds open at once, idle) leaves
 * the server up and every item intact.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { KV_INSTALL, RawClient, hasCommand, initRegion, oneLine, startKv, type Served } from './kv-helpers.js';

const required = process.env.MORSEL_REQUIRE_KV_CLIENTS === '1';
const SYSTEM_PYTHON = '/usr/bin/python3';
const havePymemcache = spawnSync(SYSTEM_PYTHON, ['-c', 'import pymemcache'], { stdio: 'ignore' }).status === 0;
const skipUnless = (ok: boolean, what: string): { skip: string | false } => ({ skip: !ok && !required ? `${what} not installed: ${KV_INSTALL}` : false });

let kv: Served;
let dir: string;

before(async () => {
  dir = tempDir('kv-clients-');
  const region = path.join(dir, 'r.bin');
  initRegion(region, '96MiB');
  kv = await startKv(region, ['-m', '8']);
});

after(async () => {
  assert.equal(await kv.stop(), 0);
});

const PYMEMCACHE_SCRIPT = `
import sys
from pymemcache.client.base import Client
c = Client(('127.0.0.1', int(sys.argv[1])), default_noreply=False)
c.flush_all()
assert c.set('a', b'hello') is True
assert c.get('a') == b'hello'
c.set_many({'k%d' % i: b'v%d' % i for i in range(200)})
got = c.get_many(['k%d' % i for i in range(200)])
assert got == {'k%d' % i: b'v%d' % i for i in range(200)}, got
assert c.add('a', b'x') is False
assert c.replace('nokey', b'x') is False
assert c.append('a', b' world') is True
assert c.prepend('a', b'>') is True
assert c.get('a') == b'>hello world'
value, cas = c.gets('a')
assert c.cas('a', b'new', cas) is True
assert c.cas('a', b'newer', cas) is False
assert c.get('a') == b'new'
c.set('n', b'10')
assert c.incr('n', 5) == 15
assert c.decr('n', 20) == 0
assert c.touch('n', 100) is True
assert c.touch('nokey', 100) is False
assert c.delete('n') is True
assert c.get('n') is None
big = bytes(range(256)) * 4000
c.set('big', big)
assert c.get('big') == big
stats = c.stats()
assert stats[b'curr_connections'] >= 1, stats
assert c.version().startswith(b'1.6')
print('pymemcache ok')
`;
import { tempDir } from './helpers.js';

test('pymemcache: storage, retrieval, cas, incr/decr, touch, delete, stats', skipUnless(havePymemcache, 'python3-pymemcache'), () => {
  const r = spawnSync(SYSTEM_PYTHON, ['-c', PYMEMCACHE_SCRIPT, String(kv.port)], { encoding: 'utf8', timeout: 30_000 });
  assert.equal(r.status, 0, r.stdout + r.stderr);
  assert.match(r.stdout, /pymemcache ok/);
});

test('memccp stores a file, memccat reads it back byte for byte', skipUnless(hasCommand('memccp') && hasCommand('memccat'), 'libmemcached-tools'), () => {
  const file = path.join(dir, 'payload.bin');
  const payload = Buffer.alloc(300_000);
  for (let i = 0; i < payload.length; i++) payload[i] = (i * 7919) & 0xff;
  fs.writeFileSync(file, payload);
  const servers = `--servers=127.0.0.1:${kv.port}`;
  const cp = spawnSync('memccp', [servers, file], { encoding: 'utf8', timeout: 30_000 });
  assert.equal(cp.status, 0, cp.stdout + cp.stderr);
  const cat = spawnSync('memccat', [servers, 'payload.bin'], { timeout: 30_000 });
  assert.equal(cat.status, 0, String(cat.stderr));
  // memccat prints a newline after the value (it does so with memcached too)
  const expected = Buffer.concat([payload, Buffer.from('\n')]);
  assert.ok(Buffer.compare(cat.stdout, expected) === 0, `memccat returned ${cat.stdout.length} bytes, expected the ${payload.length} written + newline`);
});

test('a flood of idle connections leaves the server answering and items intact', async () => {
  const c = await RawClient.connect(kv.port);
  assert.equal(await oneLine(c, 'set flood 0 0 4\r\nkeep\r\n'), 'STORED\r\n');
  const idle: RawClient[] = [];
  try {
    for (let i = 0; i < 300; i++) {
      const x = await RawClient.connect(kv.port);
      if (i % 3 === 0) x.send('set half 0 0 100\r\nnot all of it'); // half a command, then silence
      idle.push(x);
    }
    assert.equal((await c.exchange('get flood\r\n', 50)).toString(), 'VALUE flood 0 4\r\nkeep\r\nEND\r\n');
    const stats = (await c.exchange('stats\r\n', 50)).toString();
    assert.match(stats, /STAT curr_connections (\d+)/);
    assert.ok(Number(/STAT curr_connections (\d+)/.exec(stats)![1]) >= 301, stats.slice(0, 400));
  } finally {
    for (const x of idle) x.close();
    c.close();
  }
  const after = await RawClient.connect(kv.port);
  assert.equal((await after.exchange('get flood half\r\n', 50)).toString(), 'VALUE flood 0 4\r\nkeep\r\nEND\r\n');
  after.close();
});
