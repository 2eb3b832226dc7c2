/**
 * Helpers for the kernel tests: a seeded PRNG, random weights in every dtype (with the awkward
 * values mixed in), a float64 naive matmul on decoded values, tolerance / bit checks, and the
 * float64 naive attention, SparQ scores and top-k the attention kernels are checked against.
 */
import { expect } from "vitest";
import { type DType, decode, encode } from "../../src/memory/dtype.js";

/** mulberry32: a tiny seeded PRNG, uniform in [0, 1). */
export function makeRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Standard normal samples (Box-Muller) from a uniform PRNG. */
export function gaussian(random: () => number, n: number, std = 1): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const u = 1 - random();
    out[i] = std * Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * random());
  }
  return out;
}

/**
 * Weight-like values: N(0, 0.05), with ~3% tiny values (f16 subnormals), ~1% exact ±0 and
 * ~1% values 100x larger, so every conversion path runs.
 */
export function weights(random: () => number, n: number): Float32Array {
  const out = gaussian(random, n, 0.05);
  for (let i = 0; i < n; i++) {
    const u = random();
    if (u < 0.03) out[i] *= 1e-4;
    else if (u < 0.04) out[i] = u < 0.035 ? 0 : -0;
    else if (u < 0.05) out[i] *= 100;
  }
  return out;
}

/** Random values plus the awkward ones: ties, the f16 subnormal range, overflow, ±0, ±inf, NaN. */
export function awkwardFloats(n: number, seed: number): Float32Array {
  const random = makeRandom(seed);
  const special = [
    0,
    -0,
    65504,
    65519.99,
    65520,
    -65520,
    1e-8,
    -3e-8,
    2 ** -24,
    2 ** -25,
    3 * 2 ** -25,
    2 ** -14 - 2 ** -25,
    1 + 2 ** -11,
    1 + 3 * 2 ** -11,
    1 + 2 ** -8,
    1 + 3 * 2 ** -8,
    3.4e38,
    Infinity,
    -Infinity,
    NaN,
    1e-40,
    -1e-45,
  ];
  const values = gaussian(random, n, 10);
  for (let i = 0; i < n; i++) {
    const u = random();
    if (u < 0.3) values[i] = special[Math.floor(random() * special.length)];
    else if (u < 0.5) values[i] *= 1e-6;
  }
  return values;
}

/** Values as the kernel's x for weights of `dtype` sees them (f16 / bf16 rounded). */
export function activationsFor(dtype: DType, values: Float32Array): Float32Array {
  // bf16 weights meet bf16-rounded activations (as in the model); f16 and f32 weights meet plain f32.
  if (dtype === "bf16") return decode(dtype, encode(dtype, values), values.length);
  return values;
}

/** Float64 X (t, n) @ W (d, n)^T from decoded values: the answer and Σ|w x| per output. */
export function naiveMatmul(x: ArrayLike<number>, w: ArrayLike<number>, n: number, d: number, t: number) {
  const value = new Float64Array(t * d);
  const magnitude = new Float64Array(t * d);
  for (let i = 0; i < t; i++) {
    for (let r = 0; r < d; r++) {
      let sum = 0;
      let abs = 0;
      for (let j = 0; j < n; j++) {
        const term = w[r * n + j] * x[i * n + j];
        sum += term;
        abs += Math.abs(term);
      }
      value[i * d + r] = sum;
      magnitude[i * d + r] = abs;
    }
  }
  return { value, magnitude };
}

/**
 * The largest |actual - expected| / bound over all elements (≤ 1 passes), with where it was.
 * bound may be one number or one per element.
 */
export function worstError(
  actual: ArrayLike<number>,
  expected: ArrayLike<number>,
  bound: number | ArrayLike<number>,
): { ratio: number; index: number; actual: number; expected: number } {
  let worst = { ratio: 0, index: -1, actual: 0, expected: 0 };
  for (let i = 0; i < expected.length; i++) {
    const limit = typeof bound === "number" ? bound : bound[i];
    const err = Math.abs(actual[i] - expected[i]);
    const ratio = err === 0 ? 0 : err / limit;
    if (!(ratio <= worst.ratio)) worst = { ratio, index: i, actual: actual[i], expected: expected[i] };
  }
  return worst;
}

/** Index of the first element whose f32 bits differ (NaN payloads aside), or -1. */
export function firstBitDifference(a: Float32Array, b: Float32Array): number {
  const ua = new Uint32Array(a.buffer, a.byteOffset, a.length);
  const ub = new Uint32Array(b.buffer, b.byteOffset, b.length);
  for (let i = 0; i < a.length; i++) {
    if (ua[i] !== ub[i] && !(Number.isNaN(a[i]) && Number.isNaN(b[i]))) return i;
  }
  return -1;
}

/** Expects actual within bound (per element or one number) of expected; reports the worst element. */
export function expectWithin(
  actual: ArrayLike<number>,
  expected: ArrayLike<number>,
  bound: number | ArrayLike<number>,
  what: string,
) {
  const worst = worstError(actual, expected, bound);
  expect(
    worst.ratio,
    `${what}: element ${worst.index} is ${worst.actual}, expected ${worst.expected}`,
  ).toBeLessThanOrEqual(1);
}

