/**
 * A first-fit allocator over one region of the arena, for things that come and go (KV caches of
 * sessions). The arena itself only grows; this hands its region out again and again.
 */
import { OutOfMemoryError, formatBytes } from "../errors.js";
import { ALIGN, alignUp, type Ptr } from "./arena.js";

interface Block {
  ptr: Ptr;
  bytes: number;
}

export class Pool {
  private free: Block[];
  private taken = new Map<Ptr, number>();

  constructor(
    readonly base: Ptr,
    readonly size: number,
  ) {
    this.free = size > 0 ? [{ ptr: base, bytes: size }] : [];
  }

  /** Takes `bytes` (rounded up to 64); `what` names the request in the error when it does not fit. */
  take(bytes: number, what: string): Ptr {
    const need = alignUp(Math.max(bytes, 1), ALIGN);
    const i = this.free.findIndex((b) => b.bytes >= need);
    if (i < 0) {
      throw new OutOfMemoryError(
        `${what} needs ${formatBytes(need)} but the cache memory has ${formatBytes(this.available)} free ` +
          `of ${formatBytes(this.size)}; dispose other sessions or load the model with a larger cache budget`,
      );
    }
    const block = this.free[i];
    const ptr = block.ptr;
    if (block.bytes === need) this.free.splice(i, 1);
    else this.free[i] = { ptr: ptr + need, bytes: block.bytes - need };
    this.taken.set(ptr, need);
    return ptr;
  }

  /** Gives a block back; neighbouring free blocks merge. */
  give(ptr: Ptr): void {
    const bytes = this.taken.get(ptr);
    if (bytes === undefined) throw new Error(`pool: ${ptr} was not taken from this pool`);
    this.taken.delete(ptr);
    this.free.push({ ptr, bytes });
    this.free.sort((a, b) => a.ptr - b.ptr);
    const merged: Block[] = [];
    for (const b of this.free) {
      const last = merged[merged.length - 1];
      if (last && last.ptr + last.bytes === b.ptr) last.bytes += b.bytes;
      else merged.push({ ...b });
    }
    this.free = merged;
  }

  get available(): number {
    return this.free.reduce((s, b) => s + b.bytes, 0);
  }

  get inUse(): number {
    return this.size - this.available;
  }
}
