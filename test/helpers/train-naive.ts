/**
 * Float64 naive forwards of the training layers, for test/kernels-train.test.ts: the values the kernels
 * are compared with, and the functions whose central finite differences check every backward kernel.
 * Each takes plain arrays (any numbers, not only f32) so a test can perturb an input by ±h·Δ.
 */
import { expect } from "vitest";
import { gaussian } from "./kernels-helpers.js";

/** Y (t, d) = X (t, n) @ W (d, n)^T. */
export function naiveLinear(x: ArrayLike<number>, w: ArrayLike<number>, n: number, d: number, t: number): Float64Array {
  const y = new Float64Array(t * d);
  for (let i = 0; i < t; i++) {
    for (let r = 0; r < d; r++) {
      let sum = 0;
      for (let j = 0; j < n; j++) sum += x[i * n + j] * w[r * n + j];
      y[i * d + r] = sum;
    }
  }
  return y;
}

/** out (t, n) = x / sqrt(mean(x²) + eps) · w per row, and rstd (t). */
export function naiveRmsnorm(x: ArrayLike<number>, w: ArrayLike<number>, n: number, t: number, eps: number) {
  const out = new Float64Array(t * n),
    rstd = new Float64Array(t);
  for (let i = 0; i < t; i++) {
    let sum = 0;
    for (let j = 0; j < n; j++) sum += x[i * n + j] ** 2;
    rstd[i] = 1 / Math.sqrt(sum / n + eps);
    for (let j = 0; j < n; j++) out[i * n + j] = x[i * n + j] * rstd[i] * w[j];
  }
  return { out, rstd };
}

/** RoPE of x (nHeads, Hd) by angles with cos, sin (nRot/2): pairs (2i, 2i+1) or (i, i + nRot/2). */
export function naiveRope(
  x: ArrayLike<number>,
  cos: ArrayLike<number>,
  sin: ArrayLike<number>,
  nHeads: number,
  Hd: number,
  nRot: number,
  halves: boolean,
) {
  const out = Float64Array.from(x);
  for (let h = 0; h < nHeads; h++) {
    for (let i = 0; i < nRot / 2; i++) {
      const a = h * Hd + (halves ? i : 2 * i),
        b = h * Hd + (halves ? i + nRot / 2 : 2 * i + 1);
      out[a] = x[a] * cos[i] - x[b] * sin[i];
      out[b] = x[a] * sin[i] + x[b] * cos[i];
    }
  }
  return out;
}

/** silu(gate) · up. */
export const naiveSwiglu = (gate: ArrayLike<number>, up: ArrayLike<number>) =>
  Float64Array.from(gate, (g, j) => (g / (1 + Math.exp(-g))) * up[j]);

/** out (t, n) = rows tokens[i] of table (rows, n). */
export function naiveEmbedding(table: ArrayLike<number>, tokens: ArrayLike<number>, n: number): Float64Array {
  const out = new Float64Array(tokens.length * n);
  for (let i = 0; i < tokens.length; i++) for (let j = 0; j < n; j++) out[i * n + j] = table[tokens[i] * n + j];
  return out;
}

/**
 * The layout of one KV head's attention inside wider buffers: q, out (T, qStride) with the g heads from
 * float qAt of each row, K, V (T, kvStride) from float kvAt of each row.
 */
export interface AttentionLayout {
  T: number;
  Hd: number;
  g: number;
  qStride: number;
  kvStride: number;
  qAt: number;
  kvAt: number;
  scale: number;
}

/**
 * Causal attention in float64: out (T, qStride) (only the group's slots non-zero) and P (g, T, T).
 * Σ|p v| per out element too (the size of its terms, for tolerances).
 */
