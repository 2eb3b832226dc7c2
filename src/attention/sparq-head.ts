/**
 * SparQ's steps 1–8 for one KV head and the g query heads that share it, as a job (threads/jobs.ts): a
 * function of a struct of plain numbers (pointers, sizes, flags) over a kernels instance and views of the
 * memory, so the same code runs on the main thread and in a kernel worker, each thread with its own
 * scratch. See sparq.ts for the method.
 */
import type { KernelEnv } from "../threads/env.js";
import { defineJob, type JobArgs } from "../threads/jobs.js";

export const SPARQ_BF16 = 1;
export const SPARQ_DOUBLE = 2;
export const SPARQ_BY_PROBABILITIES = 4;
export const SPARQ_REALLOCATION = 8;
/** K, V in q8_0 / q4_0 blocks; a d-major copy quantised per channel in groups of 32 positions. */
export const SPARQ_Q8_0 = 16;
export const SPARQ_Q4_0 = 32;

/**
 * Steps 1–8 for one KV head. q, out (g, Hd); keys = the d-major copy kT (Hd, C) when flags has
 * SPARQ_DOUBLE, else the S-major K (S, Hd) read with a strided gather; K, V (S, Hd); vMean (Hd) f32.
 * Quantised (SPARQ_Q8_0, SPARQ_Q4_0): kT holds codes (Hd, C) with their scales at keyScales (Hd, C/32),
 * C then the Kt row length (a multiple of 32), and positions past the last whole group of 32 are scored
 * from the K rows. The remaining pointers are this thread's scratch (AttentionScratch fields of the same
 * names).
 */
/** The job's struct: what sparqHead reads, by name. */
const FIELDS = [
  "q",
  "out",
  "keys",
  "K",
  "V",
  "vMean",
  "keyScales",
  "C",
  "S",
  "r",
  "k",
  "l",
  "g",
  "Hd",
  "scale",
  "flags",
  "absQ",
  "components",
  "topK",
  "headScale",
  "approx",
  "rank",
  "index",
  "alpha",
  "scores",
  "qq",
] as const;

export type SparqHeadArgs = JobArgs<(typeof FIELDS)[number]>;

export const SPARQ_HEAD = defineJob("sparqHead", import.meta.url, FIELDS, sparqHead);

