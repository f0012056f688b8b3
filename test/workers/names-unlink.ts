// Child for names-multiprocess.test: unlinks one name of an unused morsel
// (Names.unlink's fast path); the test arms a crash point inside it.
import { Memory } from '../../src/memory.js';

const [file, name] = process.argv.slice(2);
const memory = Memory.open(file);
memory.names.unlink(name);
process.stdout.write('unlinked\n');
memory.close();
