/**
 * `morsel web` in a real browser: Debian's chromium at /usr/bin/chromium
 * driven headless by playwright-core (no browser download), on loopback.
 * The page's tree, counters and frame map must agree with `morsel stat
 * --json` / `morsel ls --json`; a morsel populated by another process while
 * the page is open must show up without a reload; a screenshot is saved to
 * test-artifacts/web.png. Once in-process (startWeb), once through the CLI
 * (`morsel web --json` as a child process, stopped by SIGTERM). Skipped,
 * saying why, when chromium is missing, unless MORSEL_REQUIRE_BROWSER=1.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';
import { startWeb } from '../src/web/server.js';
import { PAGE_SIZE } from '../src/units.js';
import { ARTIFACTS, HUGE_LEAF_OFFSET, bin, fingerprint, makeRegion, morsel, writeFromChild } from './web-helpers.js';
import { tempDir } from './helpers.js';

const CHROMIUM = '/usr/bin/chromium';
const required = process.env.MORSEL_REQUIRE_BROWSER === '1';
const haveBrowser = fs.existsSync(CHROMIUM);
const skip = !haveBrowser && !required ? `${CHROMIUM} not installed: as root run scripts/install-system-deps.sh (apt-get install chromium)` : false;
/** Longest wait for the page to show something (it polls nothing itself: events drive it). */
const UI_TIMEOUT_MS = 10_000;

let browser: Browser | undefined;

before(async () => {
  if (skip) return;
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'], timeout: 30_000 });
});

after(async () => {
  await browser?.close();
});

/** A page that fails the test on any script error. */
async function openPage(url: string): Promise<{ page: Page; errors: string[] }> {
  const page = await browser!.newPage({ viewport: { width: 1280, height: 900 } });
  const errors: string[] = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  await page.goto(url);
  return { page, errors };
}

const intAttr = async (page: Page, selector: string, attr: string): Promise<number> => Number(await page.getAttribute(selector, attr, { timeout: UI_TIMEOUT_MS }));

