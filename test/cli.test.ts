import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { MorselError } from '../src/errors.js';
import { toMorselError } from '../src/cli/common.js';
import { FORMAT_VERSION } from '../src/physical/superblock.js';
import { SLOT_CLAIMS, USER_SLOTS, USER_SLOT_BYTES, metaLayout } from '../src/physical/layout.js';
import { MORSEL, runMorsel, type CliRun, tempDir } from './helpers.js';

/** The README's exit-status table, written out again: the CLI must match the documentation. */
const EXIT: Record<string, number> = {
  EINVAL: 2, ERANGE: 2, EMISALIGNED: 2, ENOENT: 3, EEXIST: 3, EISDIR: 3, EACCES: 4, ENOSPC: 5, ECORRUPT: 6, EVERSION: 6, ENOTSUP: 9,
};

const bin = MORSEL;
const dir = tempDir('morsel-cli-');

const morsel = (args: string[], input?: Buffer): CliRun => runMorsel(args, { input });

const sha = (f: string) => crypto.createHash('sha256').update(fs.readFileSync(f)).digest('hex');

/**
 * The region's hash apart from the user slots' claims counters: every open
 * claims a slot (bumping its counter), which is membership, not a change a
 * failed command made. A slot left occupied (pid, roots) still shows.
 */
function regionSha(f: string): string {
  const bytes = fs.readFileSync(f);
  const usersByte = metaLayout(bytes.length / 4096).usersFrame * 4096;
  for (let slot = 0; slot < USER_SLOTS; slot++) bytes.writeInt32LE(0, usersByte + slot * USER_SLOT_BYTES + SLOT_CLAIMS * 4);
  return crypto.createHash('sha256').update(bytes).digest('hex');
}

test('init, stat, create, write, read, inspect, destroy round trip', () => {
  const region = path.join(dir, 'a.region');
  const init = morsel(['init', region, '--size', '16MiB', '--json']);
  assert.equal(init.status, 0, init.out + init.err);
  assert.equal(init.json.frames.total, 4096);
  const stat = morsel(['stat', '--region', region, '--json']);
  assert.equal(stat.status, 0);
  const free0 = stat.json.frames.free;
  assert.equal(stat.json.frames.total, 4096);
  assert.equal(stat.json.version, FORMAT_VERSION);
  assert.ok(free0 > 3500 && free0 < 4096);

  const created = morsel(['create', '--region', region, '--order', '1', '--json']);
  assert.equal(created.status, 0, created.out);
  const id = created.json.id as string;
  assert.match(id, /^0x[0-9a-f]{16}$/);
  const payload = Buffer.from('hello from the command line '.repeat(300));
  const payloadFile = path.join(dir, 'payload.bin');
  fs.writeFileSync(payloadFile, payload);
  assert.equal(morsel(['write', '--region', region, id, '--offset', '4000', '--file', payloadFile]).status, 0);
  assert.equal(morsel(['write', '--region', region, id, '--offset', '100000'], Buffer.from('via stdin')).status, 0);
  const read = morsel(['read', '--region', region, id, '--offset', '4000', '--length', String(payload.length)]);
  assert.equal(read.status, 0);
  assert.deepEqual(read.raw, payload);
  assert.equal(morsel(['read', '--region', region, id, '--offset', '100000', '--length', '9']).out, 'via stdin');
  const ins = morsel(['inspect', '--region', region, id, '--json']);
  assert.equal(ins.status, 0);
  assert.equal(ins.json.order, 1);
  assert.equal(ins.json.meta, false);
  assert.equal(ins.json.tableFrames, 1);
  assert.equal(ins.json.dataPages, 5, 'pages 0..3 for the payload + page 24 for stdin');
  assert.deepEqual(morsel(['ls', '--region', region, '--json']).json.morsels, [id]);
  assert.equal(morsel(['destroy', '--region', region, id, '--json']).json.freedFrames, 6);
  const after = morsel(['stat', '--region', region, '--json']).json;
  assert.ok(after.frames.free <= free0 && after.frames.free >= free0 - 4, 'only registry tables stay allocated');
  assert.equal(after.morsels, 0);
});

