/**
 * The forward pass of a Llama-style decoder over a chunk of T tokens (T = 1 is decode).
 *
 * Per token: embedding -> per layer: RMSNorm -> q (and k, v if the layer is a K/V producer) -> RoPE ->
 * cache.store (producer slot) -> attention over the layer's slot -> output projection -> residual ->
 * RMSNorm -> SwiGLU FFN -> residual; then final RMSNorm -> logits.
 * T = 1 runs matrix-vector kernels, T > 1 matrix-matrix kernels; every other step is the same code,
 * so prefill and decode cannot drift apart. Nothing here knows which attention method runs beyond
 * calling attend() over a slot; CLA is only the layer -> slot map.
 */
import {
  allocateAttentionScratch,
  attentionScratchSizes,
  type AttentionMethod,
  type AttentionScratch,
} from "../attention/method.js";
import type { Kernels } from "../kernels/kernels.js";
import type { KvCache } from "../kvcache/cache.js";
import type { Arena, Ptr } from "../memory/arena.js";
import { LINEAR_OPS, type LinearOp, type Parallel } from "../threads/parallel.js";
import { bytesFor } from "../memory/dtype.js";
import { derive, type Derived, type ModelConfig } from "./config.js";
import { RopeTable, llama3FreqFactors } from "./rope.js";
import type { Matrix, Weights } from "./weights.js";

/**
 * What activations meeting f16 weights are: "f32" (kept, the default) or "f16" (rounded to f16 first,
 * llama.cpp's dot type for f16 weights on x86, for bit-level agreement with it).
 */
export type F16Activations = "f32" | "f16";

/** Rows a prefill chunk holds; longer prompts run in chunks of this many tokens. */
export const CHUNK = 64;

/** Activation buffers for one forward at a time (all f32 unless noted). */
export interface RunState {
  rows: number; // P, the chunk size the buffers hold
  x: Ptr; // (P, D) residual stream
  xb: Ptr; // (P, D) normed input of the current block
  xkv: Ptr; // (P, D) K/V-input norm output (kvNorm models)
  act: Ptr; // (P, max(D, F, H*Hd)) the activation rounded / quantized to a weight's dot type
  q: Ptr; // (P, H*Hd)
  k: Ptr; // (P, G*Hd)
  v: Ptr; // (P, G*Hd)
  att: Ptr; // (P, H*Hd) attention output per head
  proj: Ptr; // (P, D)
  hb: Ptr; // (P, F)
  hb2: Ptr; // (P, F)
  logits: Ptr; // (P, V)
  attention: AttentionScratch[]; // the attention methods' buffers, for contexts up to S, one set per thread
  cos: Ptr; // (P, ropeDim/2)
  sin: Ptr; // (P, ropeDim/2)
}

/** Bytes of each RunState buffer, in field order (attention: one thread's set); the one sizing function for activations. */
export function runStateSizes(
  c: ModelConfig,
  rows: number,
  maxSeq: number,
): Record<keyof Omit<RunState, "rows" | "attention">, number> & {
  attention: ReturnType<typeof attentionScratchSizes>;
} {
  const { qDim, kvDim } = derive(c);
  const widest = Math.max(c.dModel, c.ffnDim, qDim);
  const f = (n: number) => 4 * n;
  return {
    x: f(rows * c.dModel),
    xb: f(rows * c.dModel),
    xkv: c.kvNorm ? f(rows * c.dModel) : 0,
    act: f(rows * widest),
    q: f(rows * qDim),
    k: f(rows * kvDim),
    v: f(rows * kvDim),
    att: f(rows * qDim),
    proj: f(rows * c.dModel),
    hb: f(rows * c.ffnDim),
    hb2: f(rows * c.ffnDim),
    logits: f(rows * c.vocabSize),
    attention: attentionScratchSizes(c.nHeads / c.nKvHeads, c.headDim, maxSeq, rows),
    cos: f((rows * c.ropeDim) / 2),
    sin: f((rows * c.ropeDim) / 2),
  };
}

/** Every buffer's bytes, flattened: what planMemory adds up. */
export function runStateBuffers(c: ModelConfig, rows: number, maxSeq: number, threads: number): number[] {
  const { attention, ...rest } = runStateSizes(c, rows, maxSeq);
  return [...Object.values(rest), ...Array.from({ length: threads }, () => Object.values(attention)).flat()];
}

export function createRunState(arena: Arena, c: ModelConfig, rows: number, maxSeq: number, threads: number): RunState {
  const { attention: _, ...sizes } = runStateSizes(c, rows, maxSeq);
  const state = { rows } as RunState;
  for (const [key, bytes] of Object.entries(sizes)) state[key as keyof typeof sizes] = arena.alloc(bytes);
  state.attention = Array.from({ length: threads }, () =>
    allocateAttentionScratch((bytes) => arena.alloc(bytes), c.nHeads / c.nKvHeads, c.headDim, maxSeq, rows),
  );
  return state;
}

