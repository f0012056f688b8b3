// Child for names-multiprocess.test: creates, writes, opens and unlinks names
// under /c in a loop until it is SIGKILLed.
import { Memory } from '../../src/memory.js';
import { isMorselError } from '../../src/errors.js';

const [file, seedText] = process.argv.slice(2);
const memory = Memory.open(file);
const names = memory.names;
let x = Number(seedText) | 1;
const rand = (n: number): number => {
  x ^= x << 13;
  x ^= x >>> 17;
  x ^= x << 5;
  return (x >>> 0) % n;
};
process.stdout.write('started\n');
for (;;) {
  const path = `/c/n${rand(16)}`;
  try {
    if (rand(2) === 0) names.unlink(path);
    else {
      const h = names.create(path, { sizeBytes: 3 * 4096, fixedAddress: rand(4) === 0 ? (1 + rand(64)) * 2 ** 30 : undefined });
      names.write(h, 4096, Uint8Array.of(1, 2, 3));
      names.close(h);
    }
  } catch (e) {
    if (!isMorselError(e, 'ENOENT') && !isMorselError(e, 'EEXIST')) throw e;
  }
}
