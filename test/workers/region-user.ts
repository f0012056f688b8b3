// Child for region-users.test: opens a region, creates a morsel, reports it,
// then closes cleanly or waits to be killed, as the parent says.
import { Memory } from '../../src/memory.js';
import { hex } from '../../src/morsel/id.js';

const memory = Memory.open(process.argv[2]);
const id = memory.morsels.create(1);
process.send!({ id: hex(id), report: memory.report });
process.on('message', (msg) => {
  if (msg === 'close') {
    memory.close();
    process.exit(0);
  }
});
