// Lookups per second of the namespace at 10^3, 10^5 and 10^6 names, one
// thread (a measurement script, not a timed test, and not part of `npm start`:
// the names suite with rights checks and the file-system comparison is the
// facade's). Names are /d<k>/f<i>, 1000 per directory; each lookup resolves
// a random existing name (three components: '/', d<k>, f<i>). Lookups per
// second of CPU time are printed next to wall-clock ones: on a shared
// machine the wall clock also counts time the thread was not running.
//   node dist/bench/namespace-lookups.js [counts...]
import { Memory } from '../src/memory.js';
import { Namespace, type NameRecord } from '../src/manage/namespace.js';
import { GiB } from '../src/units.js';

const PER_DIR = 1000;
const MEASURE_MS = 1000;
const dir: NameRecord = { kind: 'dir', id: 0n, generation: 0, sizeBytes: 0, uid: 0, gid: 0, mode: 0o755, ctimeMs: 0, mtimeMs: 0, fixedAddress: null };

function measure(count: number): void {
  // 2 GiB volatile region: table capacity 2^21 slots (10^6 names at load 0.48); committed lazily
  const m = Memory.volatile(2 * GiB);
  const ns = new Namespace(m.region, m.alloc);
  const paths: string[] = [];
  let t0 = performance.now();
  for (let i = 0; i < count; i++) {
    if (i % PER_DIR === 0) ns.create(`/d${i / PER_DIR}`, dir);
    const p = `/d${Math.floor(i / PER_DIR)}/f${i}`;
    ns.create(p, { ...dir, kind: 'morsel', id: BigInt(i + 1), generation: 1, sizeBytes: i });
    paths.push(p);
  }
  const createUs = ((performance.now() - t0) * 1000) / count;
  let seed = 12345;
  let n = 0;
  let sink = 0;
  const cpu0 = process.cpuUsage();
  t0 = performance.now();
  while (performance.now() - t0 < MEASURE_MS) {
    for (let k = 0; k < 1000; k++) {
      seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0;
      sink += ns.lookup(paths[seed % count]).sizeBytes;
    }
    n += 1000;
  }
  const perSec = n / ((performance.now() - t0) / 1000);
  const cpu = process.cpuUsage(cpu0);
  const perCpuSec = n / ((cpu.user + cpu.system) / 1e6);
  t0 = performance.now();
  let resolved = 0;
  for (let k = 0; k < 100_000; k++) resolved += ns.resolve(paths[k % count]).length;
  const resolveUs = ((performance.now() - t0) * 1000) / 100_000;
  const s = ns.stats();
  console.log(
    `${count} names: lookup ${(perSec / 1e6).toFixed(2)} M/s wall (${(1e6 / perSec).toFixed(2)} us), ${(perCpuSec / 1e6).toFixed(2)} M/s of CPU time, resolve ${resolveUs.toFixed(2)} us, create ${createUs.toFixed(2)} us/name; ` +
      `table ${s.capacity} slots, ${s.records} records, sink ${sink > 0 && resolved > 0}`,
  );
}

const counts = process.argv.slice(2).map(Number);
for (const c of counts.length > 0 ? counts : [1e3, 1e5, 1e6]) measure(c);
