/**
 * AdamW with decoupled weight decay (matrices only), gradient clipping by global norm, and the learning
 * rate schedule: linear warmup, then cosine decay to a floor (the CLA paper's recipe, docs/cla.md).
 */
import type { Kernels } from "../kernels/kernels.js";
import type { Arena, Ptr } from "../memory/arena.js";
import type { Parallel } from "../threads/parallel.js";
import type { ParamLayout } from "./params.js";

export interface AdamWOptions {
  beta1: number; // 0.9
  beta2: number; // 0.95
  eps: number; // 1e-8
  weightDecay: number; // 0.1, matrices only
  clip: number; // global gradient-norm bound, 1.0 (0 = no clipping)
}

export const ADAMW_DEFAULTS: AdamWOptions = { beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1, clip: 1 };

/** Learning rate at step (0-based): linear warmup over `warmup` steps, then cosine to floor · peak at `total`. */
export function learningRate(step: number, peak: number, warmup: number, total: number, floor = 0.1): number {
  if (step < warmup) return (peak * (step + 1)) / warmup;
  const progress = Math.min(1, (step - warmup) / Math.max(1, total - warmup));
  return peak * (floor + (1 - floor) * 0.5 * (1 + Math.cos(Math.PI * progress)));
}

export class AdamW {
  constructor(
    private readonly kern: Kernels,
    private readonly par: Parallel,
    private readonly arena: Arena,
    private readonly layout: ParamLayout,
    private readonly regions: { params: Ptr; grads: Ptr; m: Ptr; v: Ptr },
    private readonly scratch: Ptr, // 4 bytes for a sum
    readonly options: AdamWOptions = ADAMW_DEFAULTS,
  ) {}

  /** The gradients' global L2 norm (one f64-accumulated sum per tensor, tensors in layout order). */
  gradNorm(): number {
    let sum = 0;
    for (const t of this.layout.tensors) {
      this.kern.sumSquares(this.scratch, this.regions.grads + 4 * t.offset, t.size);
      sum += this.arena.f32[this.scratch >> 2];
    }
    return Math.sqrt(sum);
  }

  /**
   * Step number `step` (1-based, for the bias corrections) at learning rate lr: clip the gradients to the
   * norm bound, then update every tensor. Returns the gradient norm before clipping.
   */
  step(step: number, lr: number): number {
    const { kern, par, layout, regions, options: o } = this;
    const norm = this.gradNorm();
    if (o.clip > 0 && norm > o.clip) {
      const alpha = Math.fround(o.clip / norm);
      for (const t of layout.tensors) kern.scale(regions.grads + 4 * t.offset, t.size, alpha);
    }
    const bc1 = 1 - o.beta1 ** step;
    const bc2 = 1 - o.beta2 ** step;
    // Element-wise: any split over the threads gives the same bits.
    for (const t of layout.tensors) {
      const wd = t.decay ? o.weightDecay : 0;
      par.splitRows(t.size, 1, (th, i0, i1) =>
        par.task(
          th,
          "adamw",
          regions.params + 4 * (t.offset + i0),
          regions.m + 4 * (t.offset + i0),
          regions.v + 4 * (t.offset + i0),
          regions.grads + 4 * (t.offset + i0),
          i1 - i0,
          lr,
          o.beta1,
          o.beta2,
          o.eps,
          wd,
          bc1,
          bc2,
        ),
      );
    }
    par.flush();
    return norm;
  }
}
