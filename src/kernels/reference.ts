/**
 * The reference twin of the WASM kernels: plain TypeScript, same signatures, same semantics.
 *
 * Clarity over speed. Dot products and sums accumulate in float64 in index order (so they are
 * at least as accurate as the SIMD kernels; tests compare with a tolerance). Where the WASM
 * result is defined bit for bit (f16/bf16 rounding, getRow, q8_0 quantization and q8_0 dots,
 * RoPE, add, SparQ's approximate scores, topK, bf16 packing) this file computes the same f32
 * operations, with Math.fround after each one.
 * Pointers are byte offsets into `memory`; views are created once (the memory never grows).
 * The training kernels' twins live in reference-train.ts, the quantized-weight kernels' in
 * reference-quants.ts, the quantized-KV-cache kernels' in reference-kvquant.ts; all are merged in here.
 */
import type { Ptr } from "../memory/arena.js";
import {
  Q8_0_BLOCK,
  Q8_0_BLOCK_BYTES,
  bf16ToF32,
  f16ToF32,
  f32BitsToBf16,
  f32ToBf16,
  f32ToF16,
  roundF16,
  roundHalfEven,
} from "../memory/dtype.js";
import type { Kernels } from "./kernels.js";
import { createReferenceKvQuantKernels } from "./reference-kvquant.js";
import { createReferenceQuantKernels } from "./reference-quants.js";
import { createReferenceTrainKernels } from "./reference-train.js";

const f = Math.fround;

