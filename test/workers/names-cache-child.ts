// Child for names-cache.test: opens the region as a second process and
// changes names the parent has cached (argv[3..]: op arg arg ...; ops
// separated by ';'), then exits. Prints the namespace's change epoch.
import { Memory } from '../../src/memory.js';

const m = Memory.open(process.argv[2]);
try {
  const names = m.names;
  const words = process.argv.slice(3).join(' ').split(';').map((s) => s.trim().split(/\s+/)).filter((w) => w[0]);
  for (const [op, a, b] of words) {
    if (op === 'unlink') names.unlink(a);
    else if (op === 'rename') names.rename(a, b);
    else if (op === 'chmod') names.chmod(a, Number.parseInt(b, 8));
    else if (op === 'create') names.close(names.create(a, { sizeBytes: 4096, mode: 0o644 }));
    else throw new Error(`unknown op ${op}`);
  }
  process.stdout.write(JSON.stringify({ epoch: names.ns.changeEpoch() }) + '\n');
} finally {
  m.close();
}
