import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fork } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Memory } from '../src/memory.js';
import { checkRegion } from '../src/recovery/check.js';
import { CRASH_ENV, CRASH_MARK, NAMESPACE_CRASH_POINTS } from '../src/crash-point.js';
import { MiB } from '../src/units.js';
import { type Model, type Op, expectedRecords, modelOp, snapshotTree, sortedModel } from './namespace-model.js';
import { tempDir } from './helpers.js';

const child = new URL('./workers/namespace-crash-child.js', import.meta.url);
/** How long a child may run before the parent kills it (an armed point may be rare). */
const MAX_RUN_MS = 1500;

interface Run {
  fired: string | null;
  lines: string[];
}

/** Runs the child until it dies at its armed point, or SIGKILL after `killAfterMs`. */
async function runChild(file: string, logFile: string, seed: number, first: number, env: Record<string, string>, killAfterMs: number, maxOps = 0): Promise<Run> {
  const p = fork(child, [file, logFile, String(seed), String(first), String(maxOps)], { stdio: ['ignore', 'ignore', 'pipe', 'ipc'], env: { ...process.env, ...env } });
  let stderr = '';
  p.stderr!.on('data', (d) => (stderr += String(d)));
  const exited = new Promise<void>((res) => p.once('exit', () => res()));
  await new Promise<void>((res, rej) => {
    p.once('message', () => res());
    p.once('exit', (c, s) => (s === 'SIGKILL' || (c === 0 && maxOps > 0) ? res() : rej(new Error(`child exited ${c}: ${stderr}`))));
  });
  const timer = setTimeout(() => p.kill('SIGKILL'), killAfterMs);
  await exited;
  clearTimeout(timer);
  assert.ok(!/Error|assert/i.test(stderr.replace(new RegExp(`${CRASH_MARK}.*`, 'g'), '')), `child failed: ${stderr}`);
  const m = new RegExp(`${CRASH_MARK} ([a-z:-]+):`).exec(stderr);
  return { fired: m === null ? null : m[1], lines: fs.readFileSync(logFile, 'utf8').split('\n').filter((l) => l !== '') };
}

/**
 * Replays the log on the model: every completed op must have given the
 * model's code; returns the model without and with the in-flight op.
 */
function replay(model: Model, lines: string[]): { before: Model; after: Model; next: number } {
  let inflight: { i: number; op: Op } | null = null;
  let next = 0;
  for (const line of lines) {
    const [tag, iText, rest] = [line[0], line.split(' ')[1], line.slice(line.indexOf(' ', 2) + 1)];
    const i = Number(iText);
    next = i + 1;
    if (tag === 'B') inflight = { i, op: JSON.parse(rest) as Op };
    else {
      assert.ok(inflight !== null && inflight.i === i, 'log is well formed');
      assert.equal(modelOp(model, inflight.op, i), rest, `op ${i} ${JSON.stringify(inflight.op)} gave the model's code`);
      inflight = null;
    }
  }
  const before = sortedModel(new Map(model));
  if (inflight !== null) modelOp(model, inflight.op, inflight.i);
  return { before, after: sortedModel(new Map(model)), next };
}

const NOTHING_TO_COLLECT = { freedRecords: 0, renamesCommitted: 0, renamesRolledBack: 0, dyingRemoved: 0, orphansRemoved: 0, countsFixed: 0, tombstonesDropped: 0, keysDropped: 0 };

/**
 * Opens the region alone, which recovers it when its last user crashed (the
 * scanner with the registered namespace visitor rebuilds the allocator, then
 * the namespace's own collection runs: Memory.recover), and checks that
 * recovery was complete: `crashed` says whether a recovery must have run
 * (null: either; a survivor that opened after the death recovered itself);
 * the tree is the state before or after the in-flight op (when `expect`
 * is given), every record is
 * accounted, a further collection finds nothing, and `morsel check` finds
 * no lost frame. Returns the tree.
 */