export function sparqHead(env: KernelEnv, args: SparqHeadArgs): void {
  const { kernels: kern, f32, i32 } = env;
  const { q, out, keys, K, V, vMean, keyScales, C, S, r, k, l, g, Hd, scale, flags } = args;
  const { absQ, components, topK, headScale, approx, rank, index, alpha, scores, qq } = args;
  const bf16 = (flags & SPARQ_BF16) !== 0;
  const q8 = (flags & SPARQ_Q8_0) !== 0;
  const q4bit = (flags & SPARQ_Q4_0) !== 0;
  const q4 = q >> 2;
  // Step 1: i1 = the r largest components of |q|, summed over the group's query heads (one i1 per KV head).
  for (let i = 0; i < Hd; i++) {
    let sum = 0;
    for (let h = 0; h < g; h++) sum += Math.abs(f32[q4 + h * Hd + i]);
    f32[(absQ >> 2) + i] = sum;
  }
  kern.topK(components, absQ, Hd, r, topK);

  // Step 2: τ = sqrt(Hd · ‖q[i1]‖₁ / ‖q‖₁) per query head; the kernel multiplies by 1/τ.
  const i1 = components >> 2;
  for (let h = 0; h < g; h++) {
    let covered = 0;
    let total = 0;
    for (let i = 0; i < Hd; i++) total += Math.abs(f32[q4 + h * Hd + i]);
    for (let j = 0; j < r; j++) covered += Math.abs(f32[q4 + h * Hd + i32[i1 + j]]);
    const tau = Math.sqrt((Hd * covered) / total);
    f32[(headScale >> 2) + h] = total > 0 ? 1 / tau : 0;
  }

  // Step 3: approximate logits (g, S) = q[i1] · K[:, i1]ᵀ / τ, reading r columns of K.
  const double = (flags & SPARQ_DOUBLE) !== 0;
  if (q8 || q4bit) {
    // Whole groups of 32 positions from the quantised Kt, the rest from the K rows.
    const grouped = double ? Math.floor(S / 32) * 32 : 0;
    if (grouped > 0) {
      const approximate = q8 ? kern.sparqScoresQ8_0T : kern.sparqScoresQ4_0T;
      approximate(approx, q, keys, keyScales, components, headScale, r, grouped, S, C, Hd, g);
    }
    if (grouped < S) {
      const approximate = q8 ? kern.sparqScoresStridedQ8_0 : kern.sparqScoresStridedQ4_0;
      approximate(approx, q, K, components, headScale, r, grouped, S, Hd, g);
    }
  } else if (double) {
    const approximate = bf16 ? kern.sparqScoresBf16 : kern.sparqScoresF32;
    approximate(approx, q, keys, components, headScale, r, S, C, Hd, g);
  } else {
    const approximate = bf16 ? kern.sparqScoresStridedBf16 : kern.sparqScoresStridedF32;
    approximate(approx, q, keys, components, headScale, r, S, Hd, g);
  }

  // Steps 4–5: rank positions by the group's summed logits (the authors' harness; identical to the
  // paper's for MHA) or, optionally, summed probabilities; force the current token and the l most
  // recent positions; i2 = the top k + 1.
  const byProbabilities = (flags & SPARQ_BY_PROBABILITIES) !== 0;
  const a4 = approx >> 2;
  if (byProbabilities) for (let h = 0; h < g; h++) kern.softmaxF32(approx + 4 * h * S, S);
  // One head ranks by its own row; a group by the sum of its rows.
  let ranking = approx;
  if (g > 1) {
    kern.add(rank, approx, approx + 4 * S, S);
    for (let h = 2; h < g; h++) kern.add(rank, rank, approx + 4 * h * S, S);
    ranking = rank;
  }
  // The forced positions are the last ones, so i2 = the top (k + 1 − forced) of the positions before
  // them, then the forced ones: the same indices, ascending, as ranking them above everything.
  const forced = Math.min(l + 1, S);
  const free = S - forced;
  const take = k + 1 - forced;
  if (take > 0) kern.topK(index, ranking, free, take, topK);
  const i2 = index >> 2;
  const first = Math.max(0, take);
  for (let j = first; j <= k; j++) i32[i2 + j] = free + j - first;

  // Step 6: α = Σ ŝ over the selection, per query head, ŝ = softmax of the approximate logits (its
  // normaliser needs all S exps, the numerator only the k + 1 selected).
  const al = alpha >> 2;
  if (byProbabilities) {
    for (let h = 0; h < g; h++) {
      const row = a4 + h * S;
      let a = 0;
      for (let j = 0; j <= k; j++) a += f32[row + i32[i2 + j]];
      f32[al + h] = Math.min(1, a);
    }
  } else {
    kern.sparqAlpha(alpha, approx, index, k + 1, S, g);
  }
  // Step 7: exact attention over the k + 1 selected rows only.
  if (q8 || q4bit) {
    const attendRows = q8 ? kern.attendRowsQ8_0 : kern.attendRowsQ4_0;
    attendRows(out, scores, q, K, V, index, k + 1, Hd, g, scale, qq);
  } else {
    const attendRows = bf16 ? kern.attendRowsBf16 : kern.attendRowsF32;
    attendRows(out, scores, q, K, V, index, k + 1, Hd, g, scale);
  }

  // Step 8: mean-value reallocation, y = α·y + (1 − α)·v̄.
  if ((flags & SPARQ_REALLOCATION) !== 0) {
    const m = vMean >> 2;
    for (let h = 0; h < g; h++) {
      const a = f32[al + h];
      const rest = Math.fround(1 - a);
      const o = (out >> 2) + h * Hd;
      for (let i = 0; i < Hd; i++)
        f32[o + i] = Math.fround(Math.fround(a * f32[o + i]) + Math.fround(rest * f32[m + i]));
    }
  }
}
