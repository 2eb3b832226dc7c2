/**
 * H2O — Zhang et al., "H2O: Heavy-Hitter Oracle for Efficient Generative Inference of Large Language
 * Models", NeurIPS 2023, arXiv 2306.14048; configured as the SparQ paper's baseline (docs/attention.md).
 *
 * Keeps a budget of k rows per KV head: the l = k/4 most recent positions plus the "heavy hitters", the rows
 * with the largest attention probability accumulated over every query so far (prefill rows included; the
 * query heads of a GQA group averaged; with CLA, summed over the layers sharing the slot). Eviction is
 * permanent: each decode step frees the lightest row outside the recent window.
 */
import { createEvicting, type EvictionPolicy } from "./evicting.js";
import type { AttentionContext, AttentionMethod, H2oSpec } from "./method.js";

export function createH2o(ctx: AttentionContext, spec: H2oSpec): AttentionMethod {
  const { arena, cache, nHeads: H, nKvHeads: G } = ctx;
  const g = H / G;
  const f32 = arena.f32;
  const i32 = arena.i32;
  const recentOf = (budget: number) => Math.min(budget, spec.recent ?? Math.floor(budget / 4));
  let method: ReturnType<typeof createEvicting>;

  const policy: EvictionPolicy = {
    name: "h2o",
    observe(thread, scratch, slot, kv, S) {
      // acc[row] += Σ over the group's heads of p[row], for the S rows this query saw (the sum is g × the
      // spec's group mean: the same ranking, one kernel call per head).
      for (let h = 0; h < g; h++) {
        const acc = cache.accumulatedScores(slot, kv, S);
        ctx.parallel.task(thread, "add", acc, acc, scratch.scores + 4 * h * S, S);
      }
    },
    keep(slot, kv, budget) {
      const rows = cache.heldRowsOf(slot, kv);
      const pos = cache.positions(slot, kv) >> 2;
      const acc = cache.accumulated(slot, kv) >> 2;
      // The l most recent positions, then the heaviest of the rest (ties: the later position).
      const byRecency = Array.from(rows).sort((a, b) => i32[pos + b] - i32[pos + a]);
      const recent = byRecency.slice(0, recentOf(budget));
      const rest = byRecency
        .slice(recent.length)
        .sort((a, b) => f32[acc + b] - f32[acc + a] || i32[pos + b] - i32[pos + a]);
      const kept = recent.concat(rest.slice(0, budget - recent.length));
      return Int32Array.from(kept.sort((a, b) => i32[pos + a] - i32[pos + b]));
    },
    victim(slot, kv) {
      // The lightest row whose position is not among the l most recent.
      const pos = cache.positions(slot, kv) >> 2;
      const acc = cache.accumulated(slot, kv) >> 2;
      const oldestRecent = cache.length - recentOf(method.budget!);
      let best = -1;
      for (let r = 0; r < cache.rows; r++) {
        if (i32[pos + r] >= oldestRecent) continue;
        if (best < 0 || f32[acc + r] < f32[acc + best]) best = r;
      }
      return best;
    },
  };
  method = createEvicting(ctx, policy, spec);
  return method;
}
