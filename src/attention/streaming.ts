/**
 * StreamingLLM / LM-Infinite — Xiao et al., "Efficient Streaming Language Models with Attention Sinks",
 * ICLR 2024, arXiv 2309.17453; Han et al., "LM-Infinite", arXiv 2308.16137. Configured as the SparQ
 * paper's baseline (docs/attention.md).
 *
 * Keeps the first `sinks` positions (default 16, LM-Infinite's setting in the SparQ paper; 4 is
 * StreamingLLM's) and the k − sinks most recent; softmax renormalised over what is kept. Each decode step
 * frees the oldest row after the sinks.
 */
import { UsageError } from "../errors.js";
import { createEvicting, type EvictionPolicy } from "./evicting.js";
import type { AttentionContext, AttentionMethod, StreamingSpec } from "./method.js";

/** First positions always kept: LM-Infinite's 16, the SparQ paper's setting (StreamingLLM uses 4). */
export const DEFAULT_SINKS = 16;

export function createStreaming(ctx: AttentionContext, spec: StreamingSpec): AttentionMethod {
  const { arena, cache } = ctx;
  const i32 = arena.i32;
  const sinks = spec.sinks ?? DEFAULT_SINKS;
  if (!Number.isInteger(sinks) || sinks < 0)
    throw new UsageError(`streaming sinks must be an integer ≥ 0, got ${sinks}`);
  if (spec.budget !== undefined && spec.budget <= sinks) {
    throw new UsageError(`streaming KV budget ${spec.budget} must exceed the ${sinks} sink tokens`);
  }

  const policy: EvictionPolicy = {
    name: "streaming",
    keep(slot, kv, budget) {
      const rows = cache.heldRowsOf(slot, kv);
      const pos = cache.positions(slot, kv) >> 2;
      const byPosition = Array.from(rows).sort((a, b) => i32[pos + a] - i32[pos + b]);
      const first = byPosition.filter((r) => i32[pos + r] < sinks).slice(0, budget);
      const nRecent = budget - first.length;
      const recent = nRecent > 0 ? byPosition.filter((r) => i32[pos + r] >= sinks).slice(-nRecent) : [];
      return Int32Array.from(first.concat(recent));
    },
    victim(slot, kv) {
      // The oldest position after the sinks.
      const pos = cache.positions(slot, kv) >> 2;
      let best = -1;
      for (let r = 0; r < cache.rows; r++) {
        const p = i32[pos + r];
        if (p >= sinks && (best < 0 || p < i32[pos + best])) best = r;
      }
      return best;
    },
  };
  return createEvicting(ctx, policy, spec);
}
