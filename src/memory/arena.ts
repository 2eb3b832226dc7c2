/**
 * The one WebAssembly.Memory that holds everything: weights, activations and KV cache.
 *
 * Byte layout of the memory:
 *   [0, RESERVED)        the kernel module's own static data (AssemblyScript, stub runtime, no heap)
 *   [RESERVED, size)     regions handed out in order by alloc(), each 64-byte aligned
 *
 * The memory is created once with its final size (initial = maximum), so TypeScript views never go
 * stale, and with `shared: true` so worker threads can run kernels over it without copies.
 * Sizes are planned before anything is loaded (see model/plan.ts); nothing here grows.
 */
import { OutOfMemoryError, formatBytes } from "../errors.js";

export const PAGE = 65536;
/** Bytes at the start of memory left to the kernel module. */
export const RESERVED = 4 * PAGE;
/** The 32-bit WebAssembly limit: 65536 pages of 64 KiB. */
export const MAX_MEMORY = 65536 * PAGE;
export const ALIGN = 64;

/** A byte offset into the arena's memory. */
export type Ptr = number;

export class Arena {
  readonly memory: WebAssembly.Memory;
  readonly size: number;
  private top: number = RESERVED;
  // Views over the whole memory; fixed because the memory never grows.
  readonly u8: Uint8Array;
  readonly f32: Float32Array;
  readonly u16: Uint16Array;
  readonly i32: Int32Array;

  /** Creates a shared memory of at least `bytes` usable bytes (plus the reserved prefix). */
  constructor(bytes: number, what = "the model and its cache") {
    const total = alignUp(RESERVED + bytes, PAGE);
    if (total > MAX_MEMORY) {
      throw new OutOfMemoryError(
        `${what} needs ${formatBytes(total)} but one WebAssembly memory holds at most ${formatBytes(MAX_MEMORY)}; ` +
          `use a smaller weight dtype (q8_0), a smaller KV dtype or a shorter context`,
      );
    }
    const pages = total / PAGE;
    try {
      this.memory = new WebAssembly.Memory({ initial: pages, maximum: pages, shared: true });
    } catch (e) {
      throw new OutOfMemoryError(`could not reserve ${formatBytes(total)} for ${what}: ${(e as Error).message}`);
    }
    this.size = total;
    const buffer = this.memory.buffer;
    this.u8 = new Uint8Array(buffer);
    this.u16 = new Uint16Array(buffer);
    this.f32 = new Float32Array(buffer);
    this.i32 = new Int32Array(buffer);
  }

  /** Hands out `bytes` bytes, 64-byte aligned. Running out is a planning bug, so it asserts. */
  alloc(bytes: number): Ptr {
    const ptr = alignUp(this.top, ALIGN);
    if (ptr + bytes > this.size) {
      throw new Error(`arena overflow: planned ${this.size} bytes, asked for ${ptr + bytes} (a sizing bug)`);
    }
    this.top = ptr + bytes;
    return ptr;
  }

  /** Bytes handed out so far (excluding the reserved prefix). */
  get used(): number {
    return this.top - RESERVED;
  }

  /** A Float32Array view of `n` floats at `ptr` (ptr must be 4-byte aligned). */
  f32View(ptr: Ptr, n: number): Float32Array {
    return new Float32Array(this.memory.buffer, ptr, n);
  }

  /** A byte view of `n` bytes at `ptr`. */
  bytes(ptr: Ptr, n: number): Uint8Array {
    return new Uint8Array(this.memory.buffer, ptr, n);
  }
}

export function alignUp(n: number, align: number): number {
  return Math.ceil(n / align) * align;
}

/** Bytes an allocation of `bytes` occupies in the arena (what plan functions add up). */
export function allocSize(bytes: number): number {
  return alignUp(bytes, ALIGN);
}
