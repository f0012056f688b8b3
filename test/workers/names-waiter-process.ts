// Child for names-multiprocess.test: waits on the int32 at byte 64 of a named morsel until notified.
import { Memory } from '../../src/memory.js';

const [file, name] = process.argv.slice(2);
const memory = Memory.open(file);
const h = memory.names.open(name);
const result = memory.names.wait(h, 64, 0, 10_000);
memory.names.close(h);
memory.close();
process.stdout.write(result + '\n');
