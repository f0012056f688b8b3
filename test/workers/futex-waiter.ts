// Child for futex.test: waits on an int32 of a region, from a child process
// (argv: region file, byte offset) or a worker thread (workerData: share,
// offset), and reports what the wait returned.
import { isMainThread, parentPort, workerData } from 'node:worker_threads';
import { Memory } from '../../src/memory.js';

const WAIT_MS = 20_000;

if (isMainThread) {
  const [file, offsetText] = process.argv.slice(2);
  const memory = Memory.open(file);
  process.send!('waiting');
  const result = memory.wait(Number(offsetText), 0, WAIT_MS);
  memory.close();
  process.send!(result, () => process.exit(0));
} else {
  const memory = Memory.attach(workerData.share);
  parentPort!.postMessage('waiting');
  parentPort!.postMessage(memory.wait(workerData.offset, 0, WAIT_MS));
  memory.close();
}
