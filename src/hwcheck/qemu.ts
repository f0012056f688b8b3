/**
 * Runs a region file as the physical memory of a QEMU x86-64 guest.
 *
 * `memory-backend-file` makes file offset N*4096 guest-physical frame N as
 * long as all RAM sits below the PCI hole (region < 3.5 GiB); share=off maps
 * it privately, so the guest's writes (and the accessed/dirty bits its MMU
 * sets) never reach the file. TCG, not KVM: it needs no /dev/kvm and its
 * `-cpu max` has LA57 on any host.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { MorselError } from '../errors.js';

const QEMU = 'qemu-system-x86_64';
const NASM = 'nasm';
const INSTALL_HINT = 'qemu-system-x86_64 / nasm not installed: apt-get install qemu-system-x86 nasm (or scripts/install-system-deps.sh)';
const IMAGE_BYTES = 64 * 1024;
/** i440fx keeps all RAM below 4 GiB only under this size; above it frame N != guest-physical N. */
export const MAX_GUEST_RAM = 0xe000_0000;
/** QEMU rounds RAM to 8 KiB and insists the backend matches. */
const RAM_ALIGN = 8192;
/** isa-debug-exit turns the guest's value v into exit status (v << 1) | 1. */
export const EXIT_PASS = (0x10 << 1) | 1;
export const EXIT_FAIL = (0x11 << 1) | 1;

/** The package root: dist/src/hwcheck/ -> ../../.. (sources are not run directly). */
const ROOT = fileURLToPath(new URL('../../../', import.meta.url));

export interface GuestRun {
  /** process exit status; null if killed (timeout) */
  status: number | null;
  signal: string | null;
  serial: string;
  stderr: string;
  seconds: number;
}

function missingTool(tool: string, e: unknown): MorselError {
  return new MorselError('ENOTSUP', `${INSTALL_HINT} (${tool}: ${(e as Error).message})`);
}

/**
 * The guest image, assembled into build/guest/ when missing or older than
 * its source. Written to a temporary name and renamed, so parallel test
 * processes never see half an image.
 */
export function guestImage(): string {
  const src = path.join(ROOT, 'guest', 'hwcheck.asm');
  const out = path.join(ROOT, 'build', 'guest', 'hwcheck.bin');
  const srcTime = fs.statSync(src).mtimeMs;
  if (fs.existsSync(out) && fs.statSync(out).mtimeMs >= srcTime && fs.statSync(out).size === IMAGE_BYTES) return out;
  fs.mkdirSync(path.dirname(out), { recursive: true });
  const tmp = `${out}.${process.pid}.tmp`;
  const r = spawnSync(NASM, ['-f', 'bin', '-o', tmp, src], { encoding: 'utf8' });
  if (r.error) throw missingTool(NASM, r.error);
  if (r.status !== 0) throw new MorselError('EIO', `nasm failed on ${src}:\n${r.stderr}`);
  const size = fs.statSync(tmp).size;
  if (size !== IMAGE_BYTES) throw new MorselError('EIO', `guest image is ${size} bytes, want ${IMAGE_BYTES}`);
  fs.renameSync(tmp, out);
  return out;
}

/** Refuses regions QEMU cannot present 1:1 as guest-physical memory. */
export function checkGuestRam(bytes: number): void {
  if (bytes >= MAX_GUEST_RAM) throw new MorselError('ENOTSUP', `region of ${bytes} bytes: hwcheck needs < 3.5 GiB (above that QEMU splits RAM around the PCI hole)`);
  if (bytes % RAM_ALIGN !== 0) throw new MorselError('ENOTSUP', `region of ${bytes} bytes: QEMU needs a multiple of ${RAM_ALIGN} bytes of RAM`);
}

/** Boots the guest image on the region file and waits for it to exit. */
export function runGuest(regionPath: string, regionBytes: number, image: string, timeoutMs = 30_000): GuestRun {
  checkGuestRam(regionBytes);
  const args = [
    '-machine', 'pc,accel=tcg',
    '-cpu', 'max',
    '-m', `${regionBytes}B`,
    '-object', `memory-backend-file,id=ram,mem-path=${regionPath},size=${regionBytes},share=off`,
    '-machine', 'memory-backend=ram',
    '-bios', image, // firmware-less: our image is the reset vector
    '-nodefaults', '-display', 'none', '-monitor', 'none',
    '-serial', 'stdio',
    '-no-reboot', // a triple fault exits with status 0 instead of looping
    '-device', 'isa-debug-exit,iobase=0xf4,iosize=4',
  ];
  const start = performance.now();
  const r = spawnSync(QEMU, args, { encoding: 'utf8', timeout: timeoutMs, stdio: ['ignore', 'pipe', 'pipe'] });
  const seconds = (performance.now() - start) / 1000;
  if (r.error && (r.error as NodeJS.ErrnoException).code === 'ENOENT') throw missingTool(QEMU, r.error);
  return { status: r.status, signal: r.signal, serial: r.stdout ?? '', stderr: r.stderr ?? '', seconds };
}