test('meta morsels through the CLI', () => {
  const region = path.join(dir, 'meta.region');
  morsel(['init', region, '--size', '8MiB']);
  const c = morsel(['create', '--region', region, '--order', '1', '--meta', '--address', '0x40000000', '--json']);
  assert.equal(c.status, 0, c.out);
  assert.equal(morsel(['write', '--region', region, c.json.id], Buffer.from('meta!')).status, 0);
  assert.equal(morsel(['read', '--region', region, c.json.id, '--length', '5']).out, 'meta!');
  const ins = morsel(['inspect', '--region', region, c.json.id, '--json']).json;
  assert.equal(ins.meta, true);
  assert.equal(ins.metadata.address, '0x40000000');
  const bad = morsel(['create', '--region', region, '--order', '1', '--meta', '--address', '0x1000', '--json']);
  assert.equal(bad.json.error.code, 'EMISALIGNED');
});

test('every error path: typed code, non-zero exit, region untouched', () => {
  const region = path.join(dir, 'e.region');
  morsel(['init', region, '--size', '8MiB']);
  const id = morsel(['create', '--region', region, '--order', '0', '--json']).json.id as string;
  const expect = (args: string[], code: string, input?: Buffer) => {
    const before = regionSha(region);
    const r = morsel([...args, '--json'], input);
    assert.equal(r.json?.error?.code, code, `${args.join(' ')} → ${r.out}${r.err}`);
    assert.equal(r.status, EXIT[code], `${args.join(' ')}: exit status of ${code}`);
    assert.equal(typeof r.json.error.message, 'string');
    if (args.includes(region) && code !== 'EEXIST') assert.equal(regionSha(region), before, `${args.join(' ')} changed the region`);
  };
  expect(['init', region, '--size', '8MiB'], 'EEXIST');
  expect(['init', path.join(dir, 'x.region'), '--size', '12345'], 'EINVAL');
  expect(['init', path.join(dir, 'y.region'), '--size', 'lots'], 'EINVAL');
  expect(['init', path.join(dir, 'no/such/dir.region'), '--size', '8MiB'], 'ENOENT');
  expect(['stat', '--region', path.join(dir, 'missing.region')], 'ENOENT');
  expect(['create', '--region', region, '--order', '7'], 'EINVAL');
  expect(['create', '--region', region, '--order', 'x'], 'EINVAL');
  expect(['create', '--region', region, '--order', '1', '--address', '0'], 'EINVAL');
  expect(['inspect', '--region', region, 'garbage'], 'EINVAL');
  expect(['inspect', '--region', region, '0x0000000000000000'], 'EINVAL');
  expect(['inspect', '--region', region, '0x00000000dead0203'], 'EINVAL');
  expect(['destroy', '--region', region, '0x7fffffffffffffff'], 'EINVAL');
  expect(['read', '--region', region, id, '--offset', '4000', '--length', '200'], 'ERANGE');
  expect(['read', '--region', region, id, '--offset', '-1', '--length', '1'], 'EINVAL');
  expect(['write', '--region', region, id, '--offset', '4095'], 'ERANGE', Buffer.from('xy'));
  expect(['write', '--region', region, id, '--file', path.join(dir, 'nope')], 'ENOENT');
  // --force overwrites
  assert.equal(morsel(['init', region, '--size', '4MiB', '--force', '--json']).json.frames.total, 1024);
});

