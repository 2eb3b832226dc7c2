/**
 * The one signature every decode-time attention method implements, and what they share.
 *
 * Prefill is dense for every method (as in the SparQ paper and its baselines); a method differs only at
 * decode, in which rows of the cache it reads and which it keeps. Each method declares what it needs the
 * cache to hold (KvLayout) and takes its kernels' K/V arguments from the cache's counting accessors, so the
 * bytes a method reports are what its kernels were given (KvCache.traffic), not a formula.
 *
 * Shape letters: H query heads, G KV heads, g = H / G query heads per KV head, Hd head dim,
 * S positions attended at this step (the current token included), C cache capacity in rows.
 */
import type { Kernels } from "../kernels/kernels.js";
import type { KvCache, KvDType, KvLayout } from "../kvcache/cache.js";
export { newTraffic, type Traffic } from "../kvcache/cache.js";
import type { Arena, Ptr } from "../memory/arena.js";
import type { Parallel } from "../threads/parallel.js";

/** Options of each method, as a session takes them. */
export type AttentionSpec = DenseSpec | SparqSpec | H2oSpec | StreamingSpec;
export type AttentionMethodName = AttentionSpec["method"];
export const ATTENTION_METHODS: readonly AttentionMethodName[] = ["dense", "sparq", "h2o", "streaming"];

export interface DenseSpec {
  method: "dense";
}

/** How SparQ ranks positions for a GQA/MQA group (identical for MHA): summed approximate logits or probabilities. */
export const SPARQ_GROUP_RANKINGS = ["logits", "probabilities"] as const;
export type SparqGroupRanking = (typeof SPARQ_GROUP_RANKINGS)[number];

export interface SparqSpec {
  method: "sparq";
  /** Target transfer ratio 1/c: r = Hd/c and k = S/(2c) at each step (the authors' GPU port). */
  compression?: number;
  /** Query components used for the approximate scores (overrides compression's r). */
  r?: number;
  /** Positions fetched per step, besides the current token (overrides compression's k). */
  k?: number;
  /** Local window l always selected: default k/4. */
  localWindow?: number;
  /** Mix the mean value into the output by the unselected mass (1 − α). Default: on for MHA, off for GQA/MQA. */
  reallocation?: boolean;
  /** "double" stores K twice (S-major and d-major); "single" gathers K's columns with a strided read. */
  layout?: "double" | "single";
  /** GQA: rank positions by the group's summed approximate logits (the authors' harness) or probabilities (the paper's listing). */
  groupRanking?: SparqGroupRanking;
  /** Floors so short contexts fall back to dense: k ≥ minK (default 64), r ≥ minR (default min(Hd, 4)). */
  minK?: number;
  minR?: number;
}

export interface H2oSpec {
  method: "h2o";
  /** Rows kept: budget/4 most recent + the rest by accumulated attention. */
  budget?: number;
  /** Or a transfer ratio: budget = max(minBudget, prompt / c) fixed after prefill. */
  compression?: number;
  /** Recent window l, default budget/4. */
  recent?: number;
}

export interface StreamingSpec {
  method: "streaming";
  budget?: number;
  compression?: number;
  /** First positions always kept: 16 (LM-Infinite, the SparQ paper's setting) by default; 4 is StreamingLLM's. */
  sinks?: number;
}

/**
 * What a method gets: the kernels, the session's cache, the model's head shape, its threads and a set of
 * scratch buffers per thread. Per-head work goes to parallel.task(thread, …) with that thread's scratch;
 * work on the caller's thread between jobs uses kernels and scratches[0] directly.
 */
export interface AttentionContext {
  kernels: Kernels;
  arena: Arena;
  cache: KvCache;
  nHeads: number; // H
  nKvHeads: number; // G
  headDim: number; // Hd
  scale: number; // f32(1 / sqrt(Hd))
  /** Positions the session may reach: an evicting method's cache never needs more rows than this. */
  contextSize: number;
  parallel: Parallel;
  /** One per thread of `parallel`. */
  scratches: AttentionScratch[];
}

/** Scratch buffers sized for the longest context (see attentionScratchSizes). */
export interface AttentionScratch {
  scores: Ptr; // (g, C) f32: probabilities of one group's heads
  causal: Ptr; // (causalRows, g, C) f32: probabilities of a prefill chunk's rows (attentionCausal*)
  approx: Ptr; // (g, C) f32: SparQ's approximate scores
  rank: Ptr; // (C) f32: SparQ's group ranking
  index: Ptr; // (C) i32: selected rows
  components: Ptr; // (Hd) i32: selected query components
  absQ: Ptr; // (Hd) f32: Σ over the group of |q|
  headScale: Ptr; // (g) f32: per-head multipliers
  alpha: Ptr; // (g) f32: SparQ's α per query head
  topK: Ptr; // topK kernel scratch: 4 (C + 2048) bytes
  qq: Ptr; // (causalRows, g, Hd/32) q8_0 blocks: queries quantised for a q8_0 / q4_0 cache's dot products
  /** Prefill rows one attentionCausal* call may take (what `causal` holds). */
  causalRows: number;
}

