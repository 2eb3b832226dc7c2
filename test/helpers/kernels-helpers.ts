/**
 * Helpers for the kernel tests: a seeded PRNG, random weights in every dtype (with the awkward
 * values mixed in), a float64 naive matmul on decoded values, and tolerance / bit checks.
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
  const special = [0, -0, 65504, 65519.99, 65520, -65520, 1e-8, -3e-8, 2 ** -24, 2 ** -25, 3 * 2 ** -25, 2 ** -14 - 2 ** -25,
    1 + 2 ** -11, 1 + 3 * 2 ** -11, 1 + 2 ** -8, 1 + 3 * 2 ** -8, 3.4e38, Infinity, -Infinity, NaN, 1e-40, -1e-45];
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
export function expectWithin(actual: ArrayLike<number>, expected: ArrayLike<number>, bound: number | ArrayLike<number>, what: string) {
  const worst = worstError(actual, expected, bound);
  expect(worst.ratio, `${what}: element ${worst.index} is ${worst.actual}, expected ${worst.expected}`).toBeLessThanOrEqual(1);
}

/** Expects the same f32 bits in every element (any NaN matches any NaN). */
export function expectBitExact(actual: Float32Array, expected: Float32Array, what: string) {
  const i = firstBitDifference(actual, expected);
  expect(i, `${what}: element ${i} is ${actual[i]}, expected ${expected[i]}`).toBe(-1);
}