test('files that are not regions: ECORRUPT/EVERSION and never modified', () => {
  const good = path.join(dir, 'good.region');
  morsel(['init', good, '--size', '4MiB']);
  const variants: [string, (b: Buffer) => Buffer, string][] = [
    ['random', () => crypto.randomBytes(4 << 20), 'ECORRUPT'],
    ['magic', (b) => (b.write('NOTMORSL', 0), b), 'ECORRUPT'],
    ['checksum', (b) => (b[16] ^= 1, b), 'ECORRUPT'],
    ['truncated', (b) => b.subarray(0, 2 << 20), 'ECORRUPT'],
    ['short', (b) => b.subarray(0, 100), 'ECORRUPT'],
    ['empty', () => Buffer.alloc(0), 'ECORRUPT'],
    [
      'version',
      (b) => {
        b.writeUInt32LE(99, 8);
        let h = 0x811c9dc5; // a future writer's valid checksum
        for (let i = 0; i < 32; i++) h = Math.imul(h ^ b[i], 0x01000193);
        b.writeUInt32LE(h >>> 0, 32);
        return b;
      },
      'EVERSION',
    ],
  ];
  for (const [name, mutate, code] of variants) {
    const f = path.join(dir, `bad-${name}.region`);
    fs.writeFileSync(f, mutate(Buffer.from(fs.readFileSync(good))));
    const before = sha(f);
    const r = morsel(['stat', '--region', f, '--json']);
    assert.equal(r.json?.error?.code, code, `${name}: ${r.out}${r.err}`);
    assert.equal(r.status, EXIT[code]);
    assert.equal(sha(f), before, `${name} was modified`);
  }
});

const COMMANDS = ['init', 'stat', 'create', 'write', 'read', 'inspect', 'destroy', 'ls', 'check', 'hwcheck', 'rm', 'mkdir', 'rmdir', 'mv', 'chmod', 'chown'];

test('--help on every command', () => {
  for (const cmd of COMMANDS) {
    const r = morsel([cmd, '--help']);
    assert.equal(r.status, 0, cmd);
    assert.match(r.out, /Usage: morsel/);
  }
});

test('--help documents the target forms and $MORSEL_REGION', () => {
  const top = morsel(['--help']).out;
  for (const form of ['/path', '0x…@generation', '0x…', '$MORSEL_REGION']) assert.ok(top.includes(form), `morsel --help mentions ${form}`);
  for (const cmd of ['read', 'write', 'inspect', 'destroy']) assert.match(morsel([cmd, '--help']).out, /target +a \/path, a handle 0x…@generation/, cmd);
  assert.match(morsel(['stat', '--help']).out, /env: MORSEL_REGION/);
  assert.match(morsel(['create', '--help']).out, /\[path\][\s\S]*--order <n>[\s\S]*--mode <octal>[\s\S]*--fixed <addr>/);
});

test('start-up stays cheap: modules loaded for parsing import no library module that opens a region', () => {
  // The static import graph of dist/src/cli/main.js (heavy modules are imported inside actions).
  const seen = new Set<string>();
  const visit = (file: string): void => {
    if (seen.has(file)) return;
    seen.add(file);
    for (const m of fs.readFileSync(file, 'utf8').matchAll(/^import [^;]*?from '(\.[^']+)';$/gm)) visit(path.resolve(path.dirname(file), m[1]));
  };
  const cliDir = path.resolve(path.dirname(bin), '../dist/src/cli');
  visit(path.join(cliDir, 'main.js'));
  const names = [...seen].map((f) => path.relative(path.dirname(cliDir), f)).sort();
  for (const heavy of ['memory.js', 'cli/targets.js', 'cli/check.js', 'manage/names.js', 'morsel/morsels.js', 'physical/region.js']) {
    assert.ok(!names.includes(heavy), `${heavy} is loaded at start-up: ${names.join(', ')}`);
  }
  assert.ok(names.includes('cli/names.js') && names.includes('cli/common.js'), names.join(', '));
});

test('--region comes from $MORSEL_REGION for every region command', () => {
  const region = path.join(dir, 'env.region');
  morsel(['init', region, '--size', '8MiB']);
  const env = (args: string[], input?: Buffer) => {
    const r = spawnSync(process.execPath, [bin, ...args, '--json'], { input, env: { ...process.env, MORSEL_REGION: region } });
    return { status: r.status, json: JSON.parse(r.stdout.toString()) };
  };
  const id = env(['create', '--order', '0']).json.id as string;
  assert.equal(env(['write', id], Buffer.from('env')).json.written, 3);
  assert.equal(Buffer.from(env(['read', id, '--length', '3']).json.base64, 'base64').toString(), 'env');
  assert.equal(env(['inspect', id]).json.dataPages, 1);
  assert.deepEqual(env(['ls']).json.morsels, [id]);
  assert.equal(env(['stat']).json.morsels, 1);
  assert.equal(env(['check']).json.ok, true);
  assert.equal(env(['destroy', id]).status, 0);
  assert.equal(morsel(['stat', '--json']).json.error.code, 'EINVAL', 'without either: a usage error');
});

