// Child for region-users/membership tests: opens a region (argv[2]), creates
// a morsel, maps it in an address space and populates a page, reports, then
// on the parent's word closes cleanly ('close'), exits without close()
// ('exit'), or waits to be killed.
import { Memory } from '../../src/memory.js';
import { hex } from '../../src/morsel/id.js';

const memory = Memory.open(process.argv[2]);
const id = memory.morsels.create(1);
const space = memory.createSpace({ levels: 4 });
const address = space.map(id);
memory.morsels.populate(id, 0, 4096);
process.send!({ id: hex(id), report: memory.report, slot: memory.region.userSlot, address });
process.on('message', (msg) => {
  if (msg === 'close') {
    memory.close();
    process.exit(0);
  }
  if (msg === 'exit') process.exit(0); // no close(): the exit hook closes cleanly
});
