/**
 * The JSON API of `morsel web` (src/web/server.ts), in-process: answers
 * agree with `morsel stat --json` / `morsel ls --json`, one table at a time
 * with decoded bits, the frame map's classes add up, events follow changes
 * made by another process at a bounded rate, bad input gets typed JSON
 * errors with their HTTP status, the token is required off loopback, and
 * the region file is never written (bytes and mtime unchanged, `check` ok).
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as path from 'node:path';
import { Memory } from '../src/memory.js';
import { namesTree } from '../src/web/inspect.js';
import { startWeb, MAX_SSE_CLIENTS, MAX_URL_BYTES, EVENT_INTERVAL_MS, type WebServer } from '../src/web/server.js';
import { ENTRIES_PER_TABLE } from '../src/paging/walk.js';
import { PAGE_SIZE } from '../src/units.js';
import { FIXED_ADDRESS, HUGE_LEAF_OFFSET, byPath, fingerprint, makeRegion, morsel, request, treeSums, writeFromChild, type Built } from './web-helpers.js';
import { tempDir } from './helpers.js';

let built: Built;
let web: WebServer;
let before0: ReturnType<typeof fingerprint>;

before(async () => {
  built = makeRegion(tempDir('morsel-web-api-'));
  before0 = fingerprint(built.region);
  web = await startWeb({ regionPath: built.region, port: 0, reportDir: tempDir('morsel-web-noreport-') });
});

after(async () => {
  await web?.close();
});

const get = (target: string): Promise<Awaited<ReturnType<typeof request>>> => request(web.port, target);

test('region, names and frames agree with morsel stat / ls / stat <path>', async () => {
  const stat = morsel(['stat', '--region', built.region, '--json']).json;
  const region = (await get('/api/region')).json;
  assert.deepEqual(region.frames, stat.frames);
  assert.equal(region.morsels, stat.morsels);
  assert.equal(region.allocator.freeByChildCounters, stat.frames.free, 'quiescent: the child counters agree with the tree counters');
  assert.deepEqual(region.users, [], 'nobody else has the region open; the server itself holds no user slot');

  const names = (await get('/api/names')).json;
  assert.equal(names.truncated, false);
  const nodes = byPath(names.root);
  const top = morsel(['ls', '/', '--region', built.region, '--json']).json;
  assert.deepEqual(names.root.children.map((c: any) => c.name).sort(), top.entries.map((e: any) => e.name).sort());
  for (const p of ['/models/w', '/models/b', '/small', '/fixed']) {
    const s = morsel(['stat', p, '--region', built.region, '--json']).json;
    const n = nodes.get(p);
    assert.ok(n, `${p} in the tree`);
    for (const k of ['handle', 'order', 'dataPages', 'tableFrames', 'users', 'sizeBytes', 'mode', 'uid', 'gid', 'fixedAddress']) assert.deepEqual(n[k], s[k], `${p} ${k}`);
  }
  assert.equal(nodes.get('/fixed').fixedAddress, FIXED_ADDRESS);
  assert.equal(nodes.has('/gone'), false);

  const frames = (await get('/api/frames')).json;
  const t = frames.totals;
  const sums = treeSums(names.root);
  assert.equal(t.free, stat.frames.free);
  assert.equal(t.reserved, stat.frames.reserved);
  assert.equal(t.table + t.data + t.registry + t.other, stat.frames.used);
  assert.equal(t.table, sums.tableFrames, 'every table frame belongs to a named morsel');
  assert.equal(t.data, sums.dataPages, 'every data page belongs to a named morsel');
  assert.equal(t.other, 0, 'quiescent: nothing allocated is unreached');
  assert.equal(frames.cells * frames.cellBlocks >= frames.blocks, true);
  let cellSum = 0;
  for (const c of frames.counts) cellSum += c;
  assert.equal(cellSum, stat.frames.total, 'the cells cover every frame once');
});

test('one table at a time: entries, child fill, decoded bits, by name or handle', async () => {
  const w = (await get('/api/morsel?name=/models/w')).json;
  assert.equal(w.morsel.order, 2);
  assert.equal(w.morsel.sizeBytes, 8 * 1024 * 1024);
  assert.equal(w.table.level, 2);
  assert.deepEqual(w.table.entries.map((e: any) => [e.index, e.childPresent]), [[0, 1], [2, 1]]);
  assert.equal(w.table.entries[0].bits, undefined, 'bits only on request');
  const leaf = (await get('/api/morsel?name=/models/w&path=2&bits=1')).json;
  assert.equal(leaf.table.level, 1);
  assert.equal(leaf.table.frame, w.table.entries[1].frame);
  assert.deepEqual(leaf.table.entries.map((e: any) => e.index), [1]);
  const bits = leaf.table.entries[0].bits;
  assert.deepEqual([bits.P, bits.RW, bits.US, bits.PS, bits.NX, bits.meta, bits.orderTag], [true, true, true, false, false, false, 0]);
  assert.equal(bits.pfn, leaf.table.entries[0].frame);
  const b = (await get(`/api/morsel?handle=${encodeURIComponent(w.morsel.handle)}`)).json;
  assert.equal(b.morsel.handle, w.morsel.handle);
  const pagesB = (await get('/api/morsel?name=/models/b')).json;
  assert.deepEqual(pagesB.table.entries.map((e: any) => e.index), [0, 3, 7]);
  assert.equal(pagesB.table.entriesPerTable, ENTRIES_PER_TABLE);
  const small = (await get('/api/morsel?name=/small')).json;
  assert.equal(small.table, null, 'an order-0 morsel has no tables');
  const fixed = (await get('/api/morsel?name=/fixed&bits=1')).json;
  assert.equal(fixed.morsel.meta, true);
  assert.notEqual(fixed.morsel.rootFrame, fixed.morsel.dataRootFrame, 'the table shown is the data morsel');
  assert.ok(JSON.stringify(w).length < 64 * 1024, 'bounded answer');
});

test('a 2 MiB leaf is shown as a leaf (frame range, PS), never followed as a table', async () => {
  const h = (await get('/api/morsel?name=/huge&bits=1')).json;
  assert.equal(h.table.level, 2);
  assert.equal(h.table.hugeLeaves, 1);
  const leaf = h.table.entries.find((e: any) => e.index === Math.floor(HUGE_LEAF_OFFSET / (2 * 1024 * 1024)));
  assert.ok(leaf, 'the leaf entry is listed');
  assert.deepEqual([leaf.hugeLeaf, leaf.lastFrame - leaf.frame + 1, leaf.childPresent, leaf.shared], [true, 512, undefined, false]);
  assert.equal(leaf.frame % 512, 0, 'an order-9 frame: 2 MiB-aligned');
  assert.deepEqual([leaf.bits.P, leaf.bits.RW, leaf.bits.PS, leaf.bits.pfn], [true, true, true, leaf.frame]);
  const into = await get(`/api/morsel?name=/huge&path=${leaf.index}`);
  assert.equal(into.status, 400);
  assert.equal(into.json.error.code, 'ERANGE', 'a leaf has no table below it');
  const stat = morsel(['stat', '/huge', '--region', built.region, '--json']).json;
  assert.equal(stat.dataPages, 512, 'stat counts the leaf as 512 pages');
  const frames = (await get('/api/frames')).json;
  assert.equal(frames.totals.other, 0, 'the leaf frames are reached (data), not unaccounted');
});

test('bad input: typed JSON errors with their HTTP status', async () => {
  const cases: [string, number, string][] = [
    ['/api/morsel?name=/nope', 404, 'ENOENT'],
    ['/api/morsel?name=/models', 400, 'EISDIR'],
    [`/api/morsel?handle=${encodeURIComponent(built.staleHandle)}`, 410, 'ESTALE'],
    ['/api/morsel?handle=0x1234', 400, 'EINVAL'],
    ['/api/morsel?handle=garbage@1', 400, 'EINVAL'],
    ['/api/morsel', 400, 'EINVAL'],
    ['/api/morsel?name=/small&handle=0x1@0', 400, 'EINVAL'],
    ['/api/morsel?name=/models/w&name=/small', 400, 'EINVAL'],
    ['/api/morsel?name=relative', 400, 'EINVAL'],
    ['/api/morsel?name=/models/w&path=abc', 400, 'EINVAL'],
    ['/api/morsel?name=/models/w&path=999', 400, 'EINVAL'],
    ['/api/morsel?name=/models/w&path=1', 404, 'ENOENT'],
    ['/api/morsel?name=/models/w&path=2,1', 400, 'ERANGE'],
    ['/api/morsel?name=/small&path=0', 400, 'ERANGE'],
    ['/api/morsel?name=/models/w&bits=yes', 400, 'EINVAL'],
    ['/api/region?x=1', 400, 'EINVAL'],
    ['/api/nothing', 404, 'ENOENT'],
    [`/api/morsel?name=/${'a'.repeat(300)}`, 400, 'ENAMETOOLONG'],
    [`/api/morsel?name=/${'a'.repeat(MAX_URL_BYTES)}`, 414, 'ERANGE'],
  ];
  for (const [target, status, code] of cases) {
    const r = await get(target);
    assert.equal(r.status, status, `${target.slice(0, 80)}: ${r.body.slice(0, 200)}`);
    assert.match(r.headers['content-type'] ?? '', /application\/json/);
    assert.equal(r.json.error.code, code, target.slice(0, 80));
    assert.equal(typeof r.json.error.message, 'string');
  }
  const post = await request(web.port, '/api/region', { method: 'POST', body: 'x' });
  assert.equal(post.status, 405);
  const body = await request(web.port, '/api/region', { headers: { 'Content-Length': '5' }, body: 'hello' });
  assert.equal(body.status, 413);
  assert.equal(body.json.error.code, 'ERANGE');
  const headers = await request(web.port, '/api/region', { headers: { 'X-Big': 'x'.repeat(32 * 1024) } });
  assert.equal(headers.status, 431, 'oversized headers are refused by node:http');
  const rebinding = await request(web.port, '/api/region', { headers: { Host: 'evil.example:80' } });
  assert.equal(rebinding.status, 403);
  assert.equal(rebinding.json.error.code, 'EACCES');
  assert.equal((await get('/api/region')).status, 200, 'still serving');
});

/** Opens an event stream and collects its summaries. */
function openEvents(port: number): Promise<{ res: http.IncomingMessage; events: any[]; close: () => void }> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path: '/api/events' }, (res) => {
      const events: any[] = [];
      let buf = '';
      res.on('data', (c: Buffer) => {
        buf += c.toString();
        for (let cut = buf.indexOf('\n\n'); cut >= 0; cut = buf.indexOf('\n\n')) {
          const block = buf.slice(0, cut);
          buf = buf.slice(cut + 2);
          const data = /^data: (.*)$/m.exec(block);
          if (/^event: summary$/m.test(block) && data) events.push({ at: performance.now(), ...JSON.parse(data[1]) });
        }
      });
      resolve({ res, events, close: () => req.destroy() });
    });
    req.on('error', reject);
  });
}

