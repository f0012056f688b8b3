/**
 * Sharding with twemproxy (Debian's `nutcracker`): three `morsel kv` shards
 * on loopback behind one proxy with ketama distribution, configured by the
 * repository's example (docs/examples/kv-twemproxy.yml, ports rewritten).
 * Keys stored through the proxy land on all three shards; one shard is
 * SIGKILLed and restarted on its port, and every key reads back through the
 * proxy (memcached would have lost that shard's third). Skipped with the
 * reason when nutcracker is absent, unless MORSEL_REQUIRE_KV_CLIENTS=1.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { freePort } from '../bench/kv.js';
import { KV_INSTALL, RawClient, endsGet, hasCommand, initRegion, oneLine, parseGet, startKv, startNutcracker, type Served } from './kv-helpers.js';
import { tempDir } from './helpers.js';

const EXAMPLE = fileURLToPath(new URL('../../docs/examples/kv-twemproxy.yml', import.meta.url));
const required = process.env.MORSEL_REQUIRE_KV_CLIENTS === '1';
const haveNutcracker = hasCommand('nutcracker');
const SHARDS = 3;
const KEYS = 300;
/** Gets retried while the proxy reconnects to the restarted shard. */
const GET_TRIES = 20;

const valueOf = (key: string): string => `${key}=` + 'v'.repeat(key.length * 7);

/** The example config with its listen port and the three shard ports replaced. */
function config(proxyPort: number, shardPorts: number[]): string {
  const text = fs.readFileSync(EXAMPLE, 'utf8');
  assert.match(text, /listen: 127\.0\.0\.1:22121/);
  let out = text.replace('listen: 127.0.0.1:22121', `listen: 127.0.0.1:${proxyPort}`);
  for (let i = 0; i < SHARDS; i++) out = out.replace(`127.0.0.1:1121${i + 1}:1`, `127.0.0.1:${shardPorts[i]}:1`);
  assert.equal(out.split('\n').filter((l) => /^\s+- 127\.0\.0\.1:\d+:1 shard\d$/.test(l)).length, SHARDS, 'three shards in the config');
  return out;
}

async function currItems(port: number): Promise<number> {
  const c = await RawClient.connect(port);
  try {
    c.send('stats\r\n');
    return Number(/STAT curr_items (\d+)/.exec((await c.until(endsGet)).toString('latin1'))?.[1]);
  } finally {
    c.close();
  }
}

/** `get key` through the proxy, retried while it answers with an error (its connection to a restarted shard). */
async function getThrough(c: RawClient, key: string): Promise<string | null> {
  for (let tries = 0; tries < GET_TRIES; tries++) {
    c.send(`get ${key}\r\n`);
    const reply = await c.until((b) => endsGet(b) || /ERROR[^\r]*\r\n$/.test(b.toString('latin1')));
    const got = parseGet(reply);
    if (got) return got.get(key) ?? null;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`get ${key}: the proxy kept answering errors`);
}

test('three morsel kv shards behind nutcracker (ketama): a SIGKILLed shard comes back with its items', { skip: !haveNutcracker && !required ? `nutcracker not installed: ${KV_INSTALL}` : false, timeout: 90_000 }, async () => {
  const dir = tempDir('kv-twemproxy-');
  const shards: Served[] = [];
  const regions: string[] = [];
  let proxy: Served | null = null;
  try {
    for (let i = 0; i < SHARDS; i++) {
      regions.push(path.join(dir, `shard${i}.region`));
      initRegion(regions[i], '96MiB');
      shards.push(await startKv(regions[i], ['-m', '16']));
    }
    const proxyPort = await freePort();
    const conf = path.join(dir, 'nutcracker.yml');
    fs.writeFileSync(conf, config(proxyPort, shards.map((s) => s.port)));
    proxy = await startNutcracker(conf, proxyPort, await freePort());
    const c = await RawClient.connect(proxyPort);
    try {
      const keys = Array.from({ length: KEYS }, (_, i) => `user:${i}`);
      for (const key of keys) assert.equal(await oneLine(c, `set ${key} 0 0 ${valueOf(key).length}\r\n${valueOf(key)}\r\n`), 'STORED\r\n', `set ${key} through the proxy`);
      const counts = await Promise.all(shards.map((s) => currItems(s.port)));
      assert.equal(counts.reduce((a, b) => a + b, 0), KEYS, `every key on exactly one shard: ${counts}`);
      assert.ok(counts.every((n) => n > 0), `ketama spread the keys over all shards: ${counts}`);
      const victim = 1;
      const port = shards[victim].port;
      await shards[victim].kill9();
      shards[victim] = await startKv(regions[victim], ['-m', '16', '--port', String(port)]);
      assert.equal(await currItems(port), counts[victim], 'the restarted shard holds its items');
      for (const key of keys) assert.equal(await getThrough(c, key), valueOf(key), `${key} through the proxy after the restart`);
      console.log(`# ${KEYS} keys over shards ${counts.join('/')}; shard ${victim} SIGKILLed and restarted: all read back through nutcracker`);
    } finally {
      c.close();
    }
  } finally {
    if (proxy) await proxy.stop();
    for (const s of shards) await s.stop();
  }
});
