// Processes sharing a region: membership is OFD locks on the file (see
// src/physical/membership.ts); membership.test.ts covers links, exclusive
// sessions, reaping and read-only opens.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fork, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Memory } from '../src/memory.js';
import { hex } from '../src/morsel/id.js';
import { Region } from '../src/physical/region.js';
import { MiB } from '../src/units.js';
import { tempDir } from './helpers.js';

const childUrl = new URL('./workers/region-user.js', import.meta.url);

async function startUser(file: string): Promise<{ child: ChildProcess; id: string; report: { crashed: boolean; joined?: boolean } }> {
  const child = fork(childUrl, [file], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const msg = await new Promise<{ id: string; report: { crashed: boolean; joined?: boolean } }>((res, rej) => child.once('message', res as never).once('exit', (c) => rej(new Error(`child exited ${c}`))));
  return { child, ...msg };
}

const exited = (c: ChildProcess) => new Promise((r) => c.once('exit', r));

test('processes share a region: a newcomer joins a live user without recovering it', async () => {
  const dir = tempDir('morsel-users-');
  const file = path.join(dir, 'r.region');
  try {
    Memory.create(file, 8 * MiB).close();
    const a = await startUser(file);
    assert.equal(a.report.crashed, false);
    const mine = Memory.open(file);
    assert.equal(mine.report?.joined, true, 'joined the live user');
    assert.equal(mine.report?.crashed, false);
    assert.ok(mine.morsels.list().map(hex).includes(a.id), "sees the other process's morsel");
    const b = mine.morsels.create(0);
    mine.close(); // not the last user: stays open
    a.child.send('close');
    await exited(a.child);
    const after = Region.openFile(file);
    assert.equal(after.crashed, false, 'the last user to leave marked it clean');
    after.region.close();
    const again = Memory.open(file);
    assert.equal(again.morsels.list().length, 2);
    again.morsels.destroy(b);
    again.close();
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('a user killed while others stay makes the region dirty: the next sole opener recovers', async () => {
  const dir = tempDir('morsel-users-');
  const file = path.join(dir, 'r.region');
  try {
    Memory.create(file, 8 * MiB).close();
    const mine = Memory.open(file);
    const a = await startUser(file);
    assert.equal(a.report.joined, true);
    a.child.kill('SIGKILL');
    await exited(a.child);
    mine.close(); // last live user, but one died: must not be marked clean
    const next = Memory.open(file);
    assert.equal(next.report?.crashed, true, 'recovered');
    assert.ok(next.morsels.list().map(hex).includes(a.id), "the killed user's acknowledged create survives");
    next.close();
    assert.equal(Region.openFile(file).crashed, false);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
