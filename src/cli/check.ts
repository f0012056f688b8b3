/**
 * `morsel check --region R [--repair] [--json]`: the region fsck (see
 * src/recovery/check.ts). It opens the region WITHOUT recovery so it reports
 * what is on media; a crashed region it does not repair stays marked crashed.
 *
 * Exit status: 0 every invariant holds, 1 problems found (the report lists
 * them; with --repair: problems remain after repairing), 2 the check could
 * not run (no such file, ...). A region whose superblock fails validation is
 * a problem, not an error: it is reported with code ECORRUPT/EVERSION and the
 * file is never modified (the superblock is validated before it is mapped).
 */
import { Command, Option } from 'commander';
import { MorselError, isMorselError } from '../errors.js';
import { Memory } from '../memory.js';
import { checkRegion, type CheckReport, type CheckSummary } from '../recovery/check.js';

type Report = CheckSummary & Partial<CheckReport>;

export function registerCheck(program: Command): void {
  program
    .command('check')
    .description('verify every invariant of a region (trees, references, allocator); --repair fixes what is safe to fix')
    .addOption(new Option('--region <file>', 'persistent region file').makeOptionMandatory())
    .option('--repair', 'reclaim lost frames, rebuild the allocator, clear entries that cannot be right; finishes a pending recovery')
    .addOption(new Option('--json', 'print one JSON object on stdout'))
    .action((o: { region: string; repair?: boolean; json?: boolean }) => {
      let report: Report;
      try {
        report = runCheck(o.region, !!o.repair);
      } catch (e) {
        const err = isMorselError(e) ? e : new MorselError('EINVAL', e instanceof Error ? e.message : String(e));
        if (o.json) process.stdout.write(JSON.stringify({ error: { code: err.code, message: err.message } }) + '\n');
        else process.stderr.write(`morsel: ${err.message}\n`);
        process.exitCode = 2;
        return;
      }
      process.stdout.write((o.json ? JSON.stringify(report) : describe(report)) + '\n');
      process.exitCode = report.ok ? 0 : 1;
    });
}

/** Opens without recovery, checks (and repairs), closes. Superblock failures become a report. */
export function runCheck(path: string, repair: boolean): Report {
  let memory: Memory;
  try {
    // Repair needs the region alone (EBUSY otherwise); a plain check reads it as it is, beside live users.
    memory = Memory.open(path, { mode: repair ? 'exclusive' : 'readonly', recover: false });
  } catch (e) {
    if (!isMorselError(e, 'ECORRUPT') && !isMorselError(e, 'EVERSION')) throw e;
    return { ok: false, lostFrames: 0, problems: [{ code: e.code, what: e.message, where: 'superblock', repairable: false }] };
  }
  try {
    return checkRegion(memory, { repair });
  } finally {
    memory.close();
  }
}

function describe(r: Report): string {
  const lines: string[] = [];
  if (r.before) lines.push(`before repair: ${r.before.problems.length} problem(s), ${r.before.lostFrames} lost frame(s)`);
  for (const p of r.repaired ?? []) lines.push(`repaired ${p.code}: ${p.what} (${p.where})`);
  if (r.frames) lines.push(`frames: ${r.frames.total} total, ${r.frames.allocated} allocated, ${r.frames.referenced} referenced; ${r.morsels} morsel(s), ${r.spaces} space(s)`);
  for (const p of r.problems) lines.push(`${p.code}: ${p.what} (${p.where})${p.repairable ? ' [repairable]' : ''}`);
  lines.push(r.ok ? 'ok' : `${r.problems.length} problem(s), ${r.lostFrames} lost frame(s)`);
  return lines.join('\n');
}
