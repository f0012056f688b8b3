/**
 * The published package as a consumer gets it: `npm pack` (of the built
 * tree; prepare is not re-run so parallel tests never see dist/ rewritten),
 * the tarball's file list, then a fresh ESM project (NodeNext) installs the
 * tarball with its install script (the native addon is compiled there),
 * type-checks a small .ts file against the shipped declarations, runs it,
 * and runs the CLI from node_modules/.bin. Needs the npm registry (commander).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { tempDir } from './helpers.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const pkg = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')) as { version: string; dependencies: Record<string, string> };
const tsc = path.join(root, 'node_modules', 'typescript', 'bin', 'tsc');

const CONSUMER_TS = `import { Memory, Mmu, MorselError, fileSink, fileSource, isMorselError, load, save, type MorselId, type SerialResult } from 'morsel';

const memory: Memory = Memory.create(process.argv[2], 8 * 2 ** 20); // a region file: needs the native addon
const id: MorselId = memory.morsels.create(1);
// @ts-expect-error an order is 0..4: this line type-checks only if the declarations are missing or loose
const badOrder: Parameters<typeof memory.morsels.create>[0] = 'big';
const space = memory.createSpace();
const base: number = space.map(id);
new Mmu(space).write(base + 8192, new TextEncoder().encode('packed'));
const out = new Uint8Array(6);
new Mmu(space).read(base + 8192, out);
let code = '';
try {
  memory.morsels.destroy(0n as MorselId);
} catch (e) {
  if (isMorselError(e)) code = (e satisfies MorselError).code;
}
space.unmap(base);
space.destroy();
memory.morsels.destroy(id);
const named = memory.names.create('/img', { sizeBytes: 4096 });
memory.names.write(named, 0, new TextEncoder().encode('saved'));
memory.names.close(named);
const saved: SerialResult = await save(memory, '/img', fileSink(process.argv[2] + '.img'));
const src = fileSource(process.argv[2] + '.img');
const loaded = await load(memory, src, { name: '/img2' });
src.close();
memory.close();
console.log(JSON.stringify({ text: new TextDecoder().decode(out), code, badOrder, savedPages: saved.pages, loaded: loaded.name }));
`;

function sh(cmd: string, args: string[], cwd: string): string {
  return execFileSync(cmd, args, { cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, npm_config_fund: 'false', npm_config_audit: 'false', npm_config_update_notifier: 'false' } });
}

test('npm pack: a consumer installs the tarball, type-checks under NodeNext, runs the library and the CLI', { timeout: 180_000 }, () => {
  const dir = tempDir('morsel-pack-');
  try {
    assert.ok(fs.existsSync(path.join(root, 'dist', 'src', 'index.d.ts')), 'built before packing (npm test builds first)');
    const packed = JSON.parse(sh('npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', dir], root)) as { filename: string; files: { path: string }[] }[];
    const files = packed[0].files.map((f) => f.path);
    for (const want of ['package.json', 'README.md', 'bin/morsel.js', 'dist/src/index.js', 'dist/src/index.d.ts', 'dist/src/cli/main.js', 'binding.gyp', 'src/physical/native/mmap.cc', 'guest/hwcheck.asm', 'src/web/static/index.html', 'src/web/static/app.js', 'src/web/static/style.css']) {
      assert.ok(files.includes(want), `tarball has ${want}`);
    }
    const stray = files.filter((f) => /^(bench|test|dist\/(bench|test))\/|\.map$|^src\/.*\.ts$|^build\//.test(f));
    assert.deepEqual(stray, [], 'no benchmarks, tests, source maps, TS sources or build output in the tarball');

    const app = path.join(dir, 'app');
    fs.mkdirSync(app);
    fs.writeFileSync(path.join(app, 'package.json'), JSON.stringify({ name: 'consumer', private: true, type: 'module' }));
    sh('npm', ['install', '--no-save', '--prefer-offline', path.join(dir, packed[0].filename)], app);
    const top = fs.readdirSync(path.join(app, 'node_modules')).filter((n) => !n.startsWith('.'));
    // Scoped packages sit one level down (@scope/name); a native dependency brings its platform build (name-linux-x64-gnu).
    const installed = top.flatMap((n) => (n.startsWith('@') ? fs.readdirSync(path.join(app, 'node_modules', n)).map((c) => `${n}/${c}`) : [n]));
    const deps = ['morsel', ...Object.keys(pkg.dependencies)];
    const extra = installed.filter((n) => !deps.includes(n) && !deps.some((d) => n.startsWith(`${d}-`)));
    assert.deepEqual(extra, [], 'only the runtime dependencies (and their platform builds) are installed');
    for (const d of deps) assert.ok(installed.includes(d), `${d} is installed`);

    fs.writeFileSync(path.join(app, 'main.ts'), CONSUMER_TS);
    const types = path.join(root, 'node_modules', '@types'); // a consumer brings its own @types/node
    fs.writeFileSync(
      path.join(app, 'tsconfig.json'),
      JSON.stringify({ compilerOptions: { module: 'NodeNext', moduleResolution: 'NodeNext', target: 'ES2022', strict: true, skipLibCheck: false, typeRoots: [types], types: ['node'], outDir: 'out' }, files: ['main.ts'] }),
    );
    const typecheck = spawnSync(process.execPath, [tsc, '-p', app], { cwd: app, encoding: 'utf8' });
    assert.equal(typecheck.status, 0, typecheck.stdout + typecheck.stderr);

    const run = JSON.parse(sh(process.execPath, ['out/main.js', path.join(dir, 'lib.region')], app)) as { text: string; code: string };
    assert.deepEqual(run, { text: 'packed', code: 'EINVAL', badOrder: 'big', savedPages: 1, loaded: '/img2' });

    const bin = path.join(app, 'node_modules', '.bin', 'morsel');
    assert.equal(sh(bin, ['--version'], app).trim(), pkg.version);
    const init = JSON.parse(sh(bin, ['init', path.join(dir, 'cli.region'), '--size', '4MiB', '--json'], app)) as { frames: { total: number } };
    assert.equal(init.frames.total, 1024);

    const deep = spawnSync(process.execPath, ['--input-type=module', '-e', "await import('morsel/dist/src/memory.js')"], { cwd: app, encoding: 'utf8' });
    assert.match(deep.stderr, /ERR_PACKAGE_PATH_NOT_EXPORTED/, 'only the exports map is public');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
