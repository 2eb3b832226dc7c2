/**
 * Named training setups: the model shape (vocabulary size filled in from the tokenizer) and the batch,
 * sequence length and learning rate that go with it. Names follow the CLA paper (docs/cla.md):
 * H<head dim>-<MHA|GQA<n>|MQA>[-CLA<s>], here with a size prefix.
 *
 * tiny-mqa-cla2 is kvslim's shipped default model; tiny-mqa its twin with the same query heads and twice
 * the KV cache (every layer its own K/V). Both stay under 20 MB of f32 weights.
 */
import { claShare, type ModelConfig } from "../model/config.js";
import { llamaConfig } from "../model/synthetic.js";

export interface TrainPreset {
  /** The model; vocabSize is replaced by the tokenizer's. */
  model: ModelConfig;
  batch: number; // B sequences per step
  seqLen: number; // T tokens per sequence
  lr: number; // peak learning rate
  vocab: number; // vocabulary size of the tokenizer trained for it
}

const tiny = (over: Partial<ModelConfig>): ModelConfig =>
  llamaConfig({
    dModel: 256,
    nLayers: 6,
    nHeads: 4,
    nKvHeads: 1,
    ffnDim: 576,
    vocabSize: 4096,
    contextLength: 512,
    tiedEmbeddings: true,
    ...over,
  });

export const TRAIN_PRESETS = {
  /** H64-MQA-CLA2, 6 layers, d_model 256: the default model (≈ 4.6M parameters). */
  "tiny-mqa-cla2": () => ({
    model: tiny({ kvSource: claShare(6, 2), kvNorm: true }),
    batch: 8,
    seqLen: 512,
    lr: 2e-3,
    vocab: 4096,
  }),
  /** H64-MQA: the same with a K/V per layer (twice the cache). */
  "tiny-mqa": () => ({ model: tiny({}), batch: 8, seqLen: 512, lr: 2e-3, vocab: 4096 }),
  /**
   * H32-MQA: the equal-cache baseline of the CLA paper. Smaller heads (8 query heads of 32, one K/V head of
   * 32 per layer) give the same 768 B/token as tiny-mqa-cla2, with about the same parameter count.
   */
  "tiny-h32-mqa": () => ({ model: tiny({ nHeads: 8, headDim: 32 }), batch: 8, seqLen: 512, lr: 2e-3, vocab: 4096 }),
  /** H64-GQA2-CLA2. */
  "tiny-gqa2-cla2": () => ({
    model: tiny({ nKvHeads: 2, kvSource: claShare(6, 2), kvNorm: true }),
    batch: 8,
    seqLen: 512,
    lr: 2e-3,
    vocab: 4096,
  }),
  /** A model small enough for tests: trains a step in milliseconds. */
  "micro-cla2": () => ({
    model: llamaConfig({
      dModel: 32,
      nLayers: 2,
      nHeads: 2,
      nKvHeads: 1,
      ffnDim: 64,
      vocabSize: 512,
      contextLength: 64,
      tiedEmbeddings: true,
      kvSource: claShare(2, 2),
      kvNorm: true,
    }),
    batch: 2,
    seqLen: 32,
    lr: 3e-3,
    vocab: 300,
  }),
} satisfies Record<string, () => TrainPreset>;

export type TrainPresetName = keyof typeof TRAIN_PRESETS;

export function isTrainPreset(name: string): name is TrainPresetName {
  return Object.hasOwn(TRAIN_PRESETS, name);
}
