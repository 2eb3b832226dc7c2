/**
 * The reference twin of the quantised-KV-cache kernels (assembly/kv-quant.ts): plain TypeScript, same
 * signatures, same results bit for bit; merged into createReferenceKernels.
 *
 * Written from the definitions in kernels.ts (KvQuantKernels) and ggml's C: each cache value is decoded
 * on its own (d·q, or (c − 8)·d: exact in f32), the score dots are ggml's vec_dot_q8_0_q8_0 /
 * vec_dot_q4_0_q8_0 (exact integer block sums, then the f32 steps reference-quants.ts documents), and
 * every f32 operation is one Math.fround. Unlike reference.ts's attention twins, which sum in float64 and
 * are compared with a tolerance, these restate the kernels' own f32 order so the tests can diff them bit
 * for bit: softmaxF32 (attention.ts: Cephes' exp in f32 as exp.ts computes it, its terms summed in
 * float64 in the kernel's lane order, then f32(1 / Σ)) and the V sum grouped in blocks of 4 rows as
 * attention.ts's accumulateRows4 groups it.
 * Pointers are byte offsets into `memory`.
 */
import { f16ToF32, f32ToF16, roundHalfEven } from "../memory/dtype.js";
import type { Ptr } from "../memory/arena.js";
import type { KvQuantKernels } from "./kernels.js";

const f = Math.fround;

type Format = "q8_0" | "q4_0";
const BLOCK_BYTES: Record<Format, number> = { q8_0: 34, q4_0: 18 };
const Q8_0_BYTES = 34;

// exp.ts's constants, as f32.
const LOG2E = f(1.44269504088896341);
const LN2_HI = f(0.693359375);
const LN2_LO = f(-2.1219444e-4);
const P = [1.98756915e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1].map(f);
const ROUNDER = 12582912; // 1.5 · 2^23
const ROUNDER_BITS = 0x4b400000;

const bitsF32 = new Float32Array(1);
const bitsI32 = new Int32Array(bitsF32.buffer);

/** e^x as exp.ts's expF32x4 computes it, operation for operation (Cephes' expf; see there). */
export function expF32(x: number): number {
  x = 89 < x ? 89 : x; // pmin(x, 89)
  x = x < -104 ? -104 : x; // pmax(x, -104)
  const shifted = f(f(x * LOG2E) + ROUNDER);
  const fn = f(shifted - ROUNDER);
  const r = f(f(x - f(fn * LN2_HI)) - f(fn * LN2_LO));
  let p = f(f(P[0] * r) + P[1]);
  for (let i = 2; i < P.length; i++) p = f(f(p * r) + P[i]);
  const er = f(f(f(p * f(r * r)) + r) + 1);
  bitsF32[0] = shifted;
  const n = bitsI32[0] - ROUNDER_BITS;
  const n1 = n >> 1;
  bitsI32[0] = (n1 + 127) << 23;
  const scale1 = bitsF32[0];
  bitsI32[0] = (n - n1 + 127) << 23;
  return f(f(er * scale1) * bitsF32[0]);
}

/** An int8 quantizer's rounding as the kernels store it: nearest-even, saturated to int8, NaN → 0. */
function toInt8(v: number): number {
  return Number.isNaN(v) ? 0 : Math.max(-128, Math.min(127, roundHalfEven(v)));
}

