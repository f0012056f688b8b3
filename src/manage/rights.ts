/**
 * Rights of names: owner uid/gid and mode bits like files, checked against
 * the calling OS user (root, uid 0, is the superuser and passes every check
 * but the execute bit, which needs some x bit like on Linux).
 *
 * Threat model: the region file's own permissions are the outer boundary.
 * Whoever can write the region file can change any byte in it, so morsel
 * rights cannot stop them; they separate users who go through the API, the
 * CLI or a server that passes its client's credentials (Names' `cred`).
 */
import { MorselError, check } from '../errors.js';

export interface Credentials {
  uid: number;
  gid: number;
  /** supplementary groups */
  groups: readonly number[];
}

export interface AccessRights {
  read: boolean;
  write: boolean;
  execute: boolean;
}

export const R_OK = 4;
export const W_OK = 2;
export const X_OK = 1;
export const MODE_MASK = 0o7777;
const ROOT_UID = 0;

/** The calling process's credentials (uid/gid 0 where the platform has none). */
export function processCredentials(): Credentials {
  const uid = process.getuid?.() ?? 0;
  const gid = process.getgid?.() ?? 0;
  return { uid, gid, groups: process.getgroups?.() ?? [gid] };
}

export const isSuperuser = (cred: Credentials): boolean => cred.uid === ROOT_UID;

/** The rwx bits (R_OK | W_OK | X_OK) `cred` holds on an object of owner `uid`/`gid` and `mode`. */
export function grantedBits(cred: Credentials, owner: { uid: number; gid: number; mode: number }): number {
  const mode = owner.mode & 0o777;
  if (isSuperuser(cred)) return R_OK | W_OK | (mode & 0o111 ? X_OK : 0);
  if (cred.uid === owner.uid) return (mode >> 6) & 7;
  if (cred.gid === owner.gid || cred.groups.includes(owner.gid)) return (mode >> 3) & 7;
  return mode & 7;
}

/** EACCES unless `cred` holds every bit of `want` on the object; the message names `verb` and `path` (built only on failure). */
export function checkAccess(cred: Credentials, owner: { uid: number; gid: number; mode: number }, want: number, verb: string, path: string): void {
  if ((grantedBits(cred, owner) & want) === want) return;
  throw new MorselError('EACCES', `${verb} ${path}: permission denied (mode ${(owner.mode & MODE_MASK).toString(8).padStart(4, '0')}, owner ${owner.uid}:${owner.gid})`);
}

/** Validates a mode argument: an integer in 0..0o7777. */
export function checkMode(mode: number): number {
  check(Number.isInteger(mode) && mode >= 0 && mode <= MODE_MASK, 'EINVAL', () => `mode must be 0..0o7777, got ${mode}`);
  return mode;
}

/** Parses octal mode text ("0640", "640"). */
export function parseMode(text: string): number {
  check(/^0?[0-7]{1,4}$/.test(text.trim()), 'EINVAL', () => `mode must be octal like 0640, got ${JSON.stringify(text)}`);
  return checkMode(Number.parseInt(text.trim(), 8));
}
