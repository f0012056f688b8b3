// Child process for serial-crash.test: opens the region, says 'ready', then
// loads an image under a name until the parent's SIGKILL (or an armed crash
// point, MORSEL_CRASH_AT) ends it, or it finishes: then 'done' and a clean close.
import { Memory } from '../../src/memory.js';
import { load } from '../../src/serial/load.js';
import { fileSource } from '../../src/serial/streams.js';

const [file, image, name] = process.argv.slice(2);
const memory = Memory.open(file);
process.send?.('ready');
const source = fileSource(image);
await load(memory, source, { name });
source.close();
memory.close();
process.send?.('done');
