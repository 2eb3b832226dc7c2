/**
 * SparQ Attention — Ribar et al., "SparQ Attention: Bandwidth-Efficient LLM Inference", ICML 2024,
 * arXiv 2312.04985. At each decode step, per KV head, the lines of the paper's Algorithm 1 (sparqHead in
 * sparq-head.ts runs them, one task per KV head; docs/attention.md says how each is computed):
 *   1. i1 = argtopk(|q|, r): the query's r largest components;
 *   2. τ = sqrt(Hd · ‖q[i1]‖₁ / ‖q‖₁): the softmax temperature, from the L1 coverage of those components;
 *   3. ŝ = softmax(q[i1] · K[:, i1]ᵀ / τ): approximate scores of every position, from r columns of K;
 *   4. the l most recent positions and the current token are forced in;
 *   5. i2 = argtopk(ŝ, k + 1): the positions to fetch;
 *   6. α = Σ ŝ[i2]: the approximate mass they hold;
 *   7. s = softmax(q · K[i2]ᵀ / sqrt(Hd)): exact attention over those k + 1 rows of K and V only;
 *   8. y = α · s · V[i2] + (1 − α) · v̄: the mass left out goes to the mean value v̄.
 * Reads S·r + 2·k·Hd elements instead of 2·S·Hd. Prefill is dense; nothing is evicted. For GQA/MQA the
 * group's query heads share i1 and i2 (summed |q|, summed logits), and α and τ are per query head.
 *
 * k tracks the growing context: with `compression: c`, r = Hd/c is fixed and k = S/(2c) is recomputed at
 * every step from the S positions attended (the authors' GPU port), both floored (minR, minK) so short
 * contexts fall back to dense (k + 1 ≥ S selects everything, which is dense attention exactly).
 */
import { UsageError } from "../errors.js";
import { attendDense } from "./dense.js";
import {
  SPARQ_GROUP_RANKINGS,
  sparqReallocates,
  type AttentionContext,
  type AttentionMethod,
  type SparqSpec,
} from "./method.js";
import {
  SPARQ_BF16,
  SPARQ_BY_PROBABILITIES,
  SPARQ_DOUBLE,
  SPARQ_Q4_0,
  SPARQ_Q8_0,
  SPARQ_REALLOCATION,
  SPARQ_HEAD,
} from "./sparq-head.js";

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
    if (v !== undefined && (!Number.isInteger(v) || v < 1))
      throw new UsageError(`sparq ${what} must be a positive integer, got ${v}`);
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
  if (spec.r !== undefined && spec.r > headDim)
    throw new UsageError(`sparq r = ${spec.r} exceeds the head dimension ${headDim}`);
  if (spec.localWindow !== undefined && (!Number.isInteger(spec.localWindow) || spec.localWindow < 0)) {
    throw new UsageError(`sparq local window must be an integer ≥ 0, got ${spec.localWindow}`);
  }
  const oneOf = (v: unknown, allowed: readonly string[], what: string) => {
    if (v !== undefined && !allowed.includes(v as string))
      throw new UsageError(
        `sparq ${what} must be ${allowed.map((a) => `"${a}"`).join(" or ")}, got ${JSON.stringify(v)}`,
      );
  };
  oneOf(spec.groupRanking, SPARQ_GROUP_RANKINGS, "groupRanking");
  oneOf(spec.layout, ["double", "single"], "layout");
  if (spec.reallocation !== undefined && typeof spec.reallocation !== "boolean")
    throw new UsageError(`sparq reallocation must be true or false, got ${JSON.stringify(spec.reallocation)}`);
}

export function createSparq(ctx: AttentionContext, spec: SparqSpec): AttentionMethod {
  checkSparqSpec(spec, ctx.headDim);
  const { cache, nHeads: H, nKvHeads: G, headDim: Hd, scale } = ctx;
  const g = H / G;
  const reallocation = sparqReallocates(spec, g);
  if (reallocation && !cache.layout.vMean)
    throw new UsageError(
      "sparq mean-value reallocation needs a cache that keeps the mean of V; create the session with it",
    );
  const doubleLayout = (spec.layout ?? "double") === "double";
  const byProbabilities = spec.groupRanking === "probabilities";
  const dtype = cache.layout.dtype;
  const flags =
    (dtype === "bf16" ? SPARQ_BF16 : 0) |
    (dtype === "q8_0" ? SPARQ_Q8_0 : 0) |
    (dtype === "q4_0" ? SPARQ_Q4_0 : 0) |
    (doubleLayout ? SPARQ_DOUBLE : 0) |
    (byProbabilities ? SPARQ_BY_PROBABILITIES : 0) |
    (reallocation ? SPARQ_REALLOCATION : 0);

  return {
    name: "sparq",
    prefill(slot, q, out, T) {
      attendDense(ctx, slot, q, out, T);
    },
    decode(slot, q, out) {
      const S = cache.span(0);
      const budget = sparqBudget(spec, Hd, S);
      if (budget.k + 1 >= S) {
        // Everything would be selected: α = 1 and the output is dense attention, so compute that.
        attendDense(ctx, slot, q, out, 1);
        return;
      }
      // One task per KV head (its g query heads), spread over the threads, each with its own scratch.
      const { r, k, l } = budget;
      const par = ctx.parallel;
      for (let kv = 0; kv < G; kv++) {
        const t = par.threadOf(kv, G);
        const sc = ctx.scratches[t];
        // What the head's kernels read: r columns of K over S rows, k + 1 rows of K and V (the current
        // token's among them), v̄ for the mix.
        const columns = cache.keyColumns(slot, kv, r, S);
        const rows = cache.gatherRows(slot, kv, k + 1);
        const vMean = reallocation ? cache.meanValue(slot, kv) : 0;
        const quantizedT = cache.quantized !== null && doubleLayout;
        par.job(t, SPARQ_HEAD, {
          q: q + 4 * kv * g * Hd,
          out: out + 4 * kv * g * Hd,
          keys: columns,
          K: rows.k,
          V: rows.v,
          vMean,
          keyScales: quantizedT ? cache.keysTScales(slot, kv) : 0,
          C: quantizedT ? cache.kTStride : cache.capacity,
          S,
          r,
          k,
          l,
          g,
          Hd,
          scale,
          flags,
          absQ: sc.absQ,
          components: sc.components,
          topK: sc.topK,
          headScale: sc.headScale,
          approx: sc.approx,
          rank: sc.rank,
          index: sc.index,
          alpha: sc.alpha,
          scores: sc.scores,
          qq: sc.qq,
        });
      }
      par.flush();
    },
    endStep() {},
    beforePrefill() {},
    afterPrefill() {},
  };
}
