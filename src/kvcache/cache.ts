/**
 * KV storage: one slot per producer layer (CLA: consumers read their producer's slot).
 *
 * Layout of a slot, f32:
 *   K (G, S, Hd)   each KV head's keys, one row of Hd per position, rows contiguous
 *   V (G, S, Hd)   the same for values
 * S is the session's capacity (its context size). Position p of head g starts at
 * base + ((g * S + p) * Hd) * 4. Keys are stored after RoPE: rotated once, by the producer.
 */
import type { Arena, Ptr } from "../memory/arena.js";
import type { Pool } from "../memory/pool.js";

/** What a cache needs to know of a model: slots (producer layers), G KV heads, Hd head dim. */
export interface KvShape {
  nSlots: number;
  nKvHeads: number;
  headDim: number;
}

export const KV_BYTES_PER_ELEMENT = 4; // f32

export interface KvSlot {
  k: Ptr; // (G, S, Hd)
  v: Ptr; // (G, S, Hd)
}

export class KvCache {
  readonly slots: KvSlot[];
  readonly capacity: number; // S
  /** Positions filled so far. */
  length = 0;
  private readonly block: Ptr;
  private readonly headBytes: number;
  private readonly G: number;
  private readonly Hd: number;

  constructor(
    private readonly arena: Arena,
    private readonly pool: Pool,
    shape: KvShape,
    capacity: number,
  ) {
    this.capacity = capacity;
    this.G = shape.nKvHeads;
    this.Hd = shape.headDim;
    this.headBytes = capacity * this.Hd * KV_BYTES_PER_ELEMENT;
    const nSlots = shape.nSlots;
    this.block = pool.take(KvCache.bytesFor(shape, capacity), `a KV cache for ${capacity} positions`);
    const slotBytes = 2 * this.G * this.headBytes;
    this.slots = Array.from({ length: nSlots }, (_, i) => ({
      k: this.block + i * slotBytes,
      v: this.block + i * slotBytes + this.G * this.headBytes,
    }));
  }

  /** Bytes a cache of `capacity` positions allocates: 2 × producers × G × S × Hd × 4. */
  static bytesFor(shape: KvShape, capacity: number): number {
    return 2 * shape.nSlots * shape.nKvHeads * capacity * shape.headDim * KV_BYTES_PER_ELEMENT;
  }

  get allocatedBytes(): number {
    return this.slots.length * 2 * this.G * this.headBytes;
  }

  /** Bytes holding real positions (what "KV bytes in use" reports). */
  get usedBytes(): number {
    return this.slots.length * 2 * this.G * this.length * this.Hd * KV_BYTES_PER_ELEMENT;
  }

  /** Keys of KV head g in `slot`: (S, Hd). */
  keys(slot: number, g: number): Ptr {
    return this.slots[slot].k + g * this.headBytes;
  }

  values(slot: number, g: number): Ptr {
    return this.slots[slot].v + g * this.headBytes;
  }

  /** Writes k, v (G, Hd) of one token at position `pos` of `slot`. */
  store(slot: number, pos: number, k: Ptr, v: Ptr): void {
    const f32 = this.arena.f32;
    const Hd = this.Hd;
    for (let g = 0; g < this.G; g++) {
      const at = (g * this.headBytes + pos * Hd * KV_BYTES_PER_ELEMENT) >> 2;
      f32.copyWithin((this.slots[slot].k >> 2) + at, (k >> 2) + g * Hd, (k >> 2) + (g + 1) * Hd);
      f32.copyWithin((this.slots[slot].v >> 2) + at, (v >> 2) + g * Hd, (v >> 2) + (g + 1) * Hd);
    }
  }

  free(): void {
    this.pool.give(this.block);
  }
}
