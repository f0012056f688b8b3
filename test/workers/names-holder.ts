// Child for names-multiprocess.test: process A maps a named morsel writable,
// writes a pattern, says "mapped"; on "check" verifies the pattern through its
// mapping, says "intact" or "corrupt", unmaps and exits.
import * as readline from 'node:readline';
import { Memory } from '../../src/memory.js';
import { Mmu } from '../../src/space/mmu.js';

const [file, name] = process.argv.slice(2);
const memory = Memory.open(file);
const h = memory.names.open(name, { write: true });
const space = memory.createSpace({ levels: 4 });
const at = memory.names.map(h, space, { write: true });
memory.names.close(h); // the mapping alone keeps it alive
const mmu = new Mmu(space);
const pattern = Uint8Array.from({ length: 3 * 4096 }, (_, i) => (i * 31 + 7) & 0xff);
mmu.write(at + 2 * 1024 * 1024 - 4096, pattern);
process.stdout.write('mapped\n');
const rl = readline.createInterface({ input: process.stdin });
rl.on('line', (line) => {
  if (line !== 'check') return;
  const back = new Uint8Array(pattern.length);
  mmu.read(at + 2 * 1024 * 1024 - 4096, back);
  process.stdout.write(back.every((b, i) => b === pattern[i]) ? 'intact\n' : 'corrupt\n');
  space.unmap(at);
  space.destroy();
  memory.close();
  rl.close();
});
