/**
 * The Kernels interface: every hot loop kvslim runs, over byte offsets into the one shared memory.
 *
 * Calling convention (STYLE.md 2): output first, then inputs, then dimensions. Kernels return void,
 * never allocate, never validate: callers check shapes once at the boundary.
 * All pointers are byte offsets (Ptr) into the arena's WebAssembly.Memory; f32 arrays are 4-byte
 * aligned, every allocation the arena hands out is 64-byte aligned.
 *
 * Two implementations with the same signatures: the WASM SIMD module (assembly/, loaded by wasm.ts)
 * and the plain-TypeScript reference twin (reference.ts). Tests diff them on random shapes.
 *
 * Shape letters: n input features, d output features, t rows (tokens) of a batch, S cached positions,
 * Hd head dim, nHeads heads in a vector of heads.
 *
 * Dot types (as llama.cpp's CPU backend, so logits agree with it): a matrix in bf16 multiplies an
 * activation first rounded to bf16 (roundBf16), q8_0 an activation quantized to q8_0 blocks
 * (quantizeQ8_0) with integer block dot products; f16 and f32 matrices multiply f32 activations.
 */
import type { Ptr } from "../memory/arena.js";

export interface Kernels {
  /** out (d) = W (d, n) @ x (n), W f32. */
  matvecF32(out: Ptr, x: Ptr, w: Ptr, n: number, d: number): void;
  /** out (d) = W (d, n) @ x (n), W f16, x f32. */
  matvecF16(out: Ptr, x: Ptr, w: Ptr, n: number, d: number): void;
  /** out (d) = W (d, n) @ x (n), W bf16, x f32 holding bf16-rounded values. */
  matvecBf16(out: Ptr, x: Ptr, w: Ptr, n: number, d: number): void;
  /** out (d) = W (d, n) @ x (n), W q8_0 (d rows of n/32 blocks), xq = x as q8_0 blocks (n/32). */
  matvecQ8_0(out: Ptr, xq: Ptr, w: Ptr, n: number, d: number): void;

  /** out (t, d) = X (t, n) @ W (d, n)^T, W f32. */
  matmulF32(out: Ptr, x: Ptr, w: Ptr, n: number, d: number, t: number): void;
  /** out (t, d) = X (t, n) @ W (d, n)^T, W f16, X f32. */
  matmulF16(out: Ptr, x: Ptr, w: Ptr, n: number, d: number, t: number): void;
  /** out (t, d) = X (t, n) @ W (d, n)^T, W bf16, X bf16-rounded f32. */
  matmulBf16(out: Ptr, x: Ptr, w: Ptr, n: number, d: number, t: number): void;
  /** out (t, d) = X (t, n) @ W (d, n)^T, W q8_0, xq = t rows of n/32 q8_0 blocks. */
  matmulQ8_0(out: Ptr, xq: Ptr, w: Ptr, n: number, d: number, t: number): void;

  /** out (n/32 blocks of 34 bytes) = q8_0(x (n)): d = max|x|/127 as f16, q = nearest-even(x * (1/d)). */
  quantizeQ8_0(out: Ptr, x: Ptr, n: number): void;
  /** out (n) = f16(x (n)) as f32 (round to nearest even). out may equal x. */
  roundF16(out: Ptr, x: Ptr, n: number): void;
  /** out (n) = bf16(x (n)) as f32 (round to nearest even). out may equal x. */
  roundBf16(out: Ptr, x: Ptr, n: number): void;

  /** out (n) = row `row` of table (rows, n) converted to f32; table in f32 / f16 / bf16 / q8_0. */
  getRowF32(out: Ptr, table: Ptr, row: number, n: number): void;
  getRowF16(out: Ptr, table: Ptr, row: number, n: number): void;
  getRowBf16(out: Ptr, table: Ptr, row: number, n: number): void;
  getRowQ8_0(out: Ptr, table: Ptr, row: number, n: number): void;

  /** out (n) = x / sqrt(mean(x^2) + eps) * w (n). out may equal x. */
  rmsnorm(out: Ptr, x: Ptr, w: Ptr, n: number, eps: number): void;
  /**
   * RoPE in place on x (nHeads, Hd): the first nRot dims of each head rotate by the angles whose
   * cos/sin (nRot/2) are given. Interleaved pairs (2i, 2i+1), as GGUF llama files expect.
   */
  ropeInterleaved(x: Ptr, cos: Ptr, sin: Ptr, nHeads: number, Hd: number, nRot: number): void;
  /** Same, pairs (i, i + nRot/2): the "NeoX" / Hugging Face rotate_half convention (qwen2). */
  ropeHalves(x: Ptr, cos: Ptr, sin: Ptr, nHeads: number, Hd: number, nRot: number): void;
  /** out (n) = silu(gate) * up, silu(x) = x / (1 + exp(-x)). out may equal gate or up. */
  swiglu(out: Ptr, gate: Ptr, up: Ptr, n: number): void;
  /** out (n) = a + b. out may equal a or b. */
  add(out: Ptr, a: Ptr, b: Ptr, n: number): void;

  /**
   * Dense attention of one query head over S cached positions of one KV head:
   * scores (S) = K (S, Hd) @ q (Hd) * scale; p = softmax(scores); out (Hd) = p @ V (S, Hd).
   * K, V f32 with rows of Hd contiguous. `scores` is scratch of S floats (holds p afterwards).
   */
  attendF32(out: Ptr, scores: Ptr, q: Ptr, k: Ptr, v: Ptr, S: number, Hd: number, scale: number): void;
}

export type KernelName = keyof Kernels;
