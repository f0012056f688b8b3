/**
 * What `morsel check --region R [--repair [--yes]] [--json]` runs (the
 * command is registered in region.ts; this module loads only when it runs):
 * the region fsck (see src/recovery/check.ts). It opens the region WITHOUT recovery so it reports
 * what is on media; a crashed region it does not repair stays marked crashed.
 * On a region other processes use, the answer is read-only and lists only
 * problems stable across two scans; --repair then gives EBUSY.
 *
 * `--repair` alone is a dry run: it prints every change it would make and
 * every frame it would reclaim, and writes nothing. `--repair --yes`
 * applies it. Morsels with damage it cannot prove harmless are quarantined:
 * kept and listed, never cleared or reclaimed.
 *
 * Exit status: 0 every invariant holds, 1 problems found (the report lists
 * them; with --repair --yes: problems remain after repairing), 2+ the check
 * could not run (the error's class: 3 no such file, 7 EBUSY, ...; see common.ts). A region whose superblock fails validation is
 * a problem, not an error: it is reported with code ECORRUPT/EVERSION and the
 * file is never modified (the superblock is validated before it is mapped).
 */
import { isMorselError } from '../errors.js';
import { Memory } from '../memory.js';
import { checkRegion, type CheckReport, type CheckSummary } from '../recovery/check.js';

export type Report = CheckSummary & Partial<CheckReport>;

/** The command itself lives in region.ts (main.ts must not load this module); re-exported for callers that build a program with only `check`. */
export { registerCheck } from './region.js';

/**
 * Opens without recovery, checks (and plans or applies a repair), closes.
 * Superblock failures become a report. Whether others use the region comes
 * from opening it (membership), never from a flag the user passes.
 */
export function runCheck(path: string, opts: { repair: boolean; apply: boolean }): Report {
  let memory: Memory;
  try {
    // Repair needs the region alone (EBUSY otherwise); a plain check reads it as it is, beside live users.
    memory = Memory.open(path, { mode: opts.repair ? 'exclusive' : 'readonly', recover: false });
  } catch (e) {
    if (!isMorselError(e, 'ECORRUPT') && !isMorselError(e, 'EVERSION')) throw e;
    return { ok: false, lostFrames: 0, problems: [{ code: e.code, what: e.message, where: 'superblock', repairable: false }] };
  }
  try {
    return checkRegion(memory, { ...opts, live: memory.region.othersUsing() });
  } finally {
    memory.close();
  }
}

/** The text form of a report: one line per finding, then `ok` or the count. */
export function describe(r: Report): string {
  const lines: string[] = [];
  if (r.live) lines.push(`region in use by other processes: read-only check, stable problems only; ${r.suspectFrames ?? 0} frame(s) unreachable but possibly in flight (check again when idle)`);
  if (r.before) lines.push(`before repair: ${r.before.problems.length} problem(s), ${r.before.lostFrames} lost frame(s)`);
  const verb = r.applied ? 'repaired' : 'would repair';
  for (const p of r.plan ?? []) lines.push(`${verb} ${p.code}: ${p.what} (${p.where})`);
  if (r.plan && !r.applied) lines.push('dry run: nothing was changed; run again with --repair --yes to apply');
  if (r.frames) lines.push(`frames: ${r.frames.total} total, ${r.frames.allocated} allocated, ${r.frames.referenced} referenced; ${r.morsels} morsel(s), ${r.spaces} space(s)`);
  for (const p of r.problems) lines.push(`${p.code}: ${p.what} (${p.where})${p.repairable ? ' [repairable]' : ''}`);
  for (const id of r.quarantined ?? []) lines.push(`quarantined morsel ${id}: kept as it is (damaged subtree; readable where intact)`);
  lines.push(r.ok ? 'ok' : `${r.problems.length} problem(s), ${r.lostFrames} lost frame(s)`);
  return lines.join('\n');
}
