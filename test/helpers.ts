import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { isMorselError } from '../src/errors.js';
import type { FrameAllocator, Order } from '../src/alloc/llfree.js';
import type { Memory } from '../src/memory.js';
import type { Frame } from '../src/units.js';
import { Registry, userSlotRoot } from '../src/morsel/registry.js';
import { SLOT_SPACES_ROOT } from '../src/physical/layout.js';
import { forEachUsageFrame } from '../src/morsel/usage.js';

/**
 * A fresh directory under the OS temp dir, removed when this test process exits
 * (pass, fail or throw), so that region files never pile up between runs.
 */
export function tempDir(prefix: string): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  process.on('exit', () => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/**
 * Free frames plus the frames of the region's registries (live morsels,
 * this process's address spaces and usage counts) and of the reference-count table. Registry tables grow lazily and persist, so this is the
 * number that must balance when everything a test created is gone.
 */
export function freeFrames(m: Memory): number {
  let tables = 0;
  m.morsels.live.forEach(() => {}, () => tables++);
  new Registry(m.region, m.alloc, userSlotRoot(m.region, m.region.userSlot, SLOT_SPACES_ROOT)).forEach(() => {}, () => tables++);
  forEachUsageFrame(m.region, m.alloc, m.region.userSlot, () => tables++);
  m.morsels.cow.refs.forEachStorageFrame(() => tables++);
  m.morsels.cow.lazy.forEachTable(() => tables++);
  return m.alloc.freeFrames() + tables;
}

/**
 * Takes every free frame of `order` (as another user could), at most
 * `limit` (default: the region's frame count), until ENOSPC; any other
 * error propagates. Free them again with alloc.free(f, order).
 */
export function takeAll(alloc: FrameAllocator, order: Order = 0, limit = alloc.region.frameCount): Frame[] {
  const taken: Frame[] = [];
  for (let i = 0; i < limit; i++) {
    try {
      taken.push(alloc.alloc(order));
    } catch (e) {
      if (isMorselError(e, 'ENOSPC')) break;
      throw e;
    }
  }
  return taken;
}

/** The `morsel` command of this checkout (dist/test -> bin/morsel.js). */
export const MORSEL = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../bin/morsel.js');

export interface CliRun {
  status: number | null;
  out: string;
  err: string;
  /** stdout parsed as JSON, or null when it is not JSON */
  json: any;
  raw: Buffer;
}

/** Runs `morsel ...args` to completion (stdin `input`, extra `env`, an optional time bound). */
export function runMorsel(args: string[], opts: { input?: Buffer; env?: Record<string, string>; timeoutMs?: number } = {}): CliRun {
  const r = spawnSync(process.execPath, [MORSEL, ...args], { input: opts.input, maxBuffer: 256 << 20, env: { ...process.env, ...opts.env }, timeout: opts.timeoutMs });
  const out = r.stdout.toString();
  let json: any = null;
  try {
    json = JSON.parse(out);
  } catch {
    /* not JSON */
  }
  return { status: r.status, out, err: r.stderr.toString(), json, raw: r.stdout };
}

/** "ok", or the error code (else the message) an operation fails with: for outcome tables. */
export function outcome(fn: () => void): string {
  try {
    fn();
    return 'ok';
  } catch (e) {
    return (e as { code?: string }).code ?? String(e);
  }
}
