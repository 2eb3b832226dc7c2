/**
 * The one place that dispatches on the attention method.
 */
import { createDense } from "./dense.js";
import { createH2o } from "./h2o.js";
import type { AttentionContext, AttentionMethod, AttentionSpec } from "./method.js";
import { createSparq } from "./sparq.js";
import { createStreaming } from "./streaming.js";
import { rotate } from "../kvcache/rotation.js";

export function createAttention(ctx: AttentionContext, spec: AttentionSpec): AttentionMethod {
  const method = createMethod(ctx, spec);
  return ctx.cache.rotation === null ? method : rotated(ctx, method, ctx.cache.rotation);
}

function createMethod(ctx: AttentionContext, spec: AttentionSpec): AttentionMethod {
  switch (spec.method) {
    case "dense":
      return createDense(ctx);
    case "sparq":
      return createSparq(ctx, spec);
    case "h2o":
      return createH2o(ctx, spec);
    case "streaming":
      return createStreaming(ctx, spec);
    default:
      return spec satisfies never;
  }
}

/**
 * A method over a cache that stores K and V rotated (kvcache/rotation.ts): its queries are rotated as the
 * keys were (in place: the caller does not read them again) and its outputs rotated back from V's rotation.
 */
function rotated(ctx: AttentionContext, method: AttentionMethod, blocks: { k: number; v: number }): AttentionMethod {
  const { arena, nHeads: H, headDim: Hd } = ctx;
  return {
    name: method.name,
    endStep: (T) => method.endStep(T),
    beforePrefill: (T) => method.beforePrefill(T),
    afterPrefill: () => method.afterPrefill(),
    prefill(slot, q, out, T) {
      rotate(arena.f32, q >> 2, T * H, Hd, blocks.k);
      method.prefill(slot, q, out, T);
      rotate(arena.f32, out >> 2, T * H, Hd, blocks.v);
    },
    decode(slot, q, out) {
      rotate(arena.f32, q >> 2, H, Hd, blocks.k);
      method.decode(slot, q, out);
      rotate(arena.f32, out >> 2, H, Hd, blocks.v);
    },
  };
}

export * from "./method.js";
export { sparqBudget } from "./sparq.js";
