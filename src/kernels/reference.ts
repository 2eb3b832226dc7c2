/**
 * The reference twin of the WASM kernels: plain TypeScript, same signatures, same semantics.
 *
 * Clarity over speed. Dot products and sums accumulate in float64 in index order (so they are
 * at least as accurate as the SIMD kernels; tests compare with a tolerance). Where the WASM
 * result is defined bit for bit (f16/bf16 rounding, getRow, q8_0 quantization and q8_0 dots,
 * RoPE, add) this file computes the same f32 operations, with Math.fround after each one.
 * Pointers are byte offsets into `memory`; views are created once (the memory never grows).
 */
import type { Ptr } from "../memory/arena.js";
import { Q8_0_BLOCK, Q8_0_BLOCK_BYTES, bf16ToF32, f16ToF32, f32ToBf16, f32ToF16, roundF16, roundHalfEven } from "../memory/dtype.js";
import type { Kernels } from "./kernels.js";

const f = Math.fround;

export function createReferenceKernels(memory: WebAssembly.Memory): Kernels {
  const f32 = new Float32Array(memory.buffer);
  const u16 = new Uint16Array(memory.buffer);
  const i8 = new Int8Array(memory.buffer);

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
    return (out: Ptr, x: Ptr, w: Ptr, n: number, d: number, t: number): void => {
      for (let i = 0; i < t; i++) {
        for (let r = 0; r < d; r++) f32[out / 4 + i * d + r] = dot(read, bytes, x + i * n * 4, w, r, n);
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
    const x0 = f32[i0], x1 = f32[i1];
    f32[i0] = f(f(x0 * c) - f(x1 * s));
    f32[i1] = f(f(x0 * s) + f(x1 * c));
  }

  return {
    matvecF32: matvec(readF32, 4),
    matvecF16: matvec(readF16, 2),
    matvecBf16: matvec(readBf16, 2),
    matvecQ8_0(out, xq, w, n, d) {
      for (let r = 0; r < d; r++) f32[out / 4 + r] = dotQ8_0(xq, w, r, n);
    },

    matmulF32: matmul(readF32, 4),
    matmulF16: matmul(readF16, 2),
    matmulBf16: matmul(readBf16, 2),
    matmulQ8_0(out, xq, w, n, d, t) {
      const xRowBytes = (n / Q8_0_BLOCK) * Q8_0_BLOCK_BYTES;
      for (let i = 0; i < t; i++) {
        for (let r = 0; r < d; r++) f32[out / 4 + i * d + r] = dotQ8_0(xq + i * xRowBytes, w, r, n);
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
      // Step 1: scores = K q * scale.
      for (let s = 0; s < S; s++) f32[scores / 4 + s] = dot(readF32, 4, q, k, s, Hd) * scale;
      // Step 2: softmax in place, as ggml: f32 exps summed in float64, scaled by f32(1 / Σ).
      let max = -Infinity;
      for (let s = 0; s < S; s++) max = Math.max(max, f32[scores / 4 + s]);
      let sum = 0;
      for (let s = 0; s < S; s++) {
        const e = f(Math.exp(f32[scores / 4 + s] - max));
        f32[scores / 4 + s] = e;
        sum += e;
      }
      for (let s = 0; s < S; s++) f32[scores / 4 + s] *= f(1 / sum);
      // Step 3: out = Σ_s p_s V[s].
      for (let j = 0; j < Hd; j++) {
        let acc = 0;
        for (let s = 0; s < S; s++) acc += f32[scores / 4 + s] * f32[v / 4 + s * Hd + j];
        f32[out / 4 + j] = acc;
      }
    },
  };
}