test('write by path: bounded like by ID (ERANGE before anything changes), counted while it runs', () => {
  const region = path.join(dir, 'named.region');
  morsel(['init', region, '--size', '8MiB']);
  assert.equal(morsel(['create', '/n', '--size', '100', '--region', region, '--json']).status, 0);
  const before = regionSha(region);
  const r = morsel(['write', '/n', '--offset', '90', '--region', region, '--json'], Buffer.alloc(11));
  assert.equal(r.json?.error?.code, 'ERANGE', r.out);
  assert.equal(regionSha(region), before, 'the region is unchanged');
  assert.equal(morsel(['write', '/n', '--offset', '90', '--region', region, '--json'], Buffer.from('0123456789')).json.written, 10);
  assert.equal(morsel(['read', '/n', '--offset', '90', '--region', region]).out, '0123456789', 'without --length: to the end of the logical size');
  assert.equal(morsel(['read', '/n', '--offset', '101', '--region', region, '--json']).json?.error?.code, 'ERANGE');
  assert.equal(morsel(['create', '--order', '0', '--size', '1', '--region', region, '--json']).json?.error?.code, 'EINVAL', 'a raw morsel has no logical size');
  assert.equal(morsel(['create', '/m', '--region', region, '--json']).json?.error?.code, 'EINVAL', 'a named morsel needs --size');
  assert.equal(morsel(['inspect', 'garbage', '--region', region, '--json']).json?.error?.code, 'EINVAL');
});

test('--version prints the package version', () => {
  const pkg = JSON.parse(fs.readFileSync(path.resolve(path.dirname(bin), '../package.json'), 'utf8')) as { version: string };
  const r = morsel(['--version']);
  assert.equal(r.status, 0);
  assert.equal(r.out.trim(), pkg.version);
});

test('--json: every command answers a usage error and a missing region with one error object and its exit status', () => {
  const nasm = spawnSync('nasm', ['-v']).error === undefined;
  const missing = path.join(dir, 'missing.region');
  /** Arguments that make each command fail at run time on a missing file, and the code it must give. */
  const runtime: Record<string, [string[], string]> = {
    init: [['init', path.join(dir, 'no/such/dir.region'), '--size', '4MiB'], 'ENOENT'],
    stat: [['stat', '--region', missing], 'ENOENT'],
    create: [['create', '--region', missing, '--order', '0'], 'ENOENT'],
    write: [['write', '0x0000000000103207', '--region', missing, '--file', bin], 'ENOENT'],
    read: [['read', '0x0000000000103207', '--region', missing, '--length', '1'], 'ENOENT'],
    inspect: [['inspect', '0x0000000000103207', '--region', missing], 'ENOENT'],
    destroy: [['destroy', '0x0000000000103207', '--region', missing], 'ENOENT'],
    ls: [['ls', '--region', missing], 'ENOENT'],
    check: [['check', '--region', missing], 'ENOENT'],
    hwcheck: [['hwcheck', '--region', missing], nasm ? 'ENOENT' : 'ENOTSUP'],
    rm: [['rm', '/a', '--region', missing], 'ENOENT'],
    mkdir: [['mkdir', '/d', '--region', missing], 'ENOENT'],
    rmdir: [['rmdir', '/d', '--region', missing], 'ENOENT'],
    mv: [['mv', '/a', '/b', '--region', missing], 'ENOENT'],
    chmod: [['chmod', '0600', '/a', '--region', missing], 'ENOENT'],
    chown: [['chown', '0:0', '/a', '--region', missing], 'ENOENT'],
  };
  const one = (args: string[], code: string) => {
    const r = morsel(args);
    const lines = r.out.trim().split('\n');
    assert.equal(lines.length, 1, `${args.join(' ')}: one line on stdout, got ${r.out}`);
    assert.deepEqual(Object.keys(r.json ?? {}), ['error'], `${args.join(' ')}: ${r.out}`);
    assert.equal(r.json.error.code, code, `${args.join(' ')}: ${r.out}`);
    assert.ok(r.json.error.message.length > 0 && !r.json.error.message.startsWith(code), `${args.join(' ')}: the message does not repeat the code: ${r.json.error.message}`);
    assert.equal(r.status, EXIT[code], `${args.join(' ')}: exit status`);
    assert.equal(r.err, '', `${args.join(' ')}: nothing on stderr under --json`);
  };
  for (const cmd of COMMANDS) {
    one([...runtime[cmd][0], '--bogus', '--json'], 'EINVAL');
    one([...runtime[cmd][0], '--json'], runtime[cmd][1]);
  }
  one(['no-such-command', '--json'], 'EINVAL');
  one(['stat', '--json'], 'EINVAL'); // missing --region
  // Without --json: one line `morsel: CODE: message` on stderr, nothing on stdout.
  const text = morsel(['stat', '--region', missing]);
  assert.equal(text.out, '');
  assert.match(text.err, /^morsel: ENOENT: [^\n]+\n$/);
  assert.ok(!/ENOENT: .*ENOENT:/.test(text.err), `the code appears once: ${text.err}`);
});

