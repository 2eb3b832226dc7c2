/**
 * The one place that dispatches on the attention method.
 */
import { createDense } from "./dense.js";
import { createH2o } from "./h2o.js";
import type { AttentionContext, AttentionMethod, AttentionSpec } from "./method.js";
import { createSparq } from "./sparq.js";
import { createStreaming } from "./streaming.js";

export function createAttention(ctx: AttentionContext, spec: AttentionSpec): AttentionMethod {
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

export * from "./method.js";
export { sparqBudget } from "./sparq.js";