/** Expects the same f32 bits in every element (any NaN matches any NaN). */
export function expectBitExact(actual: Float32Array, expected: Float32Array, what: string) {
  const i = firstBitDifference(actual, expected);
  expect(i, `${what}: element ${i} is ${actual[i]}, expected ${expected[i]}`).toBe(-1);
}

// ---- attention kernels (test/kernels-attention.test.ts) ----

export const range = (n: number) => Array.from({ length: n }, (_, i) => i);

/**
 * Float64 attention of g heads (q (g, Hd)) over rows `rows` of K, V (S, Hd), in that order: out (g, Hd),
 * p (g, n) and bounds for f32 kernels. δ = 2e-7·√Hd·max_s Σ_j|q_j k_sj|·scale (≈ 3.4·2⁻²⁴·√Hd times the
 * largest Σ|terms|) bounds the f32 score error; an error in the scores is a relative error in p, twice
 * over (the term and the sum): p within (1e-5 + 2δ)·p, out within (1e-5 + 2δ)·Σ p|v|.
 */
export function naiveAttention(
  q: Float32Array,
  k: Float32Array,
  v: Float32Array,
  rows: number[],
  Hd: number,
  g: number,
  scale: number,
) {
  const n = rows.length;
  const out = new Float64Array(g * Hd),
    outBound = new Float64Array(g * Hd);
  const p = new Float64Array(g * n),
    pBound = new Float64Array(g * n);
  for (let h = 0; h < g; h++) {
    const scores = rows.map((row) => {
      let dot = 0,
        abs = 0;
      for (let j = 0; j < Hd; j++) {
        dot += q[h * Hd + j] * k[row * Hd + j];
        abs += Math.abs(q[h * Hd + j] * k[row * Hd + j]);
      }
      return { value: dot * scale, abs: abs * scale };
    });
    const max = Math.max(...scores.map((s) => s.value));
    const worstScoreError = 2e-7 * Math.sqrt(Hd) * Math.max(...scores.map((s) => s.abs));
    const e = scores.map((s) => Math.exp(s.value - max));
    const sum = e.reduce((a, b) => a + b, 0);
    for (let s = 0; s < n; s++) {
      p[h * n + s] = e[s] / sum;
      pBound[h * n + s] = (1e-5 + 2 * worstScoreError) * p[h * n + s];
    }
    for (let j = 0; j < Hd; j++) {
      let acc = 0,
        abs = 0;
      for (let s = 0; s < n; s++) {
        acc += p[h * n + s] * v[rows[s] * Hd + j];
        abs += p[h * n + s] * Math.abs(v[rows[s] * Hd + j]);
      }
      out[h * Hd + j] = acc;
      outBound[h * Hd + j] = (1e-5 + 2 * worstScoreError) * abs;
    }
  }
  return { out, outBound, p, pBound };
}

/** n row indices into S rows: distinct and ascending (as SparQ's top-k gives them), or any order with repeats. */
export function rowIndices(random: () => number, S: number, n: number, order: "ascending" | "any"): number[] {
  if (order === "any") return Array.from({ length: n }, () => Math.floor(random() * S));
  const all = range(S);
  for (let i = 0; i < n; i++) {
    const j = i + Math.floor(random() * (S - i));
    [all[i], all[j]] = [all[j], all[i]];
  }
  return all.slice(0, n).sort((a, b) => a - b);
}

/** Float64 sHat (g, S) and the bound (r + 2)·2⁻²⁴·Σ|q k|·scale of an f32 sum of r products, then a scale. */
export function naiveSparqScores(
  q: Float32Array,
  k: Float32Array,
  idx: number[],
  scale: Float32Array,
  S: number,
  Hd: number,
  g: number,
) {
  const value = new Float64Array(g * S),
    bound = new Float64Array(g * S);
  for (let h = 0; h < g; h++) {
    for (let s = 0; s < S; s++) {
      let acc = 0,
        abs = 0;
      for (const i of idx) {
        acc += q[h * Hd + i] * k[s * Hd + i];
        abs += Math.abs(q[h * Hd + i] * k[s * Hd + i]);
      }
      value[h * S + s] = acc * scale[h];
      bound[h * S + s] = (idx.length + 2) * 2 ** -24 * abs * scale[h];
    }
  }
  return { value, bound };
}

/**
 * The naive top-k: indices sorted by value descending (-0 below +0), ties by index, the first kk
 * of them in ascending order. `order` is that sort, computed once per x.
 */
export function naiveOrder(x: Float32Array): number[] {
  const rank = (v: number) => (Object.is(v, -0) ? -1e-300 : v); // -0 sits between -2⁻¹⁴⁹ and +0
  return range(x.length).sort((a, b) => rank(x[b]) - rank(x[a]) || a - b);
}
export const naiveTopK = (order: number[], kk: number) => order.slice(0, kk).sort((a, b) => a - b);

/** Index of the first byte where a and b differ, or -1. */
export function firstByteDifference(a: Uint8Array, b: Uint8Array): number {
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return i;
  return -1;
}