test('units and hex for every size, offset, length and address', () => {
  const region = path.join(dir, 'units.region');
  assert.equal(morsel(['init', region, '--size', '8MiB']).status, 0);
  const id = morsel(['create', '--region', region, '--order', '1', '--json']).json.id as string;
  assert.equal(morsel(['write', '--region', region, id, '--offset', '1KiB'], Buffer.from('units!')).json, null);
  assert.equal(morsel(['read', '--region', region, id, '--offset', '0x400', '--length', '6']).out, 'units!');
  assert.equal(morsel(['read', '--region', region, id, '--offset', '1024', '--length', '0.5KiB', '--json']).json.length, 512);
  const meta = morsel(['create', '--region', region, '--order', '1', '--meta', '--address', '1GiB', '--size', '1MiB', '--json']);
  assert.equal(meta.status, 0, meta.out);
  assert.equal(morsel(['inspect', '--region', region, meta.json.id, '--json']).json.metadata.address, '0x40000000');
  for (const bad of ['-1', '1.5', '1KB2', '0x', 'ten']) {
    const r = morsel(['read', '--region', region, id, '--offset', bad, '--length', '1', '--json']);
    assert.equal(r.json?.error?.code, 'EINVAL', `--offset ${bad}: ${r.out}`);
  }
});

test('write: input longer than the morsel is ERANGE before anything changes, even endless input', () => {
  const region = path.join(dir, 'bounded.region');
  morsel(['init', region, '--size', '8MiB']);
  const id = morsel(['create', '--region', region, '--order', '0', '--json']).json.id as string;
  const before = regionSha(region);
  for (const [args, input] of [
    [['--file', '/dev/zero'], undefined], // a character device: no size, never ends
    [['--offset', '1KiB'], Buffer.alloc(3 * 1024 + 1)], // a pipe one byte too long
  ] as [string[], Buffer | undefined][]) {
    const r = morsel(['write', '--region', region, id, ...args, '--json'], input);
    assert.equal(r.json?.error?.code, 'ERANGE', `${args.join(' ')}: ${r.out}${r.err}`);
    assert.equal(r.status, EXIT.ERANGE);
  }
  const big = path.join(dir, 'five-pages.bin');
  fs.writeFileSync(big, Buffer.alloc(5 * 4096, 1)); // a regular file: its size is checked before it is read
  assert.equal(morsel(['write', '--region', region, id, '--file', big, '--json']).json?.error?.code, 'ERANGE');
  assert.equal(regionSha(region), before, 'the region is unchanged');
  assert.equal(morsel(['write', '--region', region, id, '--file', dir, '--json']).json?.error?.code, 'EISDIR');
});

