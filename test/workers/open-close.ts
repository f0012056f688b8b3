// Child for membership.test: opens and closes a region `rounds` times; each
// round allocates and frees through a morsel and a space (so a recovery under
// a live user would double-free something), and counts the recoveries it ran.
import { Memory } from '../../src/memory.js';

const [file, roundsText] = process.argv.slice(2);
const rounds = Number(roundsText);
let recoveries = 0;
let joined = 0;
for (let i = 0; i < rounds; i++) {
  const m = Memory.open(file);
  if (m.report?.crashed) recoveries++;
  if (m.report?.joined) joined++;
  const id = m.morsels.create(1);
  const space = m.createSpace({ levels: 4 });
  space.map(id);
  m.morsels.populate(id, 0, 2 * 4096);
  space.unmap(space.mappings()[0].address);
  m.morsels.destroy(id);
  if (i % 2 === 0) space.destroy(); // odd rounds leave the space to close()
  m.close();
}
process.stdout.write(JSON.stringify({ recoveries, joined }) + '\n');
