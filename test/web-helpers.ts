/**
 * Shared by the `morsel web` tests: a region with a few named morsels, the
 * CLI as a child process, plain HTTP requests, and the region file's
 * fingerprint (to prove the server never writes it).
 */
import { spawn } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Memory } from '../src/memory.js';
import { MiB, PAGE_SIZE } from '../src/units.js';
import { MORSEL, runMorsel, type CliRun } from './helpers.js';

export const bin = MORSEL;
export const ARTIFACTS = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../test-artifacts');

/** What makeRegion built: names and the handle of a destroyed incarnation. */
export interface Built {
  region: string;
  staleHandle: string;
}

/** Fixed address of /fixed (a meta morsel). */
export const FIXED_ADDRESS = 0x4000_0000;

/** Where makeRegion writes into /huge (a huge-policy morsel): inside its second 2 MiB leaf. */
export const HUGE_LEAF_OFFSET = 2 * MiB + 5 * PAGE_SIZE;

/**
 * A 64 MiB region: /models/w (8 MiB, order 2; pages at 0 and 4 MiB + 4 KiB,
 * so its root has entries 0 and 2), /models/b (64 KiB, order 1; pages 0, 3,
 * 7), /small (order 0), /fixed (a fixed-address meta morsel, one page),
 * /huge (1 GiB, huge policy: one 2 MiB leaf around HUGE_LEAF_OFFSET) and
 * the handle of /gone, created and removed.
 */
export function makeRegion(dir: string): Built {
  const region = path.join(dir, 'web.region');
  const m = Memory.create(region, 64 * MiB);
  try {
    const page = new Uint8Array(16).fill(7);
    m.names.mkdir('/models');
    const w = m.names.create('/models/w', { sizeBytes: 8 * MiB });
    m.names.write(w, 0, page);
    m.names.write(w, 4 * MiB + PAGE_SIZE, page);
    const b = m.names.create('/models/b', { sizeBytes: 64 * 1024 });
    for (const p of [0, 3, 7]) m.names.write(b, p * PAGE_SIZE, page);
    const small = m.names.create('/small', { sizeBytes: PAGE_SIZE });
    m.names.write(small, 0, page);
    const fixed = m.names.create('/fixed', { sizeBytes: PAGE_SIZE, fixedAddress: FIXED_ADDRESS });
    m.names.write(fixed, 0, page);
    const huge = m.names.create('/huge', { sizeBytes: 2 ** 30, huge: true }); // one 2 MiB leaf, entry 1 of its level-2 table
    m.names.write(huge, HUGE_LEAF_OFFSET, page);
    const gone = m.names.create('/gone', { sizeBytes: PAGE_SIZE });
    const staleHandle = gone.toString();
    for (const h of [w, b, small, fixed, huge, gone]) m.names.close(h);
    m.names.unlink('/gone');
    return { region, staleHandle };
  } finally {
    m.close();
  }
}

/** Runs the CLI, bounded to 30 s; `json` is its stdout parsed (null if it is not JSON). */
export const morsel = (args: string[], input?: Buffer): CliRun => runMorsel(args, { input, timeoutMs: 30_000 });

/** Writes `bytes` into a named morsel from another process (the CLI), asynchronously. */
export function writeFromChild(region: string, name: string, offset: number, bytes: Buffer): Promise<number | null> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [bin, 'write', name, '--region', region, '--offset', String(offset)], { stdio: ['pipe', 'ignore', 'inherit'] });
    child.on('error', reject);
    child.on('exit', (code) => resolve(code));
    child.stdin.end(bytes);
  });
}

/** sha256 and mtime of the region file: the server must leave both alone. */
export function fingerprint(file: string): { sha: string; mtimeMs: number; size: number } {
  const st = fs.statSync(file);
  return { sha: crypto.createHash('sha256').update(fs.readFileSync(file)).digest('hex'), mtimeMs: st.mtimeMs, size: st.size };
}

export interface Reply {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
  json: any;
}

/** One HTTP request to 127.0.0.1:`port` with exactly these headers (no fetch: it would fix Host and refuse some requests). */
export function request(port: number, target: string, opts: { method?: string; headers?: Record<string, string>; body?: string } = {}): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path: target, method: opts.method ?? 'GET', headers: opts.headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const body = Buffer.concat(chunks).toString();
        let json: any = null;
        try {
          json = JSON.parse(body);
        } catch {
          /* not JSON */
        }
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body, json });
      });
    });
    req.on('error', reject);
    req.setTimeout(10_000, () => req.destroy(new Error(`request ${target} timed out`)));
    req.end(opts.body);
  });
}

/** The sum of dataPages and tableFrames over every morsel of a names tree. */
export function treeSums(node: any): { dataPages: number; tableFrames: number; morsels: number } {
  const out = { dataPages: 0, tableFrames: 0, morsels: 0 };
  const visit = (n: any, depthLeft: number): void => {
    if (depthLeft === 0) throw new Error('tree deeper than the test made');
    if (n.kind === 'morsel') {
      out.dataPages += n.dataPages;
      out.tableFrames += n.tableFrames;
      out.morsels++;
    }
    for (const c of n.children ?? []) visit(c, depthLeft - 1);
  };
  visit(node, 16);
  return out;
}

/** Every node of a names tree by path. */
export function byPath(root: any): Map<string, any> {
  const out = new Map<string, any>();
  const visit = (n: any): void => {
    out.set(n.path, n);
    for (const c of n.children ?? []) visit(c);
  };
  visit(root);
  return out;
}