export function createReferenceKvQuantKernels(memory: WebAssembly.Memory): KvQuantKernels {
  const u8 = new Uint8Array(memory.buffer);
  const i8 = new Int8Array(memory.buffer);
  const f32 = new Float32Array(memory.buffer);
  const i32 = new Int32Array(memory.buffer);
  const view = new DataView(memory.buffer);
  const half = (p: Ptr) => f16ToF32(view.getUint16(p, true));

  // ---- formats ----

  /** The code of value e (0..31) of the q4_0 block at b: 0..15. */
  const code4 = (b: Ptr, e: number) => (e < 16 ? u8[b + 2 + e] & 15 : u8[b + 2 + e - 16] >> 4);

  /** Value i of the quantised row at `row`, dequantised (exact in f32). */
  function rowValue(format: Format, row: Ptr, i: number): number {
    const b = row + (i >> 5) * BLOCK_BYTES[format];
    const e = i & 31;
    return f((format === "q8_0" ? i8[b + 2 + e] : code4(b, e) - 8) * half(b));
  }

  /** q8_0 of the n floats at x into out, as quantizeQ8_0: d = max|x|/127 (f16), q = nearest-even(x·127/max|x|). */
  function quantizeQ8_0(out: Ptr, x: Ptr, n: number): void {
    for (let b = 0; b < n / 32; b++) {
      const xb = x / 4 + 32 * b,
        ob = out + Q8_0_BYTES * b;
      let amax = 0;
      for (let e = 0; e < 32; e++) amax = Math.max(amax, Math.abs(f32[xb + e]));
      const id = amax !== 0 ? f(127 / amax) : 0;
      view.setUint16(ob, f32ToF16(f(amax / 127)), true);
      for (let e = 0; e < 32; e++) i8[ob + 2 + e] = toInt8(f(f32[xb + e] * id));
    }
  }

  /**
   * The dot of the K row at w (nb blocks) with the q8_0 row xq, as matvecQ8_0 / matvecQ4_0: per block an
   * exact integer sum, then q8_0: sum += f32(sumi) · (d · dx); q4_0: sum += (f32(Σ (c − 8)·x) · d) · dx.
   */
  function dot(format: Format, xq: Ptr, w: Ptr, nb: number): number {
    let sum = 0;
    for (let b = 0; b < nb; b++) {
      const wb = w + b * BLOCK_BYTES[format],
        xb = xq + b * Q8_0_BYTES;
      let sumi = 0;
      for (let e = 0; e < 32; e++) sumi += (format === "q8_0" ? i8[wb + 2 + e] : code4(wb, e) - 8) * i8[xb + 2 + e];
      const term = format === "q8_0" ? f(sumi * f(half(wb) * half(xb))) : f(f(sumi * half(wb)) * half(xb));
      sum = f(sum + term);
    }
    return sum;
  }

  // ---- attention ----

  /**
   * softmaxF32 (attention.ts) of x (n) in place: max, e^(x − max) by expF32, the exps summed in float64
   * as the kernel's lanes do (terms 4m, 4m+1 and 4m+2, 4m+3 apart, then the tail in order), times f32(1/Σ).
   */
  function softmax(x: Ptr, n: number): void {
    const at = x / 4;
    let max = -Infinity;
    for (let s = 0; s < n; s++) max = Math.max(max, f32[at + s]);
    let lo0 = 0,
      lo1 = 0,
      hi0 = 0,
      hi1 = 0,
      s = 0;
    const exp = (s: number) => (f32[at + s] = expF32(f(f32[at + s] - max)));
    for (; s + 4 <= n; s += 4) {
      lo0 += exp(s);
      lo1 += exp(s + 1);
      hi0 += exp(s + 2);
      hi1 += exp(s + 3);
    }
    let sum = lo0 + hi0 + (lo1 + hi1);
    for (; s < n; s++) sum += exp(s);
    const inv = f(1 / sum);
    for (let s = 0; s < n; s++) f32[at + s] = f(f32[at + s] * inv);
  }

  /**
   * Attention of one head, qq its q8_0 blocks, over n rows of K, V (the s-th row attended is rowOf(s)):
   * out (Hd); p (n) holds the probabilities afterwards.
   */
  function attendHead(
    format: Format,
    out: Ptr,
    p: Ptr,
    qq: Ptr,
    k: Ptr,
    v: Ptr,
    rowOf: (s: number) => number,
    n: number,
    Hd: number,
    scale: number,
  ): void {
    const nb = Hd / 32,
      rowBytes = nb * BLOCK_BYTES[format],
      o = out / 4;
    // Step 1: scores = K qq * scale (the kernel's scale parameter is an f32).
    for (let s = 0; s < n; s++) f32[p / 4 + s] = f(dot(format, qq, k + rowOf(s) * rowBytes, nb) * f(scale));
    // Step 2: softmax in place.
    softmax(p, n);
    // Step 3: out = Σ_s p_s V[s], 4 rows at a time as (p0 v0 + p1 v1) + (p2 v2 + p3 v3), then 1 at a time.
    const V = (s: number, j: number) => rowValue(format, v + rowOf(s) * rowBytes, j);
    const prob = (s: number) => f32[p / 4 + s];
    for (let j = 0; j < Hd; j++) f32[o + j] = 0;
    let s = 0;
    for (; s + 4 <= n; s += 4) {
      for (let j = 0; j < Hd; j++) {
        const pair01 = f(f(V(s, j) * prob(s)) + f(V(s + 1, j) * prob(s + 1)));
        const pair23 = f(f(V(s + 2, j) * prob(s + 2)) + f(V(s + 3, j) * prob(s + 3)));
        f32[o + j] = f(f32[o + j] + f(pair01 + pair23));
      }
    }
    for (; s < n; s++) for (let j = 0; j < Hd; j++) f32[o + j] = f(f32[o + j] + f(V(s, j) * prob(s)));
  }

  /** attendHead for g heads: q, out (g, Hd); scores (g, n); qq (g, Hd/32 blocks) = q8_0(q) first. */
  function attend(
    format: Format,
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
    qq: Ptr,
  ): void {
    const qqBytes = (Hd / 32) * Q8_0_BYTES;
    quantizeQ8_0(qq, q, g * Hd);
    for (let h = 0; h < g; h++)
      attendHead(format, out + 4 * h * Hd, scores + 4 * h * n, qq + h * qqBytes, k, v, rowOf, n, Hd, scale);
  }

  /** Causal attention: query (t, h) at float t·qStride + h·Hd over rows 0 … S0 + t, qq slot t·g + h. */
  function attendCausal(
    format: Format,
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
    qq: Ptr,
  ): void {
    const qqBytes = (Hd / 32) * Q8_0_BYTES;
    for (let t = 0; t < T; t++) {
      for (let h = 0; h < g; h++) {
        const at = 4 * (t * qStride + h * Hd),
          p = scores + 4 * (t * g + h) * (S0 + T),
          qqth = qq + (t * g + h) * qqBytes;
        quantizeQ8_0(qqth, q + at, Hd);
        attendHead(format, out + at, p, qqth, k, v, (s) => s, S0 + t + 1, Hd, scale);
      }
    }
  }

  // ---- SparQ ----

  /**
   * SparQ's approximate scores as sparqScoresF32 computes them on dequantised keys: for s in [from, to),
   * out[h·ldo + s] = f32(acc) · scale[h], acc summed over idx in order; K's component i of position s is
   * key(i, s).
   */
  function sparqScores(
    out: Ptr,
    q: Ptr,
    idx: Ptr,
    scale: Ptr,
    r: number,
    from: number,
    to: number,
    ldo: number,
    Hd: number,
    g: number,
    key: (i: number, s: number) => number,
  ): void {
    for (let h = 0; h < g; h++) {
      for (let s = from; s < to; s++) {
        let acc = 0;
        for (let j = 0; j < r; j++) {
          const i = i32[idx / 4 + j];
          acc = f(acc + f(f32[q / 4 + h * Hd + i] * key(i, s)));
        }
        f32[out / 4 + h * ldo + s] = f(acc * f32[scale / 4 + h]);
      }
    }
  }

  /** Component i of position s of the d-major copy: codes of channel i from kT + i·iBytes, scales from dT. */
  function kTValue(format: Format, kT: Ptr, dT: Ptr, ldk: number, i: number, s: number): number {
    const d = half(dT + 2 * (i * (ldk / 32) + (s >> 5)));
    if (format === "q8_0") return f(i8[kT + i * ldk + s] * d);
    const byte = u8[kT + i * (ldk / 2) + 16 * (s >> 5) + (s & 15)];
    return f(((s & 31) < 16 ? (byte & 15) - 8 : (byte >> 4) - 8) * d);
  }

  const rowBytes = (format: Format, Hd: number) => (Hd / 32) * BLOCK_BYTES[format];

  return {
    quantizeQ4_0(out, x, n) {
      // ggml's quantize_row_q4_0_ref, x·id + 8.5 with one rounding (exact product, float64 sum).
      for (let b = 0; b < n / 32; b++) {
        const xb = x / 4 + 32 * b,
          ob = out + 18 * b;
        let amax = 0,
          max = 0;
        for (let e = 0; e < 32; e++) {
          if (amax < Math.abs(f32[xb + e])) {
            amax = Math.abs(f32[xb + e]);
            max = f32[xb + e];
          }
        }
        const d = f(max / -8);
        const id = d !== 0 ? f(1 / d) : 0;
        view.setUint16(ob, f32ToF16(d), true);
        const code = (v: number) => Math.min(15, Math.trunc(v * id + 8.5)) & 15;
        for (let e = 0; e < 16; e++) u8[ob + 2 + e] = code(f32[xb + e]) | (code(f32[xb + 16 + e]) << 4);
      }
    },

    attentionQ8_0(out, scores, q, k, v, S, Hd, g, scale, qq) {
      attend("q8_0", out, scores, q, k, v, (s) => s, S, Hd, g, scale, qq);
    },
    attentionQ4_0(out, scores, q, k, v, S, Hd, g, scale, qq) {
      attend("q4_0", out, scores, q, k, v, (s) => s, S, Hd, g, scale, qq);
    },
    attendRowsQ8_0(out, scores, q, k, v, idx, n, Hd, g, scale, qq) {
      attend("q8_0", out, scores, q, k, v, (s) => i32[idx / 4 + s], n, Hd, g, scale, qq);
    },
    attendRowsQ4_0(out, scores, q, k, v, idx, n, Hd, g, scale, qq) {
      attend("q4_0", out, scores, q, k, v, (s) => i32[idx / 4 + s], n, Hd, g, scale, qq);
    },
    attentionCausalQ8_0(out, scores, q, k, v, S0, T, Hd, g, qStride, scale, qq) {
      attendCausal("q8_0", out, scores, q, k, v, S0, T, Hd, g, qStride, scale, qq);
    },
    attentionCausalQ4_0(out, scores, q, k, v, S0, T, Hd, g, qStride, scale, qq) {
      attendCausal("q4_0", out, scores, q, k, v, S0, T, Hd, g, qStride, scale, qq);
    },

    sparqScoresQ8_0T(out, q, kT, dT, idx, scale, r, n, ldo, ldk, Hd, g) {
      sparqScores(out, q, idx, scale, r, 0, n, ldo, Hd, g, (i, s) => kTValue("q8_0", kT, dT, ldk, i, s));
    },
    sparqScoresQ4_0T(out, q, kT, dT, idx, scale, r, n, ldo, ldk, Hd, g) {
      sparqScores(out, q, idx, scale, r, 0, n, ldo, Hd, g, (i, s) => kTValue("q4_0", kT, dT, ldk, i, s));
    },
    sparqScoresStridedQ8_0(out, q, k, idx, scale, r, from, S, Hd, g) {
      const bytes = rowBytes("q8_0", Hd);
      sparqScores(out, q, idx, scale, r, from, S, S, Hd, g, (i, s) => rowValue("q8_0", k + s * bytes, i));
    },
    sparqScoresStridedQ4_0(out, q, k, idx, scale, r, from, S, Hd, g) {
      const bytes = rowBytes("q4_0", Hd);
      sparqScores(out, q, idx, scale, r, from, S, S, Hd, g, (i, s) => rowValue("q4_0", k + s * bytes, i));
    },
  };
}
