// Child for names-multiprocess.test: stores a Float32Array under a name, or reads it back.
import { Memory } from '../../src/memory.js';

const [file, mode] = process.argv.slice(2);
const memory = Memory.open(file);
const names = memory.names;
if (mode === 'write') {
  names.mkdir('/vectors');
  const h = names.create('/vectors/v', { sizeBytes: 16 });
  names.write(h, 0, new Uint8Array(new Float32Array([0.5, 1.5, -2.25, 1e-3]).buffer));
  names.close(h);
} else {
  const h = names.open('/vectors/v');
  const v = new Float32Array(names.read(h, 0, 16).buffer);
  names.close(h);
  process.stdout.write(JSON.stringify([...v]) + '\n');
}
memory.close();