/** The activation quantizer llama.cpp pairs with each block-format weight dtype (its "vec_dot_type"). */
const ACTIVATIONS = {
  q8_0: "quantizeQ8_0",
  q4_0: "quantizeQ8_0",
  q5_0: "quantizeQ8_0",
  q4_1: "quantizeQ8_1",
  q5_1: "quantizeQ8_1",
  q4_k: "quantizeQ8_K",
  q5_k: "quantizeQ8_K",
  q6_k: "quantizeQ8_K",
} as const satisfies Record<keyof typeof LINEAR_OPS, keyof Kernels>;

export class Forward {
  private readonly d: Derived;
  private readonly rope: RopeTable;

  constructor(
    private readonly k: Kernels,
    private readonly par: Parallel,
    private readonly arena: Arena,
    private readonly c: ModelConfig,
    private readonly w: Weights,
    private readonly s: RunState,
    /** The dot type of activations meeting f16 weights (see F16Activations). */
    private readonly f16Activations: F16Activations = "f32",
  ) {
    this.d = derive(c);
    this.rope = new RopeTable(c.ropeDim, c.ropeTheta, w.ropeFreqFactors ?? llama3FreqFactors(c));
  }

  /** Where run() leaves the logits: (V), or (T, V) for "all". */
  get logitsPtr(): Ptr {
    return this.s.logits;
  }

  /** The attention methods' scratch buffers, one set per thread. */
  get attentionScratch(): AttentionScratch[] {
    return this.s.attention;
  }

  /**
   * Runs tokens (T ≤ rows) at positions cache.length … cache.length + T − 1, appending their K/V.
   * One token runs the attention method's decode step, several its (dense) prefill.
   * logits: "last" writes the last token's logits at s.logits; "all" writes (T, V); "none" skips them.
   */
  run(cache: KvCache, attention: AttentionMethod, tokens: ArrayLike<number>, logits: "last" | "all" | "none"): void {
    const { s } = this;
    const T = tokens.length;
    const start = cache.length;
    this.embed(tokens, (t) => start + t);
    this.blocks(
      T,
      (slot, t, k, v) => cache.store(slot, t, k, v),
      (slot) => (T === 1 ? attention.decode(slot, s.q, s.att) : attention.prefill(slot, s.q, s.att, T)),
    );
    cache.advance(T);
    attention.endStep(T);
    if (logits !== "none") this.logits(logits === "last" ? T - 1 : 0, T);
  }

  /**
   * One decode step of several sequences (B ≤ rows): row b is rows[b].token at position rows[b].cache.length,
   * its K/V appended to its own cache and its attention run by its own method. The weights are read once for
   * all B tokens (matrix–matrix products); (B, V) logits are left at s.logits. A row's logits are the same
   * bits as run() gives that token alone: the matmul kernels sum each row in the matvec kernels' order.
   */
  runBatch(rows: readonly { cache: KvCache; attention: AttentionMethod; token: number }[]): void {
    const { s, d } = this;
    const B = rows.length;
    this.embed(
      rows.map((r) => r.token),
      (b) => rows[b].cache.length,
    );
    this.blocks(
      B,
      (slot, b, k, v) => rows[b].cache.store(slot, 0, k, v),
      (slot) => {
        for (let b = 0; b < B; b++) rows[b].attention.decode(slot, s.q + 4 * b * d.qDim, s.att + 4 * b * d.qDim);
      },
    );
    for (const r of rows) {
      r.cache.advance(1);
      r.attention.endStep(1);
    }
    this.logits(0, B);
  }

  /** Embedding rows of the T tokens into s.x and RoPE tables for their positions. */
  private embed(tokens: ArrayLike<number>, position: (t: number) => number): void {
    const { c, s, w } = this;
    const D = c.dModel;
    const half = c.ropeDim / 2;
    const f32 = this.arena.f32;
    for (let t = 0; t < tokens.length; t++) {
      this.getRow(s.x + 4 * t * D, w.tokEmbd, tokens[t]);
      this.rope.fill(f32, (s.cos >> 2) + t * half, (s.sin >> 2) + t * half, position(t));
    }
  }

