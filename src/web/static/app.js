// morsel web: the page. Vanilla JS, no build step. Reads the JSON API of
// src/web/server.ts and redraws what changed when the server's event stream
// says the region changed. Names come from the region: always textContent.
'use strict';

const TOKEN = new URLSearchParams(location.search).get('token');
const CLASS_COLOURS = { free: '#e6e6e6', table: '#1f77b4', data: '#2ca02c', registry: '#ff7f0e', reserved: '#7f7f7f', other: '#d62728' };
const GRID_COLUMNS = 32; // a table's 512 entries as 32 x 16 cells
const GRID_ROWS = 16;
const MAP_COLUMNS = 64;

const state = { selected: null, path: [], bits: false, refreshing: false, pending: false, retry: null, updates: 0 };

/** The API's URL for `path` with `params`, the token added when the page has one. */
function apiUrl(path, params) {
  const q = new URLSearchParams(params || {});
  if (TOKEN) q.set('token', TOKEN);
  const s = q.toString();
  return s ? path + '?' + s : path;
}

async function api(path, params) {
  const res = await fetch(apiUrl(path, params));
  const body = await res.json();
  if (!res.ok) {
    const err = new Error(body.error ? body.error.code + ': ' + body.error.message : 'HTTP ' + res.status);
    err.status = res.status;
    throw err;
  }
  if (body.current === false && body.retryMs > 0) scheduleRetry(body.retryMs);
  return body;
}

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null) continue;
    if (k === 'class') e.className = v;
    else if (k.startsWith('data-')) e.setAttribute(k, String(v));
    else e[k] = v;
  }
  for (const c of children) if (c !== null && c !== undefined) e.append(c instanceof Node ? c : String(c));
  return e;
}

