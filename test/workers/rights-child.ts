// Child for rights.test, run as nobody: objects created by root (through a
// Names with root credentials, as a server would for another user), then
// checked with this process's own OS credentials (the default).
import { Memory } from '../../src/memory.js';
import { Names } from '../../src/manage/names.js';
import { MiB } from '../../src/units.js';
import { outcome } from '../helpers.js';

const m = Memory.volatile(16 * MiB);
const root = new Names(m.morsels, m.names.ns, { cred: { uid: 0, gid: 0, groups: [0] } });
for (const mode of [0o600, 0o644, 0o666]) root.close(root.create(`/m${mode.toString(8)}`, { sizeBytes: 4096, mode }));
const me = m.names; // default credentials: the OS user
const space = m.createSpace({ levels: 4 });
const result = {
  uid: me.cred.uid,
  regionFile: outcome(() => Memory.open(process.argv[2]).close()),
  read600: outcome(() => me.close(me.open('/m600'))),
  read644: outcome(() => me.close(me.open('/m644'))),
  write644: outcome(() => me.close(me.open('/m644', { write: true }))),
  write666: outcome(() => me.close(me.open('/m666', { write: true }))),
  chmod: outcome(() => me.chmod('/m644', 0o666)),
  chown: outcome(() => me.chown('/m644', 65534, 65534)),
  mapWriteOfReadHandle: outcome(() => me.map(me.open('/m644'), space, { write: true })),
};
process.stdout.write(JSON.stringify(result) + '\n');
