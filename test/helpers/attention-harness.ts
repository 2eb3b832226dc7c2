/**
 * Drives one attention method over one cache slot the way the model does (store the step's keys, attend,
 * advance, end the step), with queries, keys and values given directly, so tests can compare a method
 * with a naive implementation on exactly the same inputs.
 */
import { createAttention, layoutFor, type AttentionMethod, type AttentionSpec } from "../../src/attention/index.js";
import { allocateAttentionScratch, attentionScratchSizes, type AttentionScratch } from "../../src/attention/method.js";
import type { Kernels } from "../../src/kernels/kernels.js";
import { createReferenceKernels } from "../../src/kernels/reference.js";
import { loadWasmKernelsSync } from "../../src/kernels/wasm.js";
import { KvCache, type KvDType } from "../../src/kvcache/cache.js";
import { Arena } from "../../src/memory/arena.js";
import { bf16ToF32, f32ToBf16 } from "../../src/memory/dtype.js";
import { Pool } from "../../src/memory/pool.js";
import { Parallel } from "../../src/threads/parallel.js";

export interface HarnessShape {
  H: number;
  G: number;
  Hd: number;
  /** Longest context (rows of scratch; capacity of non-evicting caches). */
  maxRows: number;
  dtype: KvDType;
  kernels?: "wasm" | "reference";
  /** Threads the method runs on (Harness.create); default 1. */
  threads?: number;
  /** Store K and V Hadamard-rotated (a quantised cache, head dim a multiple of 64). */
  rotation?: boolean;
}

export class Harness {
  readonly arena: Arena;
  readonly kernels: Kernels;
  readonly cache: KvCache;
  method: AttentionMethod;
  parallel: Parallel;
  private readonly scratches: AttentionScratch[];
  private readonly q: number;
  private readonly k: number;
  private readonly v: number;
  private readonly out: number;

  constructor(
    readonly shape: HarnessShape,
    readonly spec: AttentionSpec,
    rowsPerStep = 256,
  ) {
    const { H, G, Hd, maxRows, dtype } = shape;
    const layout = { ...layoutFor(spec, dtype, H / G), rotation: shape.rotation ?? false };
    const pool = KvCache.bytesFor({ nSlots: 1, nKvHeads: G, headDim: Hd }, layout, maxRows) + (1 << 16);
    const sizes = attentionScratchSizes(H / G, Hd, maxRows, rowsPerStep);
    const threads = shape.threads ?? 1;
    const scratchBytes = threads * Object.values(sizes).reduce((a, b) => a + b + 64, 0);
    const io = 4 * rowsPerStep * (2 * H * Hd + 2 * G * Hd);
    this.arena = new Arena(pool + scratchBytes + io + (1 << 16), "an attention test");
    this.kernels =
      shape.kernels === "reference"
        ? createReferenceKernels(this.arena.memory)
        : loadWasmKernelsSync(this.arena.memory);
    this.scratches = Array.from({ length: threads }, () =>
      allocateAttentionScratch((bytes) => this.arena.alloc(bytes), H / G, Hd, maxRows, rowsPerStep),
    );
    this.q = this.arena.alloc(4 * rowsPerStep * H * Hd);
    this.out = this.arena.alloc(4 * rowsPerStep * H * Hd);
    this.k = this.arena.alloc(4 * rowsPerStep * G * Hd);
    this.v = this.arena.alloc(4 * rowsPerStep * G * Hd);
    const poolBase = this.arena.alloc(pool);
    this.cache = new KvCache(
      this.arena,
      new Pool(poolBase, pool),
      this.kernels,
      { nSlots: 1, nKvHeads: G, headDim: Hd },
      layout,
      layout.positions ? 1 : maxRows,
    );
    this.parallel = Parallel.serial(this.kernels, this.arena.memory);
    this.method = this.createMethod();
  }

  /** A harness whose method runs on shape.threads threads (kernel workers over its memory). */
  static async create(shape: HarnessShape, spec: AttentionSpec, rowsPerStep = 256): Promise<Harness> {
    const h = new Harness(shape, spec, rowsPerStep);
    if ((shape.threads ?? 1) > 1) {
      h.parallel = await Parallel.create(h.kernels, h.arena.memory, shape.kernels ?? "wasm", shape.threads!, 0);
      h.method = h.createMethod();
    }
    return h;
  }

  private createMethod(): AttentionMethod {
    const { H, G, Hd } = this.shape;
    const scratches = this.scratches.slice(0, this.parallel.threads);
    return createAttention(
      {
        kernels: this.kernels,
        arena: this.arena,
        cache: this.cache,
        nHeads: H,
        nKvHeads: G,
        headDim: Hd,
        scale: Math.fround(1 / Math.sqrt(Hd)),
        contextSize: this.shape.maxRows,
        parallel: this.parallel,
        scratches,
      },
      this.spec,
    );
  }

  /**
   * One evaluate() of T tokens: q (T, H·Hd), k and v (T, G·Hd) f32 → attention output (T, H·Hd).
   * T = 1 is a decode step, T > 1 a dense prefill.
   */
  step(q: Float32Array, k: Float32Array, v: Float32Array): Float32Array {
    const { H, G, Hd } = this.shape;
    const T = q.length / (H * Hd);
    const f32 = this.arena.f32;
    f32.set(q, this.q >> 2);
    f32.set(k, this.k >> 2);
    f32.set(v, this.v >> 2);
    this.method.beforePrefill(T);
    for (let t = 0; t < T; t++) this.cache.store(0, t, this.k + 4 * t * G * Hd, this.v + 4 * t * G * Hd);
    if (T === 1) this.method.decode(0, this.q, this.out);
    else this.method.prefill(0, this.q, this.out, T);
    this.cache.advance(T);
    this.method.endStep(T);
    this.method.afterPrefill();
    return f32.slice(this.out >> 2, (this.out >> 2) + T * H * Hd);
  }
}

/** The value a KV cache of `dtype` stores for x. */
export function stored(dtype: KvDType, x: number): number {
  return dtype === "f32" ? Math.fround(x) : bf16ToF32(f32ToBf16(x));
}