const svgNs = 'http://www.w3.org/2000/svg';
function svg(tag, attrs) {
  const e = document.createElementNS(svgNs, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
  return e;
}

function bytes(n) {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (Number.isInteger(n) ? n : n.toFixed(1)) + ' ' + units[i];
}

// --- region counters -----------------------------------------------------------------------

function renderRegion(r) {
  document.getElementById('region-path').textContent = r.path + ' (' + bytes(r.sizeBytes) + ')';
  const counters = document.getElementById('counters');
  const items = [
    ['total', 'frames', r.frames.total], ['allocatable', 'allocatable', r.frames.allocatable], ['free', 'free', r.frames.free],
    ['used', 'used', r.frames.used], ['reserved', 'reserved', r.frames.reserved], ['morsels', 'live morsels', r.morsels],
    ['child-free', 'free (child counters)', r.allocator.freeByChildCounters], ['huge', 'order-9 blocks', r.allocator.hugeChildren],
    ['users', 'users', r.users.length],
  ];
  counters.replaceChildren(...items.map(([id, label, v]) => el('span', { class: 'counter' }, label + ' ', el('b', { id: 'stat-' + id, 'data-value': v }, v.toLocaleString('en')))));
  counters.append(el('span', { class: 'counter muted', id: 'stat-pids' }, r.users.length ? 'pids ' + r.users.map((u) => u.pid).join(', ') : 'no read-write users'));
  const link = document.getElementById('report-link');
  link.hidden = !r.report;
  if (r.report) link.href = apiUrl(r.report);
}

// --- names tree --------------------------------------------------------------------------

function renderNames(t) {
  document.getElementById('names-info').textContent = t.nodes + ' name(s)' + (t.truncated ? ' (truncated)' : '');
  const ul = document.getElementById('names');
  ul.replaceChildren(...(t.root.children || []).map(nameNode));
  if (t.root.error) ul.append(el('li', { class: 'error' }, t.root.error.code + ': ' + t.root.error.message));
}

function nameNode(n) {
  const li = el('li', { class: 'node' + (n.path === state.selected ? ' selected' : ''), 'data-path': n.path, 'data-kind': n.kind });
  const row = el('div', { class: 'row', title: n.path }, el('span', { class: 'name' }, n.name));
  if (n.kind === 'morsel') {
    li.setAttribute('data-pages', n.dataPages === undefined ? '' : n.dataPages);
    li.setAttribute('data-users', n.users === undefined ? '' : n.users);
    li.setAttribute('data-order', n.order === undefined ? '' : n.order);
    const pagesOfSize = Math.max(1, Math.ceil(n.sizeBytes / 4096));
    const fill = n.dataPages === undefined ? 0 : Math.min(1, n.dataPages / pagesOfSize);
    row.append(
      el('span', { class: 'meta size' }, bytes(n.sizeBytes)),
      el('span', { class: 'meta order' }, 'order ' + n.order),
      el('span', { class: 'bar', title: 'populated pages of its size' }, el('i', { style: 'width:' + (fill * 100).toFixed(1) + '%' })),
      el('span', { class: 'meta pages' }, n.dataPages + ' page(s)'),
      el('span', { class: 'meta tables' }, n.tableFrames + ' table(s)'),
      el('span', { class: 'meta users' }, n.users + ' user(s)'),
    );
    if (n.fixedAddress !== null && n.fixedAddress !== undefined) row.append(el('span', { class: 'meta fixed' }, '@0x' + n.fixedAddress.toString(16)));
    if (n.stale) row.append(el('span', { class: 'error' }, 'stale'));
    row.addEventListener('click', () => selectMorsel(n.path));
  }
  row.append(el('span', { class: 'meta mode' }, n.mode + ' ' + n.uid + ':' + n.gid));
  if (n.error) row.append(el('span', { class: 'error' }, n.error.code));
  li.append(row);
  if (n.kind === 'dir') li.append(el('ul', {}, ...(n.children || []).map(nameNode)));
  return li;
}

// --- one morsel's tables, level by level ---------------------------------------------------------

function selectMorsel(path) {
  state.selected = path;
  state.path = [];
  for (const li of document.querySelectorAll('#names .node')) li.classList.toggle('selected', li.getAttribute('data-path') === path);
  refreshMorsel();
}

/** Fetches the tables from the root down to state.path and draws them side by side. */
async function refreshMorsel() {
  if (state.selected === null) return;
  document.getElementById('morsel-empty').hidden = true;
  document.getElementById('morsel-view').hidden = false;
  const errorBox = document.getElementById('morsel-error');
  const tables = [];
  try {
    for (let depth = 0; depth <= state.path.length; depth++) {
      const last = depth === state.path.length;
      const params = { name: state.selected, path: state.path.slice(0, depth).join(',') };
      if (last && state.bits) params.bits = '1';
      tables.push(await api('/api/morsel', params));
    }
    errorBox.hidden = true;
  } catch (e) {
    errorBox.hidden = false;
    errorBox.textContent = e.message;
    if (tables.length === 0) return;
    state.path = state.path.slice(0, tables.length - 1); // the rest is gone: show what is left
  }
  renderMorsel(tables);
}

function renderMorsel(tables) {
  const m = tables[0].morsel;
  document.getElementById('morsel-title').replaceChildren(
    el('b', { id: 'morsel-name' }, m.name), ' ',
    el('span', { class: 'muted' }, m.handle + ' · order ' + m.order + (m.meta ? ' (meta)' : '') + ' · ' + bytes(m.sizeBytes) + ' · ' + m.users + ' user(s) · root frame ' + m.dataRootFrame),
  );
  const levels = document.getElementById('levels');
  levels.replaceChildren();
  const entries = document.getElementById('entries');
  const shown = tables[tables.length - 1].table;
  if (shown === null) {
    levels.append(el('p', { class: 'muted' }, 'An order-0 morsel is one data page: no tables.'));
    entries.replaceChildren();
    return;
  }
  tables.forEach((t, depth) => levels.append(levelGrid(t.table, depth, depth === tables.length - 1)));
  renderEntries(shown);
}

/** What a present entry holds, in words: a data page, a 2 MiB leaf (its frame range) or a table (how full). */
function holds(e, level) {
  if (e.hugeLeaf) return '2 MiB leaf, frames ' + e.frame + '–' + e.lastFrame;
  return level > 1 ? e.childPresent + '/512 present' : 'data page';
}

/** One table as a 32 x 16 grid: shade = how full the child is (leaf tables and 2 MiB leaves: data). */
function levelGrid(t, depth, current) {
  const cell = current ? 12 : 7;
  const grid = svg('svg', { width: GRID_COLUMNS * cell, height: GRID_ROWS * cell, class: 'table-grid', 'data-level': t.level, 'data-present': t.present });
  const byIndex = new Map(t.entries.map((e) => [e.index, e]));
  const chosen = state.path[depth];
  for (let i = 0; i < GRID_COLUMNS * GRID_ROWS; i++) {
    const e = byIndex.get(i);
    if (!e && i !== chosen) continue;
    const table = e && t.level > 1 && !e.hugeLeaf; // a child table to zoom into
    const frac = e ? (table ? e.childPresent / t.entriesPerTable : 1) : 0;
    const rect = svg('rect', { x: (i % GRID_COLUMNS) * cell, y: Math.floor(i / GRID_COLUMNS) * cell, width: cell - 1, height: cell - 1, class: 'cell' + (i === chosen ? ' chosen' : '') + (e && e.shared ? ' shared' : '') + (e && e.hugeLeaf ? ' huge' : ''), fill: e ? shade(frac, table ? t.level : 1) : '#fff', 'data-index': i, 'data-shared': e && e.shared ? 'true' : 'false', 'data-leaf': e && e.hugeLeaf ? 'huge' : '' });
    const title = svg('title', {});
    title.textContent = 'entry ' + i + (e ? ' → ' + (e.hugeLeaf ? '' : 'frame ' + e.frame + ', ') + holds(e, t.level) + (e.shared ? ', shared by ' + e.refs + ' (copy-on-write)' : '') : '');
    rect.append(title);
    if (table) rect.addEventListener('click', () => zoom(depth, i));
    grid.append(rect);
  }
  const caption = 'level ' + t.level + ' · frame ' + t.frame + ' · ' + t.present + '/' + t.entriesPerTable + ' present' + (t.shared ? ' · ' + t.shared + ' shared (outlined)' : '') + (t.hugeLeaves ? ' · ' + t.hugeLeaves + ' 2 MiB leaves (green)' : '') + ' · ' + bytes(t.entrySpanBytes) + ' per entry';
  const box = el('div', { class: 'level' + (current ? ' current' : ''), 'data-level': t.level }, el('div', {}, caption), grid);
  if (!current) box.prepend(el('a', { href: '#', class: 'zoom-out', onclick: (ev) => { ev.preventDefault(); zoomOut(depth); } }, 'zoom out to level ' + t.level));
  return box;
}

function shade(frac, level) {
  if (level === 1) return CLASS_COLOURS.data;
  const light = Math.round(85 - 55 * frac); // fuller children are darker
  return 'hsl(207, 70%, ' + light + '%)';
}

function zoom(depth, index) {
  state.path = state.path.slice(0, depth).concat([index]);
  refreshMorsel();
}

function zoomOut(depth) {
  state.path = state.path.slice(0, depth);
  refreshMorsel();
}

function renderEntries(t) {
  const table = document.getElementById('entries');
  const flags = ['P', 'RW', 'US', 'A', 'D', 'PS', 'NX'];
  const head = ['index', 'frame', t.level > 1 ? 'child present / holds' : 'holds', 'shared'].concat(state.bits ? ['raw'].concat(flags, ['PFN', 'tag', 'meta']) : []);
  table.replaceChildren(el('tr', {}, ...head.map((h) => el('th', {}, h))));
  for (const e of t.entries) {
    const cells = [e.index, e.frame, e.hugeLeaf || t.level === 1 ? holds(e, t.level) : e.childPresent + '/512', e.shared ? 'by ' + e.refs : 'private'];
    const tr = el('tr', { 'data-index': e.index, 'data-leaf': e.hugeLeaf ? 'huge' : '' }, ...cells.map((c) => el('td', {}, c)));
    if (state.bits && e.bits) {
      tr.append(el('td', { class: 'raw' }, e.bits.raw));
      for (const f of flags) tr.append(el('td', { class: 'flag', 'data-flag': f }, e.bits[f] ? f : '·'));
      tr.append(el('td', {}, e.bits.pfn), el('td', {}, e.bits.orderTag), el('td', {}, e.bits.meta ? 'M' : '·'));
      tr.className = 'set';
    }
    table.append(tr);
  }
}

// --- frame map ---------------------------------------------------------------------------

let lastMap = null;

function renderFrames(f) {
  lastMap = f;
  document.getElementById('map-info').textContent = f.blocks + ' blocks of ' + bytes(f.blockFrames * 4096) + (f.cellBlocks > 1 ? ', ' + f.cellBlocks + ' per cell' : '') + ' · scan ' + f.costMs + ' ms' + (f.findings ? ' · ' + f.findings + ' scan finding(s) (a live region moves)' : '');
  document.getElementById('map-legend').replaceChildren(...f.classes.map((c) =>
    el('span', { class: 'legend', id: 'map-total-' + c, 'data-class': c, 'data-count': f.totals[c] }, el('span', { class: 'swatch', style: 'background:' + CLASS_COLOURS[c] }), c + ' ' + f.totals[c].toLocaleString('en'))));
  const canvas = document.getElementById('frame-map');
  const columns = Math.min(MAP_COLUMNS, f.cells);
  const rows = Math.ceil(f.cells / columns);
  const size = Math.max(6, Math.min(24, Math.floor(900 / columns)));
  canvas.width = columns * size;
  canvas.height = rows * size;
  canvas.setAttribute('data-cells', f.cells);
  const ctx = canvas.getContext('2d');
  const k = f.classes.length;
  for (let c = 0; c < f.cells; c++) {
    const x = (c % columns) * size;
    const y = Math.floor(c / columns) * size;
    let total = 0;
    for (let j = 0; j < k; j++) total += f.counts[c * k + j];
    let top = y + size - 1;
    for (let j = 0; j < k; j++) { // stacked: each class's share of the cell, free on top
      const h = total === 0 ? 0 : ((size - 1) * f.counts[c * k + (k - 1 - j)]) / total;
      ctx.fillStyle = CLASS_COLOURS[f.classes[k - 1 - j]];
      ctx.fillRect(x, top - h, size - 1, h + 0.5); // a 1-pixel gap between cells
      top -= h;
    }
  }
  canvas.onmousemove = (ev) => {
    const c = Math.floor(ev.offsetY / size) * columns + Math.floor(ev.offsetX / size);
    if (!lastMap || c >= lastMap.cells) return;
    const parts = lastMap.classes.map((name, j) => name + ' ' + lastMap.counts[c * k + j]).join(', ');
    document.getElementById('map-hover').textContent = 'cell ' + c + ' (blocks ' + c * lastMap.cellBlocks + '…' + ((c + 1) * lastMap.cellBlocks - 1) + '): ' + parts;
  };
}

// --- refresh and live updates ---------------------------------------------------------------

function scheduleRetry(ms) {
  if (state.retry !== null) return;
  state.retry = setTimeout(() => { state.retry = null; refresh(); }, ms);
}

/** Redraws everything; a refresh asked for while one runs runs once more afterwards. */
async function refresh() {
  if (state.refreshing) { state.pending = true; return; }
  state.refreshing = true;
  try {
    const [region, names, frames] = await Promise.all([api('/api/region'), api('/api/names'), api('/api/frames')]);
    renderRegion(region);
    renderNames(names);
    renderFrames(frames);
    await refreshMorsel();
    document.body.setAttribute('data-refreshed', String(Date.now()));
  } catch (e) {
    document.getElementById('names-info').textContent = 'error: ' + e.message;
  } finally {
    state.refreshing = false;
    if (state.pending) { state.pending = false; refresh(); }
  }
}

function connect() {
  const live = document.getElementById('live');
  const events = new EventSource(apiUrl('/api/events'));
  events.onopen = () => { live.textContent = 'live'; live.className = 'on'; };
  events.onerror = () => { live.textContent = 'reconnecting…'; live.className = 'off'; };
  events.addEventListener('summary', () => {
    state.updates++;
    const u = document.getElementById('updates');
    u.textContent = state.updates + ' update(s)';
    u.setAttribute('data-count', state.updates);
    refresh();
  });
  events.addEventListener('failure', (ev) => { live.textContent = 'error: ' + JSON.parse(ev.data).error.message; });
}

document.getElementById('bits-toggle').addEventListener('change', (ev) => { state.bits = ev.target.checked; refreshMorsel(); });
refresh();
connect();