function recoverAndCheck(file: string, crashed: boolean | null, expect: { before: Model; after: Model } | null, what: string): Model {
  // As found: the namespace allocates one table frame at a time, so a crash loses at most that one in flight.
  const found = Memory.open(file, { mode: 'exclusive', recover: false });
  const asFound = checkRegion(found);
  found.close(); // still marked crashed: nothing recovered
  if (crashed !== null) assert.equal(asFound.crashed, crashed, `${what}: the last user crashed`);
  assert.ok(asFound.lostFrames <= 1, `${what}: at most the one in-flight table frame lost before recovery (${asFound.lostFrames})`);
  const m = Memory.open(file, { mode: 'exclusive' });
  try {
    assert.equal(m.report?.crashed, asFound.crashed, `${what}: recovered iff the last user crashed`);
    const ns = m.names.ns;
    const tree = snapshotTree(ns);
    const same = (a: Model, b: Model): boolean => JSON.stringify([...a]) === JSON.stringify([...b]);
    if (expect !== null) assert.ok(same(tree, expect.before) || same(tree, expect.after), `${what}: recovered tree is the state before or after the in-flight op\n got ${JSON.stringify([...tree])}\n before ${JSON.stringify([...expect.before])}\n after ${JSON.stringify([...expect.after])}`);
    assert.equal(ns.stats().records, expectedRecords(ns), `${what}: every claimed record is a live name, directory object or the root's`);
    const again = ns.collectGarbage();
    if (process.env.NS_CRASH_DEBUG) console.error(what, JSON.stringify(m.report), JSON.stringify(again));
    assert.deepEqual({ ...again, tombstonesDropped: 0, keysDropped: 0 }, NOTHING_TO_COLLECT, `${what}: recovery left nothing to collect`);
    assert.deepEqual(snapshotTree(ns), tree, `${what}: a collection changes no name`);
    const report = checkRegion(m);
    assert.equal(report.ok, true, `${what}: check finds no problem: ${JSON.stringify(report.problems)}`);
    assert.equal(report.lostFrames, 0, `${what}: no frame lost`);
    return new Map(tree);
  } finally {
    m.close();
  }
}

test('SIGKILL at every namespace crash point and at random moments: each name present or absent, roll-forward applied, no leak', async () => {
  const dir = tempDir('morsel-names-crash-');
  try {
    const file = path.join(dir, 'r.region');
    Memory.create(file, 16 * MiB).close();
    let model: Model = new Map();
    let next = 0;
    const fired = new Map<string, number>();
    const rounds: { env: Record<string, string>; killMs: number }[] = [];
    for (const [k, point] of NAMESPACE_CRASH_POINTS.flatMap((p) => [1, 2].map((rep) => [rep, p] as const))) {
      rounds.push({ env: { [CRASH_ENV]: `${point}:${point === 'names:before-link-table' ? k : 1 + ((next + k * 7) % 6)}` }, killMs: MAX_RUN_MS });
    }
    for (let r = 0; r < 8; r++) rounds.push({ env: {}, killMs: 20 + ((r * 53) % 150) });
    for (const [round, { env, killMs }] of rounds.entries()) {
      const logFile = path.join(dir, `log-${round}`);
      const run = await runChild(file, logFile, 1000 + round, next, env, killMs);
      if (run.fired !== null) fired.set(run.fired, (fired.get(run.fired) ?? 0) + 1);
      const expect = replay(model, run.lines);
      next = expect.next;
      model = recoverAndCheck(file, true, expect, `round ${round} (${env[CRASH_ENV] ?? `kill after ${killMs} ms`})`);
      fs.rmSync(logFile);
    }
    for (const point of NAMESPACE_CRASH_POINTS) assert.ok((fired.get(point) ?? 0) > 0, `crash point ${point} fired (fired: ${JSON.stringify([...fired])})`);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

/** The codes a random operation may legitimately give (never EBUSY, ECORRUPT or an assertion). */
const EXPECTED_CODES = new Set(['ok', 'ENOENT', 'EEXIST', 'ENOTEMPTY', 'ENOTDIR', 'EISDIR', 'EINVAL']);

test('two processes at once, one dies at a crash point: the survivor works through its leftovers, recovery finds a consistent namespace', async () => {
  const dir = tempDir('morsel-names-two-');
  try {
    const file = path.join(dir, 'r.region');
    Memory.create(file, 16 * MiB).close();
    const points = ['names:rename-after-mark', 'names:rename-after-pending', 'names:rename-after-commit', 'names:rmdir-after-dying', 'names:after-tomb', 'names:after-claim', 'names:update-after-swap'];
    for (const [round, point] of points.entries()) {
      const logA = path.join(dir, `a-${round}`);
      const logB = path.join(dir, `b-${round}`);
      // A dies at its armed point; B runs a fixed number of operations concurrently and after A's death.
      const [a, b] = await Promise.all([
        runChild(file, logA, 7000 + round, 0, { [CRASH_ENV]: `${point}:${10 + round}` }, MAX_RUN_MS),
        runChild(file, logB, 8000 + round, 0, {}, 10 * MAX_RUN_MS, 3000),
      ]);
      assert.equal(a.fired, point, `round ${round}: A died at ${point}`);
      const codes = (lines: string[]): string[] => lines.filter((l) => l.startsWith('E ')).map((l) => l.split(' ')[2]);
      const bad = [...codes(a.lines), ...codes(b.lines)].filter((c) => !EXPECTED_CODES.has(c));
      assert.deepEqual(bad, [], `round ${round}: only expected error codes`);
      assert.equal(codes(b.lines).length, 3000, `round ${round}: B completed every operation`);
      // A died while B was live (recovered at this open) or before B opened (B recovered it).
      // Two writers interleave: the tree is checked for consistency, not against a model.
      recoverAndCheck(file, null, null, `round ${round}`);
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
