/**
 * The trainable parameters of a model: every tensor of the config (model/tensor-names.ts, GGUF names and
 * the inference engine's conventions: Q/K rows interleaved for RoPE, shapes outermost first) laid out
 * back to back in one f32 region, with three more regions of the same layout for the gradients and the
 * AdamW moments. One offset per tensor serves all four.
 *
 *   params   (P) f32     the master weights (f32, also for training in mixed precision later)
 *   grads    (P) f32     zeroed before each step's micro-batches, accumulated by the backward
 *   m, v     (P) f32     AdamW first and second moments
 */
import { UnsupportedError } from "../errors.js";
import type { ModelConfig } from "../model/config.js";
import { Rng } from "../model/sampler.js";
import { expectedTensors } from "../model/tensor-names.js";

export interface ParamTensor {
  name: string; // GGUF name
  shape: number[];
  offset: number; // in floats from the region's start
  size: number; // floats
  /** Matrices get weight decay; norms (vectors) do not. */
  decay: boolean;
}

export interface ParamLayout {
  tensors: ParamTensor[];
  byName: Map<string, ParamTensor>;
  /** Floats in one region. */
  total: number;
}

/** The layout of `config`'s parameters; each tensor starts on a 16-float (64-byte) boundary. */
export function paramLayout(config: ModelConfig): ParamLayout {
  if (config.qkvBias) throw new UnsupportedError("training models with q/k/v biases is not supported");
  if (config.ropeScaling !== null) throw new UnsupportedError("training with RoPE scaling is not supported");
  const tensors: ParamTensor[] = [];
  let offset = 0;
  for (const spec of expectedTensors(config)) {
    const size = spec.shape.reduce((a, b) => a * b, 1);
    tensors.push({ name: spec.name, shape: spec.shape, offset, size, decay: !spec.vector });
    offset += Math.ceil(size / 16) * 16;
  }
  return { tensors, byName: new Map(tensors.map((t) => [t.name, t])), total: offset };
}

/**
 * Initial values: norms 1, matrices N(0, std²), the projections that write into the residual stream
 * (attention output, FFN down) scaled by 1/√(2L) as GPT-2 does, so the stream's variance does not grow
 * with depth. Deterministic for a seed.
 */
export function initParams(
  layout: ParamLayout,
  config: ModelConfig,
  into: Float32Array,
  at: number,
  seed: number,
  std = 0.02,
): void {
  const rng = new Rng(seed);
  const gauss = () => {
    const u = Math.max(rng.next(), 1e-12);
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * rng.next());
  };
  const residualScale = 1 / Math.sqrt(2 * config.nLayers);
  for (const t of layout.tensors) {
    const base = at + t.offset;
    if (!t.decay) {
      into.fill(1, base, base + t.size);
      continue;
    }
    const s = /attn_output|ffn_down/.test(t.name) ? std * residualScale : std;
    for (let i = 0; i < t.size; i++) into[base + i] = s * gauss();
  }
}
