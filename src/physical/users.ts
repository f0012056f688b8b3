/**
 * Who has a region file open. Several processes may share a persistent
 * region; each registers its pid in `<file>.users` while it has the file
 * open. This decides what "found open" means: if another registered process
 * is alive, the region is in use and the newcomer joins it (no recovery, no
 * counter rebuild, which would clobber the live users' state); if none is,
 * whoever left it open crashed, and the newcomer recovers it.
 *
 * A user that died while others stayed (a pid still listed, no longer
 * alive) makes the region "dirty": its in-flight frames are only reclaimed by
 * recovery, which cannot run under live users, so the last user to leave then
 * does not mark the region clean, and the next sole opener recovers it.
 *
 * Updates to the users file are serialized by a lock directory (mkdir is
 * atomic); a lock older than STALE_MS was left by a process killed inside
 * the few-microsecond critical section and is broken.
 */
import * as fs from 'node:fs';
import { MorselError } from '../errors.js';

const STALE_MS = 10_000;
const LOCK_RETRIES = 5_000; // x 1 ms
const sleeper = new Int32Array(new SharedArrayBuffer(4));

function withUsersLock<T>(path: string, fn: () => T): T {
  const dir = `${path}.lock`;
  for (let attempt = 0; ; attempt++) {
    try {
      fs.mkdirSync(dir);
      break;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw new MorselError('EIO', `cannot lock ${path}: ${(e as Error).message}`);
      if (attempt >= LOCK_RETRIES) throw new MorselError('EBUSY', `${dir} is held by another process`);
      try {
        if (Date.now() - fs.statSync(dir).mtimeMs > STALE_MS) fs.rmdirSync(dir);
      } catch {
        /* another process broke or released it first */
      }
      Atomics.wait(sleeper, 0, 0, 1);
    }
  }
  try {
    return fn();
  } finally {
    fs.rmdirSync(dir);
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

interface Users {
  /** live pids other than ours */
  others: number[];
  /** some registered user died without leaving */
  dirty: boolean;
}

const DIRTY = 'dirty';

function readUsers(path: string): Users {
  let text = '';
  try {
    text = fs.readFileSync(`${path}.users`, 'utf8');
  } catch {
    return { others: [], dirty: false };
  }
  const users: Users = { others: [], dirty: false };
  for (const line of text.split('\n')) {
    if (line === DIRTY) users.dirty = true;
    const pid = Number(line);
    if (line === '' || line === DIRTY || pid === process.pid) continue;
    if (Number.isInteger(pid) && pid > 0 && isAlive(pid)) users.others.push(pid);
    else users.dirty = true; // listed but gone: it never left
  }
  return users;
}

function writeUsers(path: string, pids: number[], dirty: boolean): void {
  if (pids.length === 0) fs.rmSync(`${path}.users`, { force: true });
  else fs.writeFileSync(`${path}.users`, [...pids, ...(dirty ? [DIRTY] : [])].join('\n') + '\n');
}

/** Registers this process as a user of `path`; tells whether other live processes use it. */
export function joinUsers(path: string): { othersAlive: boolean } {
  return withUsersLock(path, () => {
    const { others, dirty } = readUsers(path);
    writeUsers(path, [...others, process.pid], dirty && others.length > 0);
    return { othersAlive: others.length > 0 };
  });
}

/**
 * Unregisters this process. `last`: no other live user remains; `dirty`: a
 * user died while the region was shared, so it must not be marked clean.
 */
export function leaveUsers(path: string): { last: boolean; dirty: boolean } {
  return withUsersLock(path, () => {
    const { others, dirty } = readUsers(path);
    writeUsers(path, others, dirty);
    return { last: others.length === 0, dirty };
  });
}
