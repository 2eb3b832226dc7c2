/**
 * SparQ Attention — Ribar et al., "SparQ Attention: Bandwidth-Efficient LLM Inference", ICML 2024,
 * arXiv 2312.04985. Spec: shared/specs/sparq.md.
 *
 * At each decode step, per KV head: pick the r largest |q| components, approximate every position's score
 * from those r columns of K, fetch only the top-k rows of K and V (plus a local window and the current
 * token), attend exactly over them, and give the mass the approximation says was left out (1 − α) to the
 * mean value. Reads S·r + 2·k·Hd elements instead of 2·S·Hd. Prefill is dense; nothing is evicted.
 *
 * k tracks the growing context: with `compression: c`, r = Hd/c is fixed and k = S/(2c) is recomputed at
 * every step from the S positions attended (the authors' GPU port), both floored (minR, minK) so short
 * contexts fall back to dense (k + 1 ≥ S selects everything, which is dense attention exactly).
 */
import { UsageError } from "../errors.js";
import { attendDense, denseReadBytes } from "./dense.js";
import { newTraffic, type AttentionContext, type AttentionMethod, type SparqSpec } from "./method.js";

/** r and k for a step attending S positions. */
export interface SparqBudget {
  r: number;
  k: number;
  l: number;
}

export function sparqBudget(spec: SparqSpec, headDim: number, S: number): SparqBudget {
  const c = spec.compression;
  const minR = spec.minR ?? Math.min(headDim, 4);
  const minK = spec.minK ?? 64;
  const r = Math.min(headDim, spec.r ?? Math.max(minR, Math.round(headDim / c!)));
  const k = spec.k ?? Math.max(minK, Math.round(S / (2 * c!)));
  const l = Math.min(k, spec.localWindow ?? Math.floor(k / 4));
  return { r, k, l };
}

/** Checks the options once, at session creation. */
export function checkSparqSpec(spec: SparqSpec, headDim: number): void {
  const positiveInt = (v: number | undefined, what: string) => {
    if (v !== undefined && (!Number.isInteger(v) || v < 1)) throw new UsageError(`sparq ${what} must be a positive integer, got ${v}`);
  };
  if (spec.compression === undefined && (spec.r === undefined || spec.k === undefined)) {
    throw new UsageError("sparq needs a compression ratio (e.g. 8) or both r and k");
  }
  if (spec.compression !== undefined && !(spec.compression >= 1)) {
    throw new UsageError(`sparq compression must be a number ≥ 1, got ${spec.compression}`);
  }
  positiveInt(spec.r, "r");
  positiveInt(spec.k, "k");
  positiveInt(spec.minK, "minimum k");
  positiveInt(spec.minR, "minimum r");
  if (spec.r !== undefined && spec.r > headDim) throw new UsageError(`sparq r = ${spec.r} exceeds the head dimension ${headDim}`);
  if (spec.localWindow !== undefined && (!Number.isInteger(spec.localWindow) || spec.localWindow < 0)) {
    throw new UsageError(`sparq local window must be an integer ≥ 0, got ${spec.localWindow}`);
  }
}

