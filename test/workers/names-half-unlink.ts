// Child for names-multiprocess.test: an unlink that dies half-way. It holds
// a use of the named morsel and marks it PENDING (what Names.unlink does
// before removing the name), says "marked", and waits to be SIGKILLed.
import { Memory } from '../../src/memory.js';
import { decodeIdBits } from '../../src/morsel/id.js';

const [file, name] = process.argv.slice(2);
const memory = Memory.open(file);
const h = memory.names.open(name);
memory.morsels.markPending(decodeIdBits(h.id).rootFrame, h.generation);
process.stdout.write('marked\n');
setInterval(() => {}, 1000); // until SIGKILL