export function naiveCausalAttention(
  q: ArrayLike<number>,
  k: ArrayLike<number>,
  v: ArrayLike<number>,
  L: AttentionLayout,
) {
  const { T, Hd, g, qStride, kvStride, qAt, kvAt, scale } = L;
  const out = new Float64Array(T * qStride),
    magnitude = new Float64Array(T * qStride),
    p = new Float64Array(g * T * T);
  for (let h = 0; h < g; h++) {
    for (let t = 0; t < T; t++) {
      const qt = t * qStride + qAt + h * Hd,
        row = (h * T + t) * T;
      let max = -Infinity;
      for (let u = 0; u <= t; u++) {
        let s = 0;
        for (let j = 0; j < Hd; j++) s += q[qt + j] * k[u * kvStride + kvAt + j];
        p[row + u] = s * scale;
        max = Math.max(max, p[row + u]);
      }
      let sum = 0;
      for (let u = 0; u <= t; u++) sum += p[row + u] = Math.exp(p[row + u] - max);
      for (let u = 0; u <= t; u++) p[row + u] /= sum;
      for (let j = 0; j < Hd; j++) {
        let acc = 0,
          abs = 0;
        for (let u = 0; u <= t; u++) {
          acc += p[row + u] * v[u * kvStride + kvAt + j];
          abs += Math.abs(p[row + u] * v[u * kvStride + kvAt + j]);
        }
        out[qt + j] = acc;
        magnitude[qt + j] = abs;
      }
    }
  }
  return { out, magnitude, p };
}

/** Per row: logsumexp(logits) − logits[target] (0 for a negative target), in float64. */
export function naiveCrossEntropy(logits: ArrayLike<number>, targets: ArrayLike<number>, V: number): Float64Array {
  const losses = new Float64Array(targets.length);
  for (let i = 0; i < targets.length; i++) {
    if (targets[i] < 0) continue;
    let max = -Infinity;
    for (let j = 0; j < V; j++) max = Math.max(max, logits[i * V + j]);
    let sum = 0;
    for (let j = 0; j < V; j++) sum += Math.exp(logits[i * V + j] - max);
    losses[i] = Math.log(sum) + max - logits[i * V + targets[i]];
  }
  return losses;
}

/** Σ r·y: a random scalar projection of a layer's output, the "loss" whose gradient dOut = r. */
export function project(r: ArrayLike<number>, y: ArrayLike<number>): number {
  let sum = 0;
  for (let i = 0; i < y.length; i++) sum += r[i] * y[i];
  return sum;
}

/**
 * Checks a backward kernel's gradient `grad` of loss at x against central finite differences along a
 * random direction Δ: (loss(x + hΔ) − loss(x − hΔ)) / 2h within tol·Σ|size·Δ| of Σ grad·Δ, size = |grad|
 * unless `terms` gives each element's size before cancellation (a gradient that is a small difference of
 * large f32 terms is only as accurate as the terms). `mask` restricts Δ to the elements the loss reads.
 */
export function expectFiniteDifference(
  loss: (x: Float64Array) => number,
  x: ArrayLike<number>,
  grad: ArrayLike<number>,
  random: () => number,
  tol: number,
  what: string,
  options: { h?: number; mask?: (i: number) => boolean; terms?: ArrayLike<number> } = {},
): void {
  const { h = 1e-3, mask, terms = grad } = options;
  const delta = Float64Array.from(gaussian(random, x.length), (v, i) => (mask === undefined || mask(i) ? v : 0));
  const plus = Float64Array.from(x, (v, i) => v + h * delta[i]);
  const minus = Float64Array.from(x, (v, i) => v - h * delta[i]);
  const numeric = (loss(plus) - loss(minus)) / (2 * h);
  let analytic = 0,
    magnitude = 0;
  for (let i = 0; i < x.length; i++) {
    analytic += grad[i] * delta[i];
    magnitude += Math.abs(terms[i] * delta[i]);
  }
  const err = Math.abs(numeric - analytic);
  expect(
    err,
    `${what}: Σ grad·Δ = ${analytic}, finite difference ${numeric} (Σ|size·Δ| = ${magnitude})`,
  ).toBeLessThanOrEqual(tol * magnitude);
}