test('the page shows the tree, counters and frame map as stat/ls do, and follows another process live', { skip, timeout: 50_000 }, async () => {
  const built = makeRegion(tempDir('morsel-web-ui-'));
  const web = await startWeb({ regionPath: built.region, port: 0 });
  try {
    const { page, errors } = await openPage(web.url);
    await page.waitForSelector('#live.on', { timeout: UI_TIMEOUT_MS });
    await page.waitForSelector('#names .node[data-path="/models/w"]', { timeout: UI_TIMEOUT_MS });

    // tree against ls and stat <path>
    const shown = await page.$$eval('#names > .node', (lis) => lis.map((li) => li.getAttribute('data-path')));
    const ls = morsel(['ls', '/', '--region', built.region, '--json']).json;
    assert.deepEqual(shown.sort(), ls.entries.map((e: any) => `/${e.name}`).sort());
    for (const p of ['/models/w', '/models/b', '/small', '/fixed']) {
      const s = morsel(['stat', p, '--region', built.region, '--json']).json;
      const sel = `#names .node[data-path="${p}"]`;
      assert.equal(await intAttr(page, sel, 'data-pages'), s.dataPages, `${p} pages`);
      assert.equal(await intAttr(page, sel, 'data-order'), s.order, `${p} order`);
      assert.equal(await intAttr(page, sel, 'data-users'), s.users, `${p} users`);
    }

    // counters and frame map against stat
    const stat = morsel(['stat', '--region', built.region, '--json']).json;
    for (const k of ['total', 'allocatable', 'free', 'used', 'reserved'] as const) assert.equal(await intAttr(page, `#stat-${k}`, 'data-value'), stat.frames[k], k);
    assert.equal(await intAttr(page, '#stat-morsels', 'data-value'), stat.morsels);
    assert.equal(await intAttr(page, '#map-total-free', 'data-count'), stat.frames.free);
    assert.equal(await intAttr(page, '#map-total-reserved', 'data-count'), stat.frames.reserved);
    const used = await Promise.all(['table', 'data', 'registry', 'other'].map((c) => intAttr(page, `#map-total-${c}`, 'data-count')));
    assert.equal(used.reduce((a, b) => a + b, 0), stat.frames.used);
    assert.equal(await intAttr(page, '#frame-map', 'data-cells'), stat.frames.total / 512);

    // one morsel: root table, zoom into entry 2, decoded bits
    await page.click('#names .node[data-path="/models/w"] > .row');
    await page.waitForSelector('.level.current svg[data-level="2"]', { timeout: UI_TIMEOUT_MS });
    assert.equal(await intAttr(page, '.level.current svg', 'data-present'), 2);
    await page.click('.level.current svg rect.cell[data-index="2"]');
    await page.waitForSelector('.level.current svg[data-level="1"]', { timeout: UI_TIMEOUT_MS });
    await page.check('#bits-toggle');
    await page.waitForSelector('#entries tr[data-index="1"] td[data-flag="P"]', { timeout: UI_TIMEOUT_MS });
    assert.deepEqual(await page.$$eval('#entries tr[data-index="1"] td.flag', (tds) => tds.map((td) => td.textContent)), ['P', 'RW', 'US', '·', '·', '·', '·']);

    // a huge-policy morsel: its 2 MiB leaf is a leaf cell (frame range), clicking it zooms nowhere
    await page.click('#names .node[data-path="/huge"] > .row');
    await page.waitForSelector('.level.current svg[data-level="2"] rect.cell[data-leaf="huge"]', { timeout: UI_TIMEOUT_MS });
    const leafIndex = Math.floor(HUGE_LEAF_OFFSET / (2 * 1024 * 1024));
    const leafTitle = await page.textContent(`.level.current svg rect.cell[data-index="${leafIndex}"] title`);
    assert.match(leafTitle ?? '', /2 MiB leaf, frames \d+–\d+/);
    assert.match((await page.textContent(`#entries tr[data-index="${leafIndex}"][data-leaf="huge"]`)) ?? '', /2 MiB leaf/);
    await page.click(`.level.current svg rect.cell[data-index="${leafIndex}"]`);
    // A refresh (bits off) renders whatever path the click chose: still the level-2 table, no error.
    await page.uncheck('#bits-toggle');
    await page.waitForSelector(`#entries tr[data-index="${leafIndex}"]:not(.set)`, { timeout: UI_TIMEOUT_MS });
    assert.equal(await page.locator('.level svg[data-level="1"]').count(), 0, 'a leaf is never opened as a table');
    assert.equal(await page.isHidden('#morsel-error'), true, 'and nothing failed');
    await page.check('#bits-toggle');

    // another process populates /models/b while the page is open
    const before = await intAttr(page, '#names .node[data-path="/models/b"]', 'data-pages');
    const updates = await intAttr(page, '#updates', 'data-count');
    assert.equal(await writeFromChild(built.region, '/models/b', 8 * PAGE_SIZE, Buffer.alloc(5 * PAGE_SIZE, 9)), 0);
    const want = before + 5;
    await page.waitForSelector(`#names .node[data-path="/models/b"][data-pages="${want}"]`, { timeout: UI_TIMEOUT_MS });
    assert.ok((await intAttr(page, '#updates', 'data-count')) > updates, 'an event drove the update');
    assert.equal(want, morsel(['stat', '/models/b', '--region', built.region, '--json']).json.dataPages);
    await page.waitForSelector(`#stat-free[data-value="${morsel(['stat', '--region', built.region, '--json']).json.frames.free}"]`, { timeout: UI_TIMEOUT_MS });

    fs.mkdirSync(ARTIFACTS, { recursive: true });
    await page.screenshot({ path: path.join(ARTIFACTS, 'web.png'), fullPage: true });
    assert.deepEqual(errors, []);
    await page.close();
  } finally {
    await web.close();
  }
  const check = morsel(['check', '--region', built.region, '--json']);
  assert.equal(check.json?.ok, true, check.out + check.err);
});

test('morsel web --json as a child process: prints the URL, serves the page read-only, SIGTERM stops it cleanly', { skip, timeout: 40_000 }, async () => {
  const built = makeRegion(tempDir('morsel-web-cli-'));
  const fp = fingerprint(built.region);
  const child = spawn(process.execPath, [bin, 'web', '--region', built.region, '--port', '0', '--json'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  try {
    const line = await new Promise<string>((resolve, reject) => {
      let out = '';
      child.stdout.on('data', (c: Buffer) => {
        out += c.toString();
        if (out.includes('\n')) resolve(out.slice(0, out.indexOf('\n')));
      });
      child.on('exit', (code) => reject(new Error(`morsel web exited ${code}: ${stderr}`)));
    });
    const started = JSON.parse(line);
    assert.match(started.url, /^http:\/\/127\.0\.0\.1:\d+\/$/);
    assert.equal(started.token, null, 'no token on loopback');
    const { page, errors } = await openPage(started.url);
    await page.waitForSelector('#names .node[data-path="/fixed"] .fixed', { timeout: UI_TIMEOUT_MS });
    assert.equal(await page.textContent('#names .node[data-path="/fixed"] .fixed'), '@0x40000000');
    assert.equal(await intAttr(page, '#stat-morsels', 'data-value'), morsel(['stat', '--region', built.region, '--json']).json.morsels);
    await page.waitForSelector('#live.on', { timeout: UI_TIMEOUT_MS });
    assert.deepEqual(errors, []);
    await page.close();
  } finally {
    child.kill('SIGTERM');
  }
  assert.equal(await exited, 0, stderr);
  assert.deepEqual(fingerprint(built.region), fp, 'bytes and mtime of the region unchanged');
  const check = morsel(['check', '--region', built.region, '--json']);
  assert.equal(check.json?.ok, true, check.out + check.err);
});