export function createSparq(ctx: AttentionContext, spec: SparqSpec): AttentionMethod {
  checkSparqSpec(spec, ctx.headDim);
  const traffic = newTraffic();
  const { kernels: kern, arena, cache, nHeads: H, nKvHeads: G, headDim: Hd, scale, scratch } = ctx;
  const g = H / G;
  const reallocation = spec.reallocation ?? g === 1;
  const doubleLayout = (spec.layout ?? "double") === "double";
  const byProbabilities = spec.groupRanking === "probabilities";
  const bf16 = cache.layout.dtype === "bf16";
  const b = cache.bytesPerElement;
  const f32 = arena.f32;
  const alpha = new Float64Array(g);

  /** Steps 1–8 for KV head kv: q, out (g, Hd) of its query heads. */
  function attendHead(slot: number, kv: number, q: number, out: number, S: number, { r, k, l }: SparqBudget): void {
    const C = cache.capacity;
    const q4 = q >> 2;
    // Step 1: i1 = the r largest components of |q|, summed over the group's query heads (one i1 per KV head).
    const absQ = scratch.absQ >> 2;
    for (let i = 0; i < Hd; i++) {
      let sum = 0;
      for (let h = 0; h < g; h++) sum += Math.abs(f32[q4 + h * Hd + i]);
      f32[absQ + i] = sum;
    }
    kern.topK(scratch.components, scratch.absQ, Hd, r, scratch.topK);

    // Step 2: τ = sqrt(Hd · ‖q[i1]‖₁ / ‖q‖₁) per query head; the kernel multiplies by 1/τ.
    const i1 = arena.i32.subarray(scratch.components >> 2, (scratch.components >> 2) + r);
    for (let h = 0; h < g; h++) {
      let covered = 0;
      let total = 0;
      for (let i = 0; i < Hd; i++) total += Math.abs(f32[q4 + h * Hd + i]);
      for (let j = 0; j < r; j++) covered += Math.abs(f32[q4 + h * Hd + i1[j]]);
      const tau = Math.sqrt((Hd * covered) / total);
      f32[(scratch.headScale >> 2) + h] = total > 0 ? 1 / tau : 0;
    }

    // Step 3: approximate logits (g, S) = q[i1] · K[:, i1]ᵀ / τ, reading r columns of K.
    if (doubleLayout) {
      const scores = bf16 ? kern.sparqScoresBf16 : kern.sparqScoresF32;
      scores(scratch.approx, q, cache.keysT(slot, kv), scratch.components, scratch.headScale, r, S, C, Hd, g);
    } else {
      const scores = bf16 ? kern.sparqScoresStridedBf16 : kern.sparqScoresStridedF32;
      scores(scratch.approx, q, cache.keys(slot, kv), scratch.components, scratch.headScale, r, S, Hd, g);
    }

    // Steps 4–5: rank positions by the group's summed logits (the authors' harness; identical to the
    // paper's for MHA) or, optionally, summed probabilities; force the current token and the l most
    // recent positions; i2 = the top k + 1.
    const approx = scratch.approx >> 2;
    if (byProbabilities) for (let h = 0; h < g; h++) kern.softmaxF32(scratch.approx + 4 * h * S, S);
    const rank = scratch.rank >> 2;
    f32.copyWithin(rank, approx, approx + S);
    for (let h = 1; h < g; h++) kern.add(scratch.rank, scratch.rank, scratch.approx + 4 * h * S, S);
    f32.fill(Infinity, rank + S - 1 - l, rank + S);
    kern.topK(scratch.index, scratch.rank, S, k + 1, scratch.topK);

    // Step 6: α = Σ ŝ over the selection, per query head, ŝ = softmax of the approximate logits: the
    // normaliser needs all S exps, the numerator only the k + 1 selected (exps in float64 here).
    const i2 = scratch.index >> 2;
    const stats = scratch.stats >> 2;
    for (let h = 0; h < g; h++) {
      const row = approx + h * S;
      let a = 0;
      if (byProbabilities) {
        for (let j = 0; j <= k; j++) a += f32[row + arena.i32[i2 + j]];
      } else {
        kern.expSumF32(scratch.stats, scratch.approx + 4 * h * S, S);
        const max = f32[stats];
        for (let j = 0; j <= k; j++) a += Math.exp(f32[row + arena.i32[i2 + j]] - max);
        a /= f32[stats + 1];
      }
      alpha[h] = Math.min(1, a);
    }
    // Step 7: exact attention over the k + 1 selected rows only.
    const attendRows = bf16 ? kern.attendRowsBf16 : kern.attendRowsF32;
    attendRows(out, scratch.scores, q, cache.keys(slot, kv), cache.values(slot, kv), scratch.index, k + 1, Hd, g, scale);

    // Step 8: mean-value reallocation, y = α·y + (1 − α)·v̄.
    if (reallocation) {
      const vMean = cache.valueMean(slot, kv) >> 2;
      for (let h = 0; h < g; h++) {
        const a = Math.fround(alpha[h]);
        const rest = Math.fround(1 - a);
        const o = (out >> 2) + h * Hd;
        for (let i = 0; i < Hd; i++) f32[o + i] = Math.fround(Math.fround(a * f32[o + i]) + Math.fround(rest * f32[vMean + i]));
      }
    }
  }

  return {
    name: "sparq",
    traffic,
    prefill(slot, q, out, T) {
      attendDense(ctx, slot, q, out, T);
    },
    decode(slot, q, out) {
      const S = cache.span(0);
      const budget = sparqBudget(spec, Hd, S);
      traffic.denseRead += denseReadBytes(ctx, S);
      if (budget.k + 1 >= S) {
        // Everything would be selected: α = 1 and the output is dense attention, so compute that.
        attendDense(ctx, slot, q, out, 1);
        traffic.read += denseReadBytes(ctx, S);
        return;
      }
      for (let kv = 0; kv < G; kv++) attendHead(slot, kv, q + 4 * kv * g * Hd, out + 4 * kv * g * Hd, S, budget);
      // Spec transfer: S·r (columns) + 2·k·Hd (rows; the current token is free) + Hd (v̄) per KV head.
      traffic.read += G * (S * budget.r * b + 2 * budget.k * Hd * b + (reallocation ? 4 * Hd : 0));
    },
    endStep() {},
    beforePrefill() {},
    afterPrefill() {},
  };
}
