/**
 * Dense attention: every query head attends over every row its KV head holds. The reference every other
 * method is measured against, and the prefill of all of them.
 *
 * One kernel call per KV head covers the g query heads that share it, so K and V are streamed from memory
 * once per group, not once per query head (decode at long context is bound by that stream); in a prefill
 * chunk one call covers many query rows too (attentionCausal*), so not once per row either.
 */
import { OPS } from "../threads/ops.js";
import type { AttentionContext, AttentionMethod, AttentionScratch } from "./method.js";
import type { KvDType } from "../kvcache/cache.js";

/** The decode attention kernel of each KV dtype. */
const ATTENTION: Record<KvDType, number> = {
  f32: OPS.attentionF32,
  bf16: OPS.attentionBf16,
  q8_0: OPS.attentionQ8_0,
  q4_0: OPS.attentionQ4_0,
};

/** The prefill (causal) attention kernel of each KV dtype. */
const ATTENTION_CAUSAL: Record<KvDType, number> = {
  f32: OPS.attentionCausalF32,
  bf16: OPS.attentionCausalBf16,
  q8_0: OPS.attentionCausalQ8_0,
  q4_0: OPS.attentionCausalQ4_0,
};

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
  const attention = ATTENTION[cache.layout.dtype];
  // KV head kv always runs on the same thread, so an observer's running sums stay in order.
  for (let t = 0; t < T; t++) {
    const S = cache.span(t);
    for (let kv = 0; kv < G; kv++) {
      const at = 4 * (t * H * Hd + kv * g * Hd); // the group's g query heads are adjacent
      const thread = par.threadOf(kv, G);
      const scratch = scratches[thread];
      const { k, v } = cache.attendRows(slot, kv, S);
      // (The f32 and bf16 kernels take no quantised-query scratch; an extra argument is ignored.)
      par.task(thread, attention, out + at, scratch.scores, q + at, k, v, S, Hd, g, scale, scratch.qq);
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
  const causal = ATTENTION_CAUSAL[cache.layout.dtype];
  const S0 = cache.span(0) - 1;
  const rows = scratches[0].causalRows;
  // scratch.causal holds (causalRows, g, C) probabilities and every span is ≤ C (positions seen).
  for (let t0 = 0; t0 < T; t0 += rows) {
    const n = Math.min(rows, T - t0);
    for (let kv = 0; kv < G; kv++) {
      const at = 4 * (t0 * H * Hd + kv * g * Hd); // the group's g query heads of row t0
      const thread = par.threadOf(kv, G);
      par.task(
        thread,
        causal,
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
        scratches[thread].qq,
      );
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
