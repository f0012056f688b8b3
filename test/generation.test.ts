import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Memory } from '../src/memory.js';
import { decodeIdBits } from '../src/morsel/id.js';
import { GENERATION_MASK, liveWord, wordGeneration, wordLive } from '../src/morsel/words.js';
import { formatHandle, parseHandle } from '../src/manage/handle.js';
import { MiB } from '../src/units.js';
import { freeFrames } from './helpers.js';

const code = (c: string) => (e: unknown) => (e as { code?: string }).code === c;

test('destroy + create reuses the ID but not the generation: the old handle is ESTALE everywhere', () => {
  const m = Memory.volatile(16 * MiB);
  const a = m.morsels.create(1);
  const root = decodeIdBits(a).rootFrame;
  const genA = m.morsels.generationOf(root);
  m.morsels.destroy(a, { generation: genA });
  const b = m.morsels.create(1);
  assert.equal(b, a, 'same frame, same order: the raw ID is reused');
  const genB = m.morsels.generationOf(root);
  assert.equal(genB, genA + 1);
  const space = m.createSpace();
  assert.throws(() => m.morsels.decodeHandle(a, genA), code('ESTALE'));
  assert.throws(() => m.morsels.use(a, genA), code('ESTALE'));
  assert.throws(() => m.morsels.destroy(a, { generation: genA }), code('ESTALE'));
  assert.throws(() => space.map(a, { generation: genA }), code('ESTALE'));
  assert.throws(() => m.names.openRef({ id: decodeIdBits(a).id, generation: genA }), code('ESTALE'));
  assert.equal(space.mappings().length, 0, 'nothing mapped by the stale attempts');
  assert.equal(m.morsels.usage.mineCount(root), 0, 'no count left behind');
  // the current incarnation works
  const at = space.map(b, { generation: genB });
  space.unmap(at);
  m.morsels.destroy(b, { generation: genB });
});

test('handle text: ID@generation round-trips; a raw ID is refused where a handle is needed', () => {
  const m = Memory.volatile(8 * MiB);
  const id = m.morsels.create(0);
  const gen = m.morsels.generationOf(decodeIdBits(id).rootFrame);
  const text = formatHandle({ id: decodeIdBits(id).id, generation: gen });
  assert.match(text, /^0x[0-9a-f]{16}@\d+$/);
  assert.deepEqual(parseHandle(text), { id, generation: gen });
  assert.throws(() => parseHandle(text.split('@')[0]), code('EINVAL'));
  assert.throws(() => parseHandle(`${text.split('@')[0]}@x`), code('EINVAL'));
  assert.throws(() => parseHandle(`${text.split('@')[0]}@${GENERATION_MASK + 1}`), code('EINVAL'));
  assert.throws(() => parseHandle('0x12@1'), code('EINVAL'), 'not a valid ID');
});

test('a morsel word that disagrees with a registered ID is ECORRUPT, never a reinterpretation', () => {
  const m = Memory.volatile(8 * MiB);
  const id = m.morsels.create(2);
  const root = decodeIdBits(id).rootFrame;
  const w = m.morsels.words.load(root);
  m.morsels.words.store(root, liveWord(wordGeneration(w), 0, false)); // one flipped tag: says order 0
  assert.throws(() => m.morsels.decode(id), code('ECORRUPT'));
  assert.throws(() => m.createSpace().map(id), code('ECORRUPT'));
  assert.throws(() => m.morsels.destroy(id), code('ECORRUPT'));
  m.morsels.words.store(root, w);
  m.morsels.destroy(id);
});

test('generations wrap after 2^26 destroys of one root frame', () => {
  const m = Memory.volatile(8 * MiB);
  const id = m.morsels.create(0);
  const root = decodeIdBits(id).rootFrame;
  m.morsels.words.store(root, liveWord(GENERATION_MASK, 0, false));
  m.morsels.destroy(id, { generation: GENERATION_MASK });
  assert.equal(m.morsels.generationOf(root), 0);
  assert.equal(wordLive(m.morsels.words.load(root)), false);
});

test('a word left live by a crash (root freed by recovery) gets a new generation at the next create', () => {
  const m = Memory.volatile(8 * MiB);
  const before = freeFrames(m);
  const id = m.morsels.create(0);
  const root = decodeIdBits(id).rootFrame;
  const gen = m.morsels.generationOf(root);
  // What a crash after the word store and before registration leaves, once recovery freed the root:
  m.morsels.live.remove(root, decodeIdBits(id).lo, decodeIdBits(id).hi);
  m.alloc.free(root);
  const again = m.morsels.create(0);
  assert.equal(again, id);
  assert.equal(m.morsels.generationOf(root), gen + 1, 'a generation that may have been handed out is never reused');
  m.morsels.destroy(again);
  assert.equal(freeFrames(m), before);
});
