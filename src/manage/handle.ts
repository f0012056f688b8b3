/**
 * Handles: a morsel ID plus its incarnation (the generation of its root
 * frame's morsel word) and the rights it was opened with. The text form is
 * `0x<16 hex digits>@<generation>`; a raw ID without `@generation` is
 * refused (EINVAL) where a handle is needed, and a handle whose incarnation
 * was destroyed gives ESTALE, never another morsel's data.
 */
import { MorselError, check } from '../errors.js';
import { decodeIdBits, hex, parseId, type MorselId } from '../morsel/id.js';
import { GENERATION_MASK } from '../morsel/words.js';
import type { Order } from '../morsel/order.js';
import type { AccessRights } from './rights.js';

/** An ID and generation: what names a morsel incarnation. */
export interface MorselRef {
  readonly id: MorselId;
  readonly generation: number;
}

/**
 * What a handle names, immutable: the incarnation (ID, generation), its data
 * morsel's root frame (the usage key) and order, the frame holding its
 * morsel word (the ID's root frame: close needs no decode), and its logical
 * byte length at open. One target serves every handle opened through one
 * lookup-cache entry, so an open allocates only the small handle itself.
 */
export interface HandleTarget extends MorselRef {
  readonly dataRoot: number;
  readonly dataOrder: Order;
  readonly wordFrame: number;
  readonly sizeBytes: number;
}

/**
 * An open handle: counted in this process's usage registries until closed
 * (Names.close), so the morsel outlives an unlink while it is open.
 */
export class MorselHandle implements MorselRef {
  /** false after close(): every use is EBADF */
  open = true;

  constructor(
    readonly target: HandleTarget,
    readonly rights: Readonly<AccessRights>,
    readonly path?: string,
  ) {}

  get id(): MorselId {
    return this.target.id;
  }

  get generation(): number {
    return this.target.generation;
  }

  /** the data morsel's root frame (the usage key): stable while the handle is open */
  get dataRoot(): number {
    return this.target.dataRoot;
  }

  get dataOrder(): Order {
    return this.target.dataOrder;
  }

  /** the frame holding the incarnation's morsel word */
  get wordFrame(): number {
    return this.target.wordFrame;
  }

  /** logical byte length at open */
  get sizeBytes(): number {
    return this.target.sizeBytes;
  }

  toString(): string {
    return formatHandle(this);
  }
}

export const formatHandle = (ref: MorselRef): string => `${hex(ref.id)}@${ref.generation}`;

/** Parses `0x…@generation`; EINVAL for a raw ID or garbage. */
export function parseHandle(text: string): MorselRef {
  const at = text.indexOf('@');
  if (at < 0) throw new MorselError('EINVAL', `${JSON.stringify(text)} is a raw ID; a handle is ID@generation (see stat or inspect)`);
  const id = decodeIdBits(parseId(text.slice(0, at))).id;
  const genText = text.slice(at + 1).trim();
  check(/^\d{1,8}$/.test(genText) && Number(genText) <= GENERATION_MASK, 'EINVAL', () => `bad generation in handle ${JSON.stringify(text)}`);
  return { id, generation: Number(genText) };
}

/** Whether text looks like a handle or ID rather than a path. */
export const isHandleText = (text: string): boolean => /^(0x[0-9a-fA-F]+|\d+)(@\d+)?$/.test(text.trim());