export function createReferenceKernels(memory: WebAssembly.Memory): Kernels {
  const f32 = new Float32Array(memory.buffer);
  const u16 = new Uint16Array(memory.buffer);
  const i8 = new Int8Array(memory.buffer);
  const u32 = new Uint32Array(memory.buffer);
  const i32 = new Int32Array(memory.buffer);

  // Element j of a weight row starting at byte `row`, as a number (exact conversions).
  const readF32 = (row: Ptr, j: number) => f32[row / 4 + j];
  const readF16 = (row: Ptr, j: number) => f16ToF32(u16[row / 2 + j]);
  const readBf16 = (row: Ptr, j: number) => bf16ToF32(u16[row / 2 + j]);

  /** Σ_j W[row][j] x[j] for a float weight type with `bytes` bytes per element. */
  function dot(read: (row: Ptr, j: number) => number, bytes: number, x: Ptr, w: Ptr, r: number, n: number): number {
    const row = w + r * n * bytes;
    let sum = 0;
    for (let j = 0; j < n; j++) sum += read(row, j) * f32[x / 4 + j];
    return sum;
  }

  /** The q8_0 dot of weight row r with the q8_0 vector xq: integer block sums, f32 accumulation. */
  function dotQ8_0(xq: Ptr, w: Ptr, r: number, n: number): number {
    const nb = n / Q8_0_BLOCK;
    const row = w + r * nb * Q8_0_BLOCK_BYTES;
    let sum = 0;
    for (let b = 0; b < nb; b++) {
      const wb = row + b * Q8_0_BLOCK_BYTES;
      const xb = xq + b * Q8_0_BLOCK_BYTES;
      let sumi = 0;
      for (let j = 0; j < Q8_0_BLOCK; j++) sumi += i8[wb + 2 + j] * i8[xb + 2 + j];
      const d = f(f16ToF32(u16[wb / 2]) * f16ToF32(u16[xb / 2]));
      sum = f(sum + f(sumi * d));
    }
    return sum;
  }

  function matvec(read: (row: Ptr, j: number) => number, bytes: number) {
    return (out: Ptr, x: Ptr, w: Ptr, n: number, d: number): void => {
      for (let r = 0; r < d; r++) f32[out / 4 + r] = dot(read, bytes, x, w, r, n);
    };
  }

  function matmul(read: (row: Ptr, j: number) => number, bytes: number) {
    return (out: Ptr, x: Ptr, w: Ptr, n: number, d: number, t: number, ldo: number): void => {
      for (let i = 0; i < t; i++) {
        for (let r = 0; r < d; r++) f32[out / 4 + i * ldo + r] = dot(read, bytes, x + i * n * 4, w, r, n);
      }
    };
  }

  function getRow(read: (row: Ptr, j: number) => number, bytes: number) {
    return (out: Ptr, table: Ptr, row: number, n: number): void => {
      for (let j = 0; j < n; j++) f32[out / 4 + j] = read(table + row * n * bytes, j);
    };
  }

  /** RoPE of pair (i0, i1) of one head by (c, s), in f32 as the kernel does. */
  function rotate(i0: number, i1: number, c: number, s: number): void {
    const x0 = f32[i0],
      x1 = f32[i1];
    f32[i0] = f(f(x0 * c) - f(x1 * s));
    f32[i1] = f(f(x0 * s) + f(x1 * c));
  }

  /** softmax of x (n) in place, as ggml: f32 exps summed in float64, scaled by f32(1 / Σ). */
  function softmax(x: Ptr, n: number): void {
    let max = -Infinity;
    for (let s = 0; s < n; s++) max = Math.max(max, f32[x / 4 + s]);
    let sum = 0;
    for (let s = 0; s < n; s++) {
      const e = f(Math.exp(f32[x / 4 + s] - max));
      f32[x / 4 + s] = e;
      sum += e;
    }
    for (let s = 0; s < n; s++) f32[x / 4 + s] *= f(1 / sum);
  }

  /**
   * Attention of one head q (Hd) over n rows of K, V (rows of Hd elements read by `read`): the s-th
   * row attended is rowOf(s). out (Hd); p (n) holds the probabilities afterwards.
   */
  function attendHead(
    read: (row: Ptr, j: number) => number,
    bytes: number,
    out: Ptr,
    p: Ptr,
    q: Ptr,
    k: Ptr,
    v: Ptr,
    rowOf: (s: number) => number,
    n: number,
    Hd: number,
    scale: number,
  ): void {
    // Step 1: scores = K q * scale.
    for (let s = 0; s < n; s++) f32[p / 4 + s] = dot(read, bytes, q, k, rowOf(s), Hd) * scale;
    // Step 2: softmax in place.
    softmax(p, n);
    // Step 3: out = Σ_s p_s V[s].
    for (let j = 0; j < Hd; j++) {
      let acc = 0;
      for (let s = 0; s < n; s++) acc += f32[p / 4 + s] * read(v + rowOf(s) * Hd * bytes, j);
      f32[out / 4 + j] = acc;
    }
  }

  /** attendHead for g heads: q, out (g, Hd); scores (g, n) holds p afterwards. */
  function attend(
    read: (row: Ptr, j: number) => number,
    bytes: number,
    out: Ptr,
    scores: Ptr,
    q: Ptr,
    k: Ptr,
    v: Ptr,
    rowOf: (s: number) => number,
    n: number,
    Hd: number,
    g: number,
    scale: number,
  ): void {
    for (let h = 0; h < g; h++)
      attendHead(read, bytes, out + h * Hd * 4, scores + h * n * 4, q + h * Hd * 4, k, v, rowOf, n, Hd, scale);
  }

  /**
   * Causal attention of T rows of g heads: query (t, h) at q + 4 (t·qStride + h·Hd) over rows
   * 0 … S0 + t, out in the same layout, p in row (t, h) of scores (T, g, S0 + T).
   */
  function attendCausal(
    read: (row: Ptr, j: number) => number,
    bytes: number,
    out: Ptr,
    scores: Ptr,
    q: Ptr,
    k: Ptr,
    v: Ptr,
    S0: number,
    T: number,
    Hd: number,
    g: number,
    qStride: number,
    scale: number,
  ): void {
    for (let t = 0; t < T; t++) {
      for (let h = 0; h < g; h++) {
        const at = 4 * (t * qStride + h * Hd),
          p = scores + 4 * (t * g + h) * (S0 + T);
        attendHead(read, bytes, out + at, p, q + at, k, v, (s) => s, S0 + t + 1, Hd, scale);
      }
    }
  }

  /**
   * SparQ's approximate scores, in f32 exactly as the kernels: element (i, s) of K is
   * read(k, at(i, s)); out[h][s] = f32(acc) * scale[h], acc summed over idx in order.
   */
  function sparqScores(
    read: (row: Ptr, j: number) => number,
    out: Ptr,
    q: Ptr,
    k: Ptr,
    idx: Ptr,
    scale: Ptr,
    r: number,
    S: number,
    Hd: number,
    g: number,
    at: (i: number, s: number) => number,
  ): void {
    for (let h = 0; h < g; h++) {
      for (let s = 0; s < S; s++) {
        let acc = 0;
        for (let j = 0; j < r; j++) {
          const i = i32[idx / 4 + j];
          acc = f(acc + f(f32[q / 4 + h * Hd + i] * read(k, at(i, s))));
        }
        f32[out / 4 + h * S + s] = f(acc * f32[scale / 4 + h]);
      }
    }
  }

  /** The f32 bits as a u32 key in float order (-0 < +0): negatives flipped, positives' sign bit set. */
  const keyOf = (bits: number) => (bits >= 0x80000000 ? ~bits >>> 0 : (bits | 0x80000000) >>> 0);

  return {
    ...createReferenceTrainKernels(memory),
    ...createReferenceQuantKernels(memory),
    ...createReferenceKvQuantKernels(memory),
    matvecF32: matvec(readF32, 4),
    matvecF16: matvec(readF16, 2),
    matvecBf16: matvec(readBf16, 2),
    matvecQ8_0(out, xq, w, n, d) {
      for (let r = 0; r < d; r++) f32[out / 4 + r] = dotQ8_0(xq, w, r, n);
    },

    matmulF32: matmul(readF32, 4),
    matmulF16: matmul(readF16, 2),
    matmulBf16: matmul(readBf16, 2),
    matmulQ8_0(out, xq, w, n, d, t, ldo) {
      const xRowBytes = (n / Q8_0_BLOCK) * Q8_0_BLOCK_BYTES;
      for (let i = 0; i < t; i++) {
        for (let r = 0; r < d; r++) f32[out / 4 + i * ldo + r] = dotQ8_0(xq + i * xRowBytes, w, r, n);
      }
    },

    quantizeQ8_0(out, x, n) {
      for (let b = 0; b < n / Q8_0_BLOCK; b++) {
        const xb = x / 4 + b * Q8_0_BLOCK;
        const ob = out + b * Q8_0_BLOCK_BYTES;
        let amax = 0;
        for (let j = 0; j < Q8_0_BLOCK; j++) amax = Math.max(amax, Math.abs(f32[xb + j]));
        const d = f(amax / 127);
        const id = amax !== 0 ? f(127 / amax) : 0;
        u16[ob / 2] = f32ToF16(d);
        for (let j = 0; j < Q8_0_BLOCK; j++) i8[ob + 2 + j] = roundHalfEven(f(f32[xb + j] * id));
      }
    },
    roundF16(out, x, n) {
      for (let j = 0; j < n; j++) f32[out / 4 + j] = roundF16(f32[x / 4 + j]);
    },
    roundBf16(out, x, n) {
      for (let j = 0; j < n; j++) f32[out / 4 + j] = bf16ToF32(f32ToBf16(f32[x / 4 + j]));
    },

    getRowF32: getRow(readF32, 4),
    getRowF16: getRow(readF16, 2),
    getRowBf16: getRow(readBf16, 2),
    getRowQ8_0(out, table, row, n) {
      const nb = n / Q8_0_BLOCK;
      for (let b = 0; b < nb; b++) {
        const block = table + (row * nb + b) * Q8_0_BLOCK_BYTES;
        const d = f16ToF32(u16[block / 2]);
        for (let j = 0; j < Q8_0_BLOCK; j++) f32[out / 4 + b * Q8_0_BLOCK + j] = d * i8[block + 2 + j];
      }
    },

    rmsnorm(out, x, w, n, eps) {
      // As ggml: f32 squares summed in float64, mean and scale in f32.
      let sum = 0;
      for (let j = 0; j < n; j++) sum += f(f32[x / 4 + j] * f32[x / 4 + j]);
      const mean = f(sum / n);
      const scale = f(1 / f(Math.sqrt(f(mean + f(eps)))));
      for (let j = 0; j < n; j++) f32[out / 4 + j] = f(f32[x / 4 + j] * scale) * f32[w / 4 + j];
    },
    ropeInterleaved(x, cos, sin, nHeads, Hd, nRot) {
      for (let h = 0; h < nHeads; h++) {
        const head = x / 4 + h * Hd;
        for (let i = 0; i < nRot / 2; i++) rotate(head + 2 * i, head + 2 * i + 1, f32[cos / 4 + i], f32[sin / 4 + i]);
      }
    },
    ropeHalves(x, cos, sin, nHeads, Hd, nRot) {
      for (let h = 0; h < nHeads; h++) {
        const head = x / 4 + h * Hd;
        for (let i = 0; i < nRot / 2; i++) rotate(head + i, head + i + nRot / 2, f32[cos / 4 + i], f32[sin / 4 + i]);
      }
    },
    swiglu(out, gate, up, n) {
      for (let j = 0; j < n; j++) {
        // e^-g in f32 as the kernel (and ggml) compute it: +inf below g = -88.7, so silu is -0 there.
        const g = f32[gate / 4 + j];
        f32[out / 4 + j] = (g / (1 + f(Math.exp(-g)))) * f32[up / 4 + j];
      }
    },
    add(out, a, b, n) {
      for (let j = 0; j < n; j++) f32[out / 4 + j] = f32[a / 4 + j] + f32[b / 4 + j];
    },

    attendF32(out, scores, q, k, v, S, Hd, scale) {
      attend(readF32, 4, out, scores, q, k, v, (s) => s, S, Hd, 1, scale);
    },
    softmaxF32(x, n) {
      softmax(x, n);
    },
    attentionF32(out, scores, q, k, v, S, Hd, g, scale) {
      attend(readF32, 4, out, scores, q, k, v, (s) => s, S, Hd, g, scale);
    },
    attentionBf16(out, scores, q, k, v, S, Hd, g, scale) {
      attend(readBf16, 2, out, scores, q, k, v, (s) => s, S, Hd, g, scale);
    },
    attendRowsF32(out, scores, q, k, v, idx, n, Hd, g, scale) {
      attend(readF32, 4, out, scores, q, k, v, (s) => i32[idx / 4 + s], n, Hd, g, scale);
    },
    attendRowsBf16(out, scores, q, k, v, idx, n, Hd, g, scale) {
      attend(readBf16, 2, out, scores, q, k, v, (s) => i32[idx / 4 + s], n, Hd, g, scale);
    },
    attentionCausalF32(out, scores, q, k, v, S0, T, Hd, g, qStride, scale) {
      attendCausal(readF32, 4, out, scores, q, k, v, S0, T, Hd, g, qStride, scale);
    },
    attentionCausalBf16(out, scores, q, k, v, S0, T, Hd, g, qStride, scale) {
      attendCausal(readBf16, 2, out, scores, q, k, v, S0, T, Hd, g, qStride, scale);
    },

    sparqScoresF32(out, q, kT, idx, scale, r, S, ldk, Hd, g) {
      sparqScores(readF32, out, q, kT, idx, scale, r, S, Hd, g, (i, s) => i * ldk + s);
    },
    sparqScoresBf16(out, q, kT, idx, scale, r, S, ldk, Hd, g) {
      sparqScores(readBf16, out, q, kT, idx, scale, r, S, Hd, g, (i, s) => i * ldk + s);
    },
    sparqScoresStridedF32(out, q, k, idx, scale, r, S, Hd, g) {
      sparqScores(readF32, out, q, k, idx, scale, r, S, Hd, g, (i, s) => s * Hd + i);
    },
    sparqScoresStridedBf16(out, q, k, idx, scale, r, S, Hd, g) {
      sparqScores(readBf16, out, q, k, idx, scale, r, S, Hd, g, (i, s) => s * Hd + i);
    },

    sparqAlpha(alpha, approx, idx, n, S, g) {
      // float64 exps and sums (the kernel's exps are approximate: tests compare with a tolerance).
      for (let h = 0; h < g; h++) {
        const row = approx / 4 + h * S;
        let max = -Infinity;
        for (let s = 0; s < S; s++) max = Math.max(max, f32[row + s]);
        let total = 0;
        for (let s = 0; s < S; s++) total += Math.exp(Math.max(f32[row + s] - max, -87));
        let selected = 0;
        for (let j = 0; j < n; j++) selected += Math.exp(Math.max(f32[row + i32[idx / 4 + j]] - max, -87));
        f32[alpha / 4 + h] = Math.min(1, selected / total);
      }
    },
    topK(outIdx, x, n, kk, scratch) {
      // The kk-th largest key T from a sorted copy of the keys (in scratch: 4n bytes), then the
      // kernel's emission rule: every key > T, and the first kk - #{key > T} keys == T.
      const keys = new Uint32Array(memory.buffer, scratch, n);
      for (let i = 0; i < n; i++) keys[i] = keyOf(u32[x / 4 + i]);
      keys.sort();
      const threshold = keys[n - kk];
      let need = kk;
      for (let i = 0; i < n; i++) if (keys[i] > threshold) need--;
      let o = 0;
      for (let i = 0; i < n; i++) {
        const key = keyOf(u32[x / 4 + i]);
        if (key > threshold || (key === threshold && need > 0)) {
          if (key === threshold) need--;
          i32[outIdx / 4 + o++] = i;
        }
      }
    },

    // From the bits (u32), so NaN payloads come out exactly as the kernel's.
    packBf16(out, x, n) {
      for (let i = 0; i < n; i++) u16[out / 2 + i] = f32BitsToBf16(u32[x / 4 + i]);
    },
    storeColumnF32(kT, x, n, ldk) {
      for (let i = 0; i < n; i++) u32[kT / 4 + i * ldk] = u32[x / 4 + i];
    },
    storeColumnBf16(kT, x, n, ldk) {
      for (let i = 0; i < n; i++) u16[kT / 2 + i * ldk] = f32BitsToBf16(u32[x / 4 + i]);
    },
  };
}
