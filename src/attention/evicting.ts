/**
 * What the evicting baselines (H2O, streaming) share: a budget of k rows per KV head that really bounds
 * the cache's memory.
 *
 * Life of an evicting cache:
 *   prefill     dense over the whole prompt (as the papers do), so the cache first grows to hold it;
 *   compaction  after the prompt, the policy picks the k rows to keep per head and the cache moves into a
 *               block of k + 1 rows (the pool gets the rest back);
 *   decode      the new token goes into the free row, attention spans the k + 1 rows, then the policy
 *               frees one row per head for the next token: memory never exceeds k + 1 rows.
 * With `compression: c` instead of a budget, k = max(minimum, prompt / c), fixed at compaction.
 * A budget of at least the session's context never evicts: the cache holds at most the context's rows and
 * attention is dense.
 */
import { UsageError } from "../errors.js";
import { attendDense, type ObserveProbabilities } from "./dense.js";
import type { AttentionContext, AttentionMethod, AttentionMethodName } from "./method.js";

/** The smallest budget compression may give. */
export const MIN_BUDGET = 32;

export interface EvictionPolicy {
  name: AttentionMethodName;
  /** Rows of head kv to keep when compacting to `budget` (held rows of the cache, any order out). */
  keep(slot: number, kv: number, budget: number): Int32Array;
  /** The row of head kv to free after a decode step, the cache holding budget + 1 rows. */
  victim(slot: number, kv: number): number;
  /** Accumulates attention (H2O), or undefined. */
  observe?: ObserveProbabilities;
}

export function resolveBudget(method: string, budget: number | undefined, compression: number | undefined): void {
  if (budget === undefined && compression === undefined) {
    throw new UsageError(`${method} needs a KV budget (--kv-budget N) or a compression ratio (--compression C)`);
  }
  if (budget !== undefined && (!Number.isInteger(budget) || budget < 1)) {
    throw new UsageError(`${method} KV budget must be a positive integer, got ${budget}`);
  }
  if (compression !== undefined && !(compression >= 1)) {
    throw new UsageError(`${method} compression must be a number ≥ 1, got ${compression}`);
  }
}

export function createEvicting(
  ctx: AttentionContext,
  policy: EvictionPolicy,
  spec: { budget?: number; compression?: number },
): AttentionMethod & { readonly budget: number | undefined } {
  resolveBudget(policy.name, spec.budget, spec.compression);
  const { cache, nKvHeads: G } = ctx;
  let budget = spec.budget;
  const slots = cache.slots.length;

  const method = {
    name: policy.name,
    get budget() {
      return budget;
    },
    prefill(slot: number, q: number, out: number, T: number) {
      attendDense(ctx, slot, q, out, T, policy.observe);
    },
    decode(slot: number, q: number, out: number) {
      attendDense(ctx, slot, q, out, 1, policy.observe);
    },
    endStep() {
      if (budget === undefined || cache.rows < budget + 1 || cache.capacity !== budget + 1) return;
      for (let slot = 0; slot < slots; slot++) {
        for (let kv = 0; kv < G; kv++) cache.evict(slot, kv, policy.victim(slot, kv));
      }
    },
    beforePrefill(T: number) {
      const hasFreeRow = cache.heldRows !== cache.rows;
      if (T === 1 && (hasFreeRow || cache.rows < cache.capacity)) return; // a decode step
      // Several tokens: compact away the free rows and make room for all of them.
      if (hasFreeRow || cache.capacity - cache.rows < T) cache.resize(Math.max(cache.heldRows + T, cache.capacity));
    },
    afterPrefill() {
      budget ??= Math.max(MIN_BUDGET, Math.round(cache.length / spec.compression!));
      // A budget of the context or more never evicts: the cache stops at the context (dense attention).
      const rows = Math.min(budget + 1, ctx.contextSize);
      if (cache.capacity === rows) return;
      const keepAll = cache.heldRows <= budget;
      cache.resize(rows, keepAll ? undefined : (slot, kv) => policy.keep(slot, kv, budget!));
    },
  };
  return method;
}
