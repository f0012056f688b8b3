// Child process for serial-crash.test: opens the region, says 'ready', then
// loads an image under a name (`load <image> <name>`) or saves a name to an
// image file (`save <image> <name>`) until the parent's SIGKILL (or an armed
// crash point, MORSEL_CRASH_AT) ends it, or it finishes: then 'done' and a
// clean close.
import { Memory } from '../../src/memory.js';
import { load } from '../../src/serial/load.js';
import { save } from '../../src/serial/save.js';
import { fileSink, fileSource } from '../../src/serial/streams.js';

const [file, op, image, name] = process.argv.slice(2);
const memory = Memory.open(file);
process.send?.('ready');
if (op === 'load') {
  const source = fileSource(image);
  await load(memory, source, { name });
  source.close();
} else {
  await save(memory, name, fileSink(image));
}
memory.close();
process.send?.('done');