async function until(what: string, cond: () => boolean, timeoutMs: number): Promise<void> {
  const end = performance.now() + timeoutMs;
  while (!cond()) {
    if (performance.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

test('events: a change by another process arrives, at a bounded rate; the client cap holds', async () => {
  const stream = await openEvents(web.port);
  try {
    assert.equal(stream.res.headers['content-type'], 'text/event-stream');
    await until('the first summary', () => stream.events.length >= 1, 5000);
    const first = stream.events[0];
    const writes = [1, 2, 3, 4, 5, 6].map((i) => writeFromChild(built.region, '/models/w', i * 1024 * 1024 + 64 * PAGE_SIZE, Buffer.alloc(PAGE_SIZE, i)));
    assert.deepEqual(await Promise.all(writes), [0, 0, 0, 0, 0, 0]);
    await until('a summary with fewer free frames', () => stream.events.some((e) => e.freeByChildCounters < first.freeByChildCounters), 10_000);
    const evs = stream.events;
    for (let i = 1; i < evs.length; i++) assert.ok(evs[i].at - evs[i - 1].at >= EVENT_INTERVAL_MS * 0.8, `events ${i - 1} and ${i} ${(evs[i].at - evs[i - 1].at).toFixed(0)} ms apart`);
    const names = (await get('/api/names')).json;
    const w = byPath(names.root).get('/models/w');
    assert.equal(w.dataPages, 2 + 6, 'the tree shows the pages the other process populated');
    assert.equal(w.dataPages, morsel(['stat', '/models/w', '--region', built.region, '--json']).json.dataPages);
    const more = [];
    for (let i = 0; i < MAX_SSE_CLIENTS; i++) more.push(await openEvents(web.port));
    assert.equal(more.filter((s) => s.res.statusCode === 200).length, MAX_SSE_CLIENTS - 1);
    const refused = more.find((s) => s.res.statusCode !== 200)!;
    assert.equal(refused.res.statusCode, 503);
    for (const s of more) s.close();
  } finally {
    stream.close();
  }
});

test('off loopback: every request needs the token', async () => {
  const open = await startWeb({ regionPath: built.region, port: 0, listen: '0.0.0.0' });
  try {
    assert.match(open.token ?? '', /^[0-9a-f]{32}$/);
    assert.ok(open.url.endsWith(`?token=${open.token}`));
    for (const target of ['/', '/api/region', '/api/events', '/api/morsel?name=/small']) {
      const r = await request(open.port, target);
      assert.equal(r.status, 401, target);
      assert.equal(r.json.error.code, 'EACCES');
    }
    assert.equal((await request(open.port, `/api/region?token=${'0'.repeat(32)}`)).status, 401, 'a wrong token');
    assert.equal((await request(open.port, `/api/region?token=${open.token}`)).status, 200);
    assert.equal((await request(open.port, '/api/region', { headers: { 'X-Morsel-Token': open.token! } })).status, 200);
    const page = await request(open.port, `/?token=${open.token}`);
    assert.equal(page.status, 200);
    assert.match(page.body, /<script>/);
  } finally {
    await open.close();
  }
});

test('the server never writes the region: bytes and mtime unchanged, check passes', async () => {
  // Everything above read through this server; the test before wrote through the CLI, so compare from here.
  const mid = fingerprint(built.region);
  for (const t of ['/', '/api/region', '/api/names', '/api/frames', '/api/morsel?name=/models/w&path=0&bits=1']) assert.equal((await get(t)).status, 200, t);
  const again = await startWeb({ regionPath: built.region, port: 0 });
  await again.close();
  assert.deepEqual(fingerprint(built.region), mid);
  assert.notDeepEqual(mid.sha, before0.sha, 'the other process did write (sanity)');
  const check = morsel(['check', '--region', built.region, '--json']);
  assert.equal(check.status, 0, check.out + check.err);
  assert.equal(check.json.ok, true);
});

test('the names tree is cut at its bound and says so', () => {
  const m = Memory.open(built.region, { mode: 'readonly' });
  try {
    const all = namesTree(m, { deep: true });
    assert.equal(all.truncated, false);
    const cut = namesTree(m, { deep: true, maxNodes: 3 });
    assert.equal(cut.truncated, true);
    assert.equal(cut.nodes, 3);
    assert.ok(all.nodes > 3);
  } finally {
    m.close();
  }
});

test('the evaluation report is linked and served read-only when it exists', async () => {
  const dir = tempDir('morsel-web-report-');
  fs.writeFileSync(path.join(dir, 'index.html'), '<h1>the report</h1>');
  fs.writeFileSync(path.join(dir, 'results.json'), '{"suites":[]}');
  fs.writeFileSync(path.join(dir, 'secret.txt'), 'not served');
  const withReport = await startWeb({ regionPath: built.region, port: 0, reportDir: dir });
  try {
    const get2 = (t: string) => request(withReport.port, t);
    assert.equal((await get('/api/region')).json.report, null, 'no report: no link');
    assert.equal((await get('/report/')).status, 404);
    assert.equal((await get2('/api/region')).json.report, '/report/');
    const page = await get2('/report/');
    assert.equal(page.status, 200);
    assert.equal(page.body, '<h1>the report</h1>');
    assert.deepEqual((await get2('/report/results.json')).json, { suites: [] });
    for (const t of ['/report/secret.txt', '/report/../secret.txt', '/report/%2e%2e/web.region']) assert.equal((await get2(t)).status, 404, t);
    assert.equal((await request(withReport.port, '/report/', { method: 'PUT', body: 'x' })).status, 405);
  } finally {
    await withReport.close();
  }
});

test('morsel web: typed errors and exit statuses before it serves', () => {
  const missing = morsel(['web', '--region', path.join(tempDir('morsel-web-none-'), 'nope.region'), '--port', '0', '--json']);
  assert.equal(missing.status, 3, missing.out + missing.err);
  assert.equal(missing.json.error.code, 'ENOENT');
  const badPort = morsel(['web', '--region', built.region, '--port', '99999', '--json']);
  assert.equal(badPort.status, 2);
  assert.equal(badPort.json.error.code, 'EINVAL');
  const busy = morsel(['web', '--region', built.region, '--port', String(web.port), '--json']);
  assert.equal(busy.status, 7, busy.out + busy.err);
  assert.equal(busy.json.error.code, 'EBUSY');
});

test('copy-on-write: shared entries are marked with their reference counts, private ones are not', async () => {
  const dir = tempDir('morsel-web-cow-');
  const region = path.join(dir, 'cow.region');
  const m = Memory.create(region, 32 * 1024 * 1024);
  const h = m.names.create('/src', { sizeBytes: 8 * 1024 * 1024 });
  m.names.write(h, 0, Uint8Array.of(1));
  m.names.write(h, 2 * 1024 * 1024, Uint8Array.of(2));
  m.names.close(h);
  const c = m.names.clone('/src', '/copy');
  m.names.write(c, 0, Uint8Array.of(3)); // the copy's path to page 0 becomes private
  m.names.close(c);
  m.close();
  const cow = await startWeb({ regionPath: region, port: 0, reportDir: tempDir('morsel-web-noreport-') });
  try {
    const top = (await request(cow.port, '/api/morsel?name=/copy')).json.table;
    assert.deepEqual(top.entries.map((e: any) => [e.index, e.shared, e.refs]), [[0, false, 1], [1, true, 2]]);
    assert.equal(top.shared, 1);
    const src = (await request(cow.port, '/api/morsel?name=/src')).json.table;
    assert.deepEqual(src.entries.map((e: any) => [e.index, e.shared]), [[0, false], [1, true]], 'the source shares the same child');
    assert.equal(src.entries[1].frame, top.entries[1].frame);
  } finally {
    await cow.close();
  }
});
