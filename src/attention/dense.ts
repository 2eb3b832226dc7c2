/**
 * Dense attention: every query head attends over every row its KV head holds. The reference every other
 * method is measured against, and the prefill of all of them.
 *
 * One kernel call per KV head covers the g query heads that share it, so K and V are streamed from memory
 * once per group, not once per query head (decode at long context is bound by that stream); in a prefill
 * chunk one call covers many query rows too (attentionCausal*), so not once per row either.
 */
import { newTraffic, type AttentionContext, type AttentionMethod } from "./method.js";

/** Called after each group's attention with the probabilities at scratch.scores (g, S). */
export type ObserveProbabilities = (slot: number, kvHead: number, S: number) => void;

/**
 * Causal dense attention of T query rows q (T, H·Hd) → out (T, H·Hd) over `slot`: row t sees
 * cache.span(t) rows (those held before the step and the step's first t + 1).
 * Several rows without `observe` go to attentionCausal*, many rows per call (see attendCausal). Otherwise
 * each row is one attention* call per group: the observer sees that row's probabilities, and a decode
 * step (T = 1) stays on the kernel the decode benchmarks measure (the same bits either way).
 */
export function attendDense(ctx: AttentionContext, slot: number, q: number, out: number, T: number, observe?: ObserveProbabilities): void {
  if (observe === undefined && T > 1) {
    attendCausal(ctx, slot, q, out, T);
    return;
  }
  const { kernels: k, cache, nHeads: H, nKvHeads: G, headDim: Hd, scale, scratch } = ctx;
  const g = H / G;
  const attention = cache.layout.dtype === "f32" ? k.attentionF32 : k.attentionBf16;
  for (let t = 0; t < T; t++) {
    const S = cache.span(t);
    for (let kv = 0; kv < G; kv++) {
      const at = 4 * (t * H * Hd + kv * g * Hd); // the group's g query heads are adjacent
      attention(out + at, scratch.scores, q + at, cache.keys(slot, kv), cache.values(slot, kv), S, Hd, g, scale);
      observe?.(slot, kv, S);
    }
  }
}

/**
 * attendDense without an observer: up to scratch.causalRows rows in one attentionCausal* call per KV head,
 * which reads the head's K and V once for all of them, bit for bit the per-row attention* calls. Row t
 * sees cache.span(t) = S0 + t + 1 rows.
 */
function attendCausal(ctx: AttentionContext, slot: number, q: number, out: number, T: number): void {
  const { kernels: k, cache, nHeads: H, nKvHeads: G, headDim: Hd, scale, scratch } = ctx;
  const g = H / G;
  const causal = cache.layout.dtype === "f32" ? k.attentionCausalF32 : k.attentionCausalBf16;
  const S0 = cache.span(0) - 1;
  // scratch.causal holds (causalRows, g, C) probabilities and every span is ≤ C (positions seen).
  for (let t0 = 0; t0 < T; t0 += scratch.causalRows) {
    const n = Math.min(scratch.causalRows, T - t0);
    for (let kv = 0; kv < G; kv++) {
      const at = 4 * (t0 * H * Hd + kv * g * Hd); // the group's g query heads of row t0
      causal(out + at, scratch.causal, q + at, cache.keys(slot, kv), cache.values(slot, kv), S0 + t0, n, Hd, g, H * Hd, scale);
    }
  }
}

/** Bytes dense decode reads from one slot at a step spanning S rows: K and V, every row (spec: 2·S·d_h). */
export function denseReadBytes(ctx: AttentionContext, S: number): number {
  return 2 * S * ctx.headDim * ctx.cache.bytesPerElement * ctx.nKvHeads;
}

export function createDense(ctx: AttentionContext): AttentionMethod {
  const traffic = newTraffic();
  return {
    name: "dense",
    traffic,
    prefill(slot, q, out, T) {
      attendDense(ctx, slot, q, out, T);
    },
    decode(slot, q, out) {
      const S = ctx.cache.span(0);
      attendDense(ctx, slot, q, out, 1);
      traffic.read += denseReadBytes(ctx, S);
      traffic.denseRead += denseReadBytes(ctx, S);
    },
    endStep() {},
    beforePrefill() {},
    afterPrefill() {},
  };
}
