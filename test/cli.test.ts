import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { FORMAT_VERSION } from '../src/physical/superblock.js';
import { SLOT_CLAIMS, USER_SLOTS, USER_SLOT_BYTES, metaLayout } from '../src/physical/layout.js';

const bin = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../bin/morsel.js');
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'morsel-cli-'));
process.on('exit', () => fs.rmSync(dir, { recursive: true, force: true }));

function morsel(args: string[], input?: Buffer): { status: number | null; out: string; err: string; json: any; raw: Buffer } {
  const r = spawnSync(process.execPath, [bin, ...args], { input, maxBuffer: 64 << 20 });
  const out = r.stdout.toString();
  let json: any = null;
  try {
    json = JSON.parse(out);
  } catch {
    /* not JSON */
  }
  return { status: r.status, out, err: r.stderr.toString(), json, raw: r.stdout };
}

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
    assert.notEqual(r.status, 0, args.join(' '));
    assert.equal(r.json?.error?.code, code, `${args.join(' ')} → ${r.out}${r.err}`);
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
    assert.notEqual(r.status, 0);
    assert.equal(sha(f), before, `${name} was modified`);
  }
});

test('--help on every command', () => {
  for (const cmd of ['init', 'stat', 'create', 'write', 'read', 'inspect', 'destroy', 'ls']) {
    const r = morsel([cmd, '--help']);
    assert.equal(r.status, 0, cmd);
    assert.match(r.out, /Usage: morsel/);
  }
});