  /**
   * The decoder layers over the T rows of s.x: `store(slot, t, k, v)` keeps row t's K/V (pointers to kvDim
   * floats) for a producer layer, `attend(slot)` writes s.att from s.q over the layer's slot.
   */
  private blocks(
    T: number,
    store: (slot: number, t: number, k: Ptr, v: Ptr) => void,
    attend: (slot: number) => void,
  ): void {
    const { k, c, w, s, d } = this;
    const D = c.dModel;
    for (let l = 0; l < c.nLayers; l++) {
      const lw = w.layers[l];
      const slot = d.slotOf[l];
      // Attention block.
      for (let t = 0; t < T; t++) k.rmsnorm(s.xb + 4 * t * D, s.x + 4 * t * D, lw.attnNorm, D, c.normEps);
      this.linear(s.q, s.xb, lw.wq, T, lw.bq);
      this.applyRope(s.q, c.nHeads, T);
      if (d.isProducer[l]) {
        let kvIn = s.xb;
        if (lw.kvNorm !== null) {
          for (let t = 0; t < T; t++) k.rmsnorm(s.xkv + 4 * t * D, s.x + 4 * t * D, lw.kvNorm, D, c.normEps);
          kvIn = s.xkv;
        }
        this.linear(s.k, kvIn, lw.wk!, T, lw.bk);
        this.linear(s.v, kvIn, lw.wv!, T, lw.bv);
        this.applyRope(s.k, c.nKvHeads, T);
        for (let t = 0; t < T; t++) store(slot, t, s.k + 4 * t * d.kvDim, s.v + 4 * t * d.kvDim);
      }
      attend(slot);
      this.linear(s.proj, s.att, lw.wo, T, null);
      k.add(s.x, s.x, s.proj, T * D);
      // Feed-forward block.
      for (let t = 0; t < T; t++) k.rmsnorm(s.xb + 4 * t * D, s.x + 4 * t * D, lw.ffnNorm, D, c.normEps);
      this.linear(s.hb, s.xb, lw.wGate, T, null);
      this.linear(s.hb2, s.xb, lw.wUp, T, null);
      k.swiglu(s.hb, s.hb, s.hb2, T * c.ffnDim);
      this.linear(s.proj, s.hb, lw.wDown, T, null);
      k.add(s.x, s.x, s.proj, T * D);
    }
  }

  /** Logits of rows first … T − 1 of s.x, as (T − first, V) at s.logits. */
  private logits(first: number, T: number): void {
    const { k, c, w, s } = this;
    const D = c.dModel;
    for (let t = first; t < T; t++) k.rmsnorm(s.xb + 4 * (t - first) * D, s.x + 4 * t * D, w.outputNorm, D, c.normEps);
    this.linear(s.logits, s.xb, w.output, T - first, null);
  }

  /**
   * out (T, W.rows) = x (T, W.cols) @ W^T (+ bias), through the kernel for W's dtype, split by rows of W
   * over the threads.
   */
  private linear(out: Ptr, x: Ptr, W: Matrix, T: number, bias: Ptr | null): void {
    const { k, s, par } = this;
    const n = W.cols;
    const d = W.rows;
    let input = x;
    let op: LinearOp;
    let rowBytes: number;
    switch (W.dtype) {
      case "f32":
        [op, rowBytes] = ["F32", 4 * n];
        break;
      case "f16":
        // f32 activations by default (the more exact product); "f16" rounds them first, as llama.cpp's
        // x86 CPU backend does on most CPUs (docs/llama-cpp.md).
        if (this.f16Activations === "f16") {
          k.roundF16(s.act, x, T * n);
          input = s.act;
        }
        [op, rowBytes] = ["F16", 2 * n];
        break;
      case "bf16":
        // bf16 weights meet bf16-rounded activations, as in llama.cpp (agrees to 1e-7; unrounded: 3e-3).
        k.roundBf16(s.act, x, T * n);
        [op, rowBytes, input] = ["Bf16", 2 * n, s.act];
        break;
      default:
        // Block formats meet activations quantized as llama.cpp's CPU backend pairs them (ACTIVATIONS). Rows
        // of x are whole blocks (n is a multiple of the block), so all T rows quantize in one call.
        k[ACTIVATIONS[W.dtype]](s.act, x, T * n);
        [op, rowBytes, input] = [LINEAR_OPS[W.dtype], bytesFor(W.dtype, n), s.act];
    }
    if (T === 1) par.matvec(op, out, input, W.ptr, n, d, rowBytes);
    else par.matmul(op, out, input, W.ptr, n, d, T, rowBytes);
    if (bias !== null) for (let t = 0; t < T; t++) k.add(out + 4 * t * d, out + 4 * t * d, bias, d);
  }

  private getRow(out: Ptr, table: Matrix, row: number): void {
    const { k } = this;
    switch (table.dtype) {
      case "f32":
        return k.getRowF32(out, table.ptr, row, table.cols);
      case "f16":
        return k.getRowF16(out, table.ptr, row, table.cols);
      case "bf16":
        return k.getRowBf16(out, table.ptr, row, table.cols);
      default:
        return k[`getRow${LINEAR_OPS[table.dtype]}`](out, table.ptr, row, table.cols);
    }
  }

  private applyRope(x: Ptr, nHeads: number, T: number): void {
    const { k, c, s } = this;
    const half = c.ropeDim / 2;
    for (let t = 0; t < T; t++) {
      const row = x + 4 * t * nHeads * c.headDim;
      if (c.ropeStyle === "interleaved")
        k.ropeInterleaved(row, s.cos + 4 * t * half, s.sin + 4 * t * half, nHeads, c.headDim, c.ropeDim);
      else k.ropeHalves(row, s.cos + 4 * t * half, s.sin + 4 * t * half, nHeads, c.headDim, c.ropeDim);
    }
  }
}
