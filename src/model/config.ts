/**
 * The model configuration: one flat, typed object, plus the values derived from it.
 *
 * Shape letters used across kvslim:
 *   L layers, S positions, D model dim, H query heads, G KV heads, Hd head dim, F FFN dim, V vocab.
 *
 * Cross-Layer Attention (docs/cla.md) is a property of the KV layout: kvSource[l] is the layer whose
 * K/V layer l attends over. Layer l is a producer when kvSource[l] === l; only producers have K/V
 * projections and cache slots. claShare(s) builds the map for groups of s adjacent layers.
 */
import { FormatError, UnsupportedError } from "../errors.js";

export const ARCHITECTURES = ["llama", "qwen2"] as const;
export type Architecture = (typeof ARCHITECTURES)[number];

/** Llama-3 style frequency-dependent RoPE scaling. */
export interface RopeScalingLlama3 {
  type: "llama3";
  factor: number;
  lowFreqFactor: number;
  highFreqFactor: number;
  originalContext: number;
}

export interface ModelConfig {
  architecture: Architecture;
  vocabSize: number; // V
  dModel: number; // D
  nLayers: number; // L
  nHeads: number; // H query heads
  nKvHeads: number; // G KV heads (H for MHA, 1 for MQA)
  headDim: number; // Hd (not necessarily D / H)
  ffnDim: number; // F, SwiGLU hidden size
  contextLength: number; // positions the model was trained for
  normEps: number; // RMSNorm epsilon
  ropeTheta: number; // RoPE base frequency
  ropeDim: number; // rotated dims per head (≤ Hd)
  /** Which dims pair up under RoPE: (2i, 2i+1) for GGUF llama, (i, i+Hd/2) for qwen2 and HF checkpoints. */
  ropeStyle: "interleaved" | "halves";
  ropeScaling: RopeScalingLlama3 | null;
  qkvBias: boolean; // q, k, v projections carry biases (qwen2)
  tiedEmbeddings: boolean; // the output projection is the token embedding
  /** (L) the layer whose K/V each layer uses; identity without CLA. */
  kvSource: number[];
  /** Producers normalise their K/V input with their own RMSNorm weight (the CLA paper's variant). */
  kvNorm: boolean;
}

/** Values computed from the config, in one place. */
export interface Derived {
  qDim: number; // H * Hd
  kvDim: number; // G * Hd
  groupSize: number; // query heads per KV head, H / G
  producers: number[]; // layers that compute K/V, ascending
  /** (L) cache slot of the K/V each layer reads: producers.indexOf(kvSource[l]). */
  slotOf: number[];
  isProducer: boolean[];
}

export function derive(c: ModelConfig): Derived {
  const producers = c.kvSource.flatMap((src, l) => (src === l ? [l] : []));
  return {
    qDim: c.nHeads * c.headDim,
    kvDim: c.nKvHeads * c.headDim,
    groupSize: c.nHeads / c.nKvHeads,
    producers,
    slotOf: c.kvSource.map((src) => producers.indexOf(src)),
    isProducer: c.kvSource.map((src, l) => src === l),
  };
}

/** kvSource for CLA with groups of `share` adjacent layers; the last group is short when share ∤ L. */
export function claShare(nLayers: number, share: number): number[] {
  return Array.from({ length: nLayers }, (_, l) => l - (l % share));
}

/** The sharing factor if kvSource is uniform CLA-s (1 = no sharing), else null. */
export function claShareOf(kvSource: readonly number[]): number | null {
  for (let s = 1; s <= kvSource.length; s++) {
    if (claShare(kvSource.length, s).every((v, i) => v === kvSource[i])) return s;
  }
  return null;
}

/** KV bytes per token: 2 (K and V) × producers × G × Hd × bytes per element. */
export function kvBytesPerToken(c: ModelConfig, bytesPerElement: number): number {
  return 2 * derive(c).producers.length * c.nKvHeads * c.headDim * bytesPerElement;
}

/** Paper-style name, e.g. H128-MQA-CLA2 (docs/cla.md). */
export function attentionName(c: ModelConfig): string {
  const kind = c.nKvHeads === c.nHeads ? "MHA" : c.nKvHeads === 1 ? "MQA" : `GQA${c.nKvHeads}`;
  const share = claShareOf(c.kvSource);
  const cla = share === 1 ? "" : share === null ? "-CLA(custom)" : `-CLA${share}`;
  return `H${c.headDim}-${kind}${cla}`;
}

/** Checks the config is self-consistent; `source` names the file for the message. */
export function validateConfig(c: ModelConfig, source: string): void {
  const bad = (what: string) => {
    throw new FormatError(`${source}: ${what}`);
  };
  if (!(ARCHITECTURES as readonly string[]).includes(c.architecture)) {
    throw new UnsupportedError(
      `${source}: architecture "${c.architecture}" is not supported; supported: ${ARCHITECTURES.join(", ")}`,
    );
  }
  for (const key of ["qkvBias", "tiedEmbeddings", "kvNorm"] as const) {
    if (typeof c[key] !== "boolean") bad(`${key} must be true or false, found ${JSON.stringify(c[key])}`);
  }
  if (c.ropeStyle !== "interleaved" && c.ropeStyle !== "halves")
    bad(`ropeStyle must be "interleaved" or "halves", found ${JSON.stringify(c.ropeStyle)}`);
  if (c.ropeScaling !== null && (typeof c.ropeScaling !== "object" || c.ropeScaling.type !== "llama3")) {
    bad(`ropeScaling must be null or a llama3 scaling, found ${JSON.stringify(c.ropeScaling)}`);
  }
  if (!Array.isArray(c.kvSource)) bad(`kv_source must be a list of layer indices, found ${JSON.stringify(c.kvSource)}`);
  const positive = [
    "vocabSize",
    "dModel",
    "nLayers",
    "nHeads",
    "nKvHeads",
    "headDim",
    "ffnDim",
    "contextLength",
  ] as const;
  for (const key of positive) {
    if (!Number.isInteger(c[key]) || c[key] <= 0) bad(`${key} must be a positive integer, found ${c[key]}`);
  }
  if (c.nHeads % c.nKvHeads !== 0) {
    bad(`the number of query heads (${c.nHeads}) must be a multiple of the KV heads (${c.nKvHeads})`);
  }
  if (!Number.isInteger(c.ropeDim) || c.ropeDim % 2 !== 0 || c.ropeDim > c.headDim || c.ropeDim <= 0) {
    bad(`rope dimension must be even and in (0, head_dim=${c.headDim}], found ${c.ropeDim}`);
  }
  if (!(c.normEps > 0 && c.normEps < 1)) bad(`the norm epsilon must be a number between 0 and 1, found ${c.normEps}`);
  if (!(c.ropeTheta >= 1) || !Number.isFinite(c.ropeTheta))
    bad(`the RoPE base must be a finite number ≥ 1, found ${c.ropeTheta}`);
  if (c.kvSource.length !== c.nLayers) {
    bad(`kv_source has ${c.kvSource.length} entries, expected one per layer (${c.nLayers})`);
  }
  c.kvSource.forEach((src, l) => {
    if (!Number.isInteger(src) || src < 0 || src > l || c.kvSource[src] !== src) {
      bad(`kv_source[${l}] = ${src}: a layer must read K/V from itself or an earlier producer layer`);
    }
  });
}
