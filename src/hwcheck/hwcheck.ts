/**
 * hwcheck: proves that morsel's page tables are bit-exact x86-64 by handing
 * the region file to QEMU as physical memory and letting its MMU (code
 * nobody here wrote) translate through an address space built by morsel.
 *
 * Flow: build the scenario through the library, write the boot parameter
 * block into frame 1, close the region (msync, clean state), boot the
 * guest, parse its serial lines. Afterwards a caller's region is put back:
 * reopening reaps the address space (spaces never outlive their process),
 * the scenario's morsels are destroyed and frame 1 restored. A fresh region
 * lives in a temporary directory that is removed.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Memory } from '../memory.js';
import { MiB } from '../units.js';
import type { Levels } from '../space/address-space.js';
import { EXIT_FAIL, EXIT_PASS, checkGuestRam, guestImage, runGuest, type GuestRun } from './qemu.js';
import { buildScenario, corrupt, repair, restoreParams, writeParams, type Check, type Corruption, type Damage } from './scenario.js';
import type { MorselId } from '../morsel/id.js';

export interface HwcheckOptions {
  levels: Levels;
  /** an existing region file; omitted: a fresh region in a temporary directory */
  region?: string;
  /** size of the fresh region (default 64 MiB) */
  sizeBytes?: number;
  /** negative mode: damage one entry after building, so a check must fail */
  corrupt?: Corruption;
  timeoutMs?: number;
}

export interface CheckResult {
  name: string;
  ok: boolean;
  detail: string;
}

export interface HwcheckResult {
  ok: boolean;
  levels: Levels;
  checks: CheckResult[];
  qemuSeconds: number;
  /** QEMU's exit status: EXIT_PASS all passed, EXIT_FAIL a check failed, 0 triple fault */
  exitStatus: number | null;
  /** guest lines that are not a check's (begin/done/fatal), for diagnosis */
  log: string[];
  /** in negative mode: the check the damage must break */
  corrupted?: string;
}

export function hwcheck(opts: HwcheckOptions): HwcheckResult {
  const image = guestImage(); // first: a missing nasm fails before any region is touched
  const tmpDir = opts.region === undefined ? fs.mkdtempSync(path.join(os.tmpdir(), 'morsel-hwcheck-')) : null;
  const file = opts.region ?? path.join(tmpDir!, 'hwcheck.region');
  try {
    const mem = tmpDir ? Memory.create(file, opts.sizeBytes ?? 64 * MiB) : Memory.open(file);
    const morsels: MorselId[] = []; // filled as they are created, so a failed build is undone too
    let checks: Check[] = [];
    let damage: Damage | null = null;
    let savedParams: Uint8Array | null = null;
    try {
      let run: GuestRun;
      try {
        checkGuestRam(mem.region.byteLength);
        const space = mem.createSpace({ levels: opts.levels });
        const scenario = buildScenario(mem, space, morsels);
        checks = scenario.checks;
        if (opts.corrupt) damage = corrupt(mem, scenario, opts.corrupt);
        savedParams = writeParams(mem, space, checks);
        mem.region.sync(); // QEMU reads the file, not our mapping
        run = runGuest(file, mem.region.byteLength, image, opts.timeoutMs);
      } finally {
        mem.close(); // after the guest ran: close() destroys the scenario's space
      }
      return judge(opts.levels, checks, run, damage);
    } finally {
      if (!tmpDir) restore(file, morsels, damage, savedParams);
    }
  } finally {
    if (tmpDir) fs.rmSync(tmpDir, { recursive: true, force: true });
  }
}

/** Puts a caller's region back as it was (plus whatever the allocator reshuffled). */
function restore(file: string, morsels: MorselId[], damage: Damage | null, savedParams: Uint8Array | null): void {
  const mem = Memory.open(file);
  try {
    if (damage) repair(mem, damage);
    for (const id of morsels) mem.morsels.destroy(id);
    if (savedParams) restoreParams(mem, savedParams);
  } finally {
    mem.close();
  }
}

const CHECK_LINE = /^CHECK (\d+) (OK|FAIL)(.*)$/;

function judge(levels: Levels, checks: Check[], run: GuestRun, damage: Damage | null): HwcheckResult {
  const { status, signal, serial, stderr, seconds } = run;
  const lines = serial.split(/\r?\n/).filter((l) => l.length > 0);
  const seen = new Map<number, { ok: boolean; detail: string }>();
  const log: string[] = [];
  for (const line of lines) {
    const m = CHECK_LINE.exec(line);
    if (m) seen.set(Number(m[1]), { ok: m[2] === 'OK', detail: (m[2] === 'OK' ? '' : 'FAIL') + m[3] });
    else log.push(line);
  }
  if (signal) log.push(`qemu killed by ${signal} (timeout?)`);
  else if (status === 0) log.push('qemu exit status 0: the guest triple-faulted (reset under -no-reboot)');
  else if (status !== EXIT_PASS && status !== null && status !== EXIT_FAIL) log.push(`qemu exit status ${status}`);
  if (stderr.trim()) log.push(...stderr.trim().split('\n').map((l) => `qemu: ${l}`));
  const results = checks.map((c, i) => {
    const r = seen.get(i);
    const where = `vaddr 0x${c.vaddr.toString(16)}`;
    if (!r) return { name: c.name, ok: false, detail: `${where}: no result (guest stopped early)` };
    return { name: c.name, ok: r.ok, detail: r.ok ? where : `${where}: ${r.detail.trim()}` };
  });
  const ok = status === EXIT_PASS && seen.size === checks.length && results.every((r) => r.ok);
  return { ok, levels, checks: results, qemuSeconds: seconds, exitStatus: status, log, ...(damage ? { corrupted: damage.check } : {}) };
}