test('write: input longer than the staging window (64 MiB) lands whole, from a file and from a pipe', () => {
  const region = path.join(dir, 'long.region');
  morsel(['init', region, '--size', '256MiB']);
  const payload = crypto.randomBytes(64 * 1024 * 1024 + 3 * 4096 + 5);
  const file = path.join(dir, 'long.bin');
  fs.writeFileSync(file, payload);
  const digest = (b: Buffer) => crypto.createHash('sha256').update(b).digest('hex');
  for (const [target, args, input] of [['/long-file', ['--file', file], undefined], ['/long-pipe', [], payload]] as [string, string[], Buffer | undefined][]) {
    assert.equal(morsel(['create', target, '--size', '80MiB', '--region', region]).status, 0);
    const w = morsel(['write', target, ...args, '--region', region, '--json'], input);
    assert.equal(w.json?.written, payload.length, `${target}: ${w.out}${w.err}`);
    const back = morsel(['read', target, '--length', String(payload.length), '--region', region]);
    assert.equal(digest(back.raw), digest(payload), `${target}: the bytes read back are the bytes written`);
  }
  fs.rmSync(file);
});

test('write: ENOSPC part-way says how many bytes landed, and they did', () => {
  const region = path.join(dir, 'full.region');
  morsel(['init', region, '--size', '4MiB']); // < 1024 free frames
  const id = morsel(['create', '--region', region, '--order', '2', '--json']).json.id as string;
  const payload = crypto.randomBytes(8 << 20);
  const file = path.join(dir, 'eight-mib.bin');
  fs.writeFileSync(file, payload);
  const r = morsel(['write', '--region', region, id, '--file', file, '--json']);
  assert.equal(r.json?.error?.code, 'ENOSPC', r.out + r.err);
  assert.equal(r.status, EXIT.ENOSPC);
  const written = r.json.error.written as number;
  assert.ok(written > 0 && written < payload.length && written % 4096 === 0, `written ${written}`);
  const back = morsel(['read', '--region', region, id, '--length', String(written)]);
  assert.deepEqual(back.raw, payload.subarray(0, written));
  const text = morsel(['write', '--region', region, id, '--offset', String(written), '--file', file]);
  assert.match(text.err, /^morsel: ENOSPC: .*\(written 0\)\n$/);
});

test('errors become one typed code and one message', () => {
  const engine = toMorselError(new TypeError('undefined is not an integer typed array'));
  assert.equal(engine.code, 'EINTERNAL');
  assert.match(engine.message, /internal error in morsel.*undefined is not an integer typed array/);
  let host: unknown;
  try {
    fs.readFileSync(path.join(dir, 'nothing-here'));
  } catch (e) {
    host = e;
  }
  const fromHost = toMorselError(host);
  assert.equal(fromHost.code, 'ENOENT');
  assert.ok(!fromHost.message.startsWith('ENOENT'), fromHost.message);
  const lock = new MorselError('EIO', 'cannot lock r.region', { cause: Object.assign(new Error('EACCES: permission denied, mkdir'), { code: 'EACCES', syscall: 'mkdir' }) });
  assert.equal(toMorselError(lock).code, 'EACCES', 'a permission problem is EACCES, not EIO');
  const wrapped = toMorselError(new MorselError('EIO', "cannot lock r.region: EACCES: permission denied, mkdir 'r.region.lock'"));
  assert.deepEqual([wrapped.code, wrapped.message], ['EACCES', "cannot lock r.region: permission denied, mkdir 'r.region.lock'"]);
  assert.equal(new MorselError('ECORRUPT', 'bad superblock').message, 'bad superblock');
  assert.equal(String(new MorselError('ECORRUPT', 'bad superblock')), 'MorselError [ECORRUPT]: bad superblock');
});

test('an unbuilt checkout says so as a typed error', () => {
  const copy = fs.mkdtempSync(path.join(dir, 'unbuilt-'));
  fs.mkdirSync(path.join(copy, 'bin'));
  fs.copyFileSync(bin, path.join(copy, 'bin', 'morsel.js'));
  const r = spawnSync(process.execPath, [path.join(copy, 'bin', 'morsel.js'), 'stat', '--json'], { encoding: 'utf8' });
  assert.equal(r.status, EXIT.ENOTSUP);
  assert.equal(JSON.parse(r.stdout).error.code, 'ENOTSUP');
  assert.match(JSON.parse(r.stdout).error.message, /npm run build/);
});