/** At most this many bytes for the chunk's probabilities; longer contexts take fewer rows per call. */
const CAUSAL_SCRATCH_BYTES = 16 << 20;

/** Prefill rows per attentionCausal* call for contexts up to maxRows and chunks of `chunk` rows. */
function causalRowsFor(groupSize: number, maxRows: number, chunk: number): number {
  return Math.max(1, Math.min(chunk, Math.floor(CAUSAL_SCRATCH_BYTES / (4 * groupSize * maxRows))));
}

/** Bytes of each scratch buffer, for g = groupSize, head dim Hd, contexts up to maxRows, chunks of `chunk` rows. */
export function attentionScratchSizes(
  groupSize: number,
  headDim: number,
  maxRows: number,
  chunk: number,
): Record<Exclude<keyof AttentionScratch, "causalRows">, number> {
  return {
    scores: 4 * groupSize * maxRows,
    causal: 4 * groupSize * maxRows * causalRowsFor(groupSize, maxRows, chunk),
    approx: 4 * groupSize * maxRows,
    rank: 4 * maxRows,
    index: 4 * maxRows,
    components: 4 * headDim,
    absQ: 4 * headDim,
    headScale: 4 * groupSize,
    alpha: 4 * groupSize,
    topK: 4 * (Math.max(maxRows, headDim) + 2048),
    // A decode step quantises g query heads; a prefill call every head of its rows first.
    qq: causalRowsFor(groupSize, maxRows, chunk) * groupSize * Math.ceil(headDim / 32) * 34,
  };
}

/** Allocates the scratch buffers with `alloc` (the arena's, or a carve of a region). */
export function allocateAttentionScratch(
  alloc: (bytes: number) => Ptr,
  groupSize: number,
  headDim: number,
  maxRows: number,
  chunk: number,
): AttentionScratch {
  const scratch = { causalRows: causalRowsFor(groupSize, maxRows, chunk) } as AttentionScratch;
  for (const [key, bytes] of Object.entries(attentionScratchSizes(groupSize, headDim, maxRows, chunk))) {
    scratch[key as Exclude<keyof AttentionScratch, "causalRows">] = alloc(bytes);
  }
  return scratch;
}

export interface AttentionMethod {
  readonly name: AttentionMethodName;
  /**
   * Dense causal attention of T ≥ 1 query rows q (T, H·Hd) → out (T, H·Hd) over the slot's rows, the t-th
   * query seeing the rows held before this step plus the step's first t + 1. Methods that track attention
   * (H2O) accumulate here.
   */
  prefill(slot: number, q: Ptr, out: Ptr, T: number): void;
  /** One decode query row q (H·Hd) → out (H·Hd) over the slot (the current token already stored). */
  decode(slot: number, q: Ptr, out: Ptr): void;
  /** Called after each forward step (all layers), once its keys are stored: evicting methods evict here. */
  endStep(T: number): void;
  /** Called before a multi-token step of T tokens: evicting methods make room for the dense prefill. */
  beforePrefill(T: number): void;
  /** Called after the prompt (all its chunks): evicting methods shrink the cache to their budget. */
  afterPrefill(): void;
}

/** Whether SparQ mixes in the mean value: by default for MHA (g = 1), not for GQA/MQA (the authors' choice). */
export function sparqReallocates(spec: SparqSpec, groupSize: number): boolean {
  return spec.reallocation ?? groupSize === 1;
}

/**
 * The cache layout a method needs, for a KV dtype and g = H / G query heads per KV head (SparQ keeps the
 * running mean of V only when it mixes it in).
 */
export function layoutFor(spec: AttentionSpec, dtype: KvDType, groupSize: number): KvLayout {
  switch (spec.method) {
    case "dense":
      return { dtype, kTransposed: false, vMean: false, accumulated: false, positions: false };
    case "sparq":
      return {
        dtype,
        kTransposed: (spec.layout ?? "double") === "double",
        vMean: sparqReallocates(spec, groupSize),
        accumulated: false,
        positions: false,
      };
    case "h2o":
      return { dtype, kTransposed: false, vMean: false, accumulated: true, positions: true };
    case "streaming":
      return { dtype, kTransposed: false, vMean: false, accumulated: false, positions: true };
    default:
      return spec satisfies never;
  }
}
