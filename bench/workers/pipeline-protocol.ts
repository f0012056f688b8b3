/** Messages and constants shared by bench/pipeline.ts and its stage workers (no side effects). */
import type { Order } from '../../src/morsel/order.js';

export type Stage = 'datasource' | 'checksum' | 'sender';
/** transferable: a plain ArrayBuffer per buffer, moved between stage threads by postMessage transfer (V8's zero-copy hand-off). */
/** morsel-huge: morsels with the 2 MiB-leaf policy (faults populate whole leaves). */
export type PipelineVariant = 'morsel' | 'morsel-huge' | 'conventional' | 'transferable';
export const COMPONENTS = ['alloc', 'map', 'faults', 'work', 'unmap'] as const;
export type Component = (typeof COMPONENTS)[number];

export interface PipelineRun {
  op: 'run';
  variant: PipelineVariant;
  count: number;
  bufBytes: number;
  order: Order;
}

export interface StageReply {
  components: Record<Component, number>;
  start: number;
  end: number;
  checksum: number;
}

