/**
 * Dense attention: every query head attends over every row its KV head holds. The reference every other
 * method is measured against, and the prefill of all of them.
 *
 * One kernel call per KV head covers the g query heads that share it, so K and V are streamed from memory
 * once per group, not once per query head (decode at long context is bound by that stream); in a prefill
 * chunk one call covers many query rows too (attentionCausal*), so not once per row either.
 */
import type { KvDType } from "../kvcache/cache.js";
import type { Parallel } from "../threads/parallel.js";
import type { AttentionContext, AttentionMethod, AttentionScratch } from "./method.js";

/** The decode and prefill (causal) attention kernels of each KV dtype; the quantised ones take a qq scratch. */
const ATTENTION = { f32: "attentionF32", bf16: "attentionBf16" } as const;
const ATTENTION_QUANTIZED = { q8_0: "attentionQ8_0", q4_0: "attentionQ4_0" } as const;
const ATTENTION_CAUSAL = { f32: "attentionCausalF32", bf16: "attentionCausalBf16" } as const;
const ATTENTION_CAUSAL_QUANTIZED = { q8_0: "attentionCausalQ8_0", q4_0: "attentionCausalQ4_0" } as const;

/**
 * Called after each group's attention is queued on `thread`, whose scratch.scores (g, S) will hold the
 * probabilities when it runs: the observer queues its own tasks on the same thread, after it.
 */
export type ObserveProbabilities = (
  thread: number,
  scratch: AttentionScratch,
  slot: number,
  kvHead: number,
  S: number,
) => void;

/**
 * Causal dense attention of T query rows q (T, H·Hd) → out (T, H·Hd) over `slot`: row t sees
 * cache.span(t) rows (those held before the step and the step's first t + 1).
 * Several rows without `observe` go to attentionCausal*, many rows per call (see attendCausal). Otherwise
 * each row is one attention* call per group: the observer sees that row's probabilities, and a decode
 * step (T = 1) stays on the kernel the decode benchmarks measure (the same bits either way).
 */
export function attendDense(
  ctx: AttentionContext,
  slot: number,
  q: number,
  out: number,
  T: number,
  observe?: ObserveProbabilities,
): void {
  if (observe === undefined && T > 1) {
    attendCausal(ctx, slot, q, out, T);
    return;
  }
  const { cache, nHeads: H, nKvHeads: G, headDim: Hd, scale, parallel: par, scratches } = ctx;
  const g = H / G;
  const dtype = cache.layout.dtype;
  // KV head kv always runs on the same thread, so an observer's running sums stay in order.
  for (let t = 0; t < T; t++) {
    const S = cache.span(t);
    for (let kv = 0; kv < G; kv++) {
      const at = 4 * (t * H * Hd + kv * g * Hd); // the group's g query heads are adjacent
      const thread = par.threadOf(kv, G);
      const scratch = scratches[thread];
      const { k, v } = cache.attendRows(slot, kv, S);
      queueAttention(par, thread, dtype, out + at, scratch.scores, q + at, k, v, S, Hd, g, scale, scratch.qq);
      observe?.(thread, scratch, slot, kv, S);
    }
  }
  par.flush();
}

/**
 * attendDense without an observer: up to scratch.causalRows rows in one attentionCausal* call per KV head,
 * which reads the head's K and V once for all of them, bit for bit the per-row attention* calls. Row t
 * sees cache.span(t) = S0 + t + 1 rows.
 */
function attendCausal(ctx: AttentionContext, slot: number, q: number, out: number, T: number): void {
  const { cache, nHeads: H, nKvHeads: G, headDim: Hd, scale, parallel: par, scratches } = ctx;
  const g = H / G;
  const dtype = cache.layout.dtype;
  const S0 = cache.span(0) - 1;
  const rows = scratches[0].causalRows;
  // scratch.causal holds (causalRows, g, C) probabilities and every span is ≤ C (positions seen).
  for (let t0 = 0; t0 < T; t0 += rows) {
    const n = Math.min(rows, T - t0);
    for (let kv = 0; kv < G; kv++) {
      const at = 4 * (t0 * H * Hd + kv * g * Hd); // the group's g query heads of row t0
      const thread = par.threadOf(kv, G);
      const args = [
        out + at,
        scratches[thread].causal,
        q + at,
        cache.keys(slot, kv),
        cache.values(slot, kv),
        S0 + t0,
        n,
        Hd,
        g,
        H * Hd,
        scale,
      ] as const;
      if (dtype === "q8_0" || dtype === "q4_0")
        par.task(thread, ATTENTION_CAUSAL_QUANTIZED[dtype], ...args, scratches[thread].qq);
      else par.task(thread, ATTENTION_CAUSAL[dtype], ...args);
    }
  }
  par.flush();
}

export function createDense(ctx: AttentionContext): AttentionMethod {
  return {
    name: "dense",
    prefill(slot, q, out, T) {
      attendDense(ctx, slot, q, out, T);
    },
    decode(slot, q, out) {
      attendDense(ctx, slot, q, out, 1);
    },
    endStep() {},
    beforePrefill() {},
    afterPrefill() {},
  };
}

/** Queues one KV head's decode attention (its g query heads over S rows) on `thread`, by the cache's dtype. */
function queueAttention(
  par: Parallel,
  thread: number,
  dtype: KvDType,
  out: number,
  scores: number,
  q: number,
  k: number,
  v: number,
  S: number,
  Hd: number,
  g: number,
  scale: number,
  qq: number,
): void {
  if (dtype === "q8_0" || dtype === "q4_0")
    par.task(thread, ATTENTION_QUANTIZED[dtype], out, scores, q, k, v, S, Hd, g, scale, qq);
  else par.task(thread, ATTENTION[dtype], out, scores, q, k, v, S, Hd, g, scale);
}
