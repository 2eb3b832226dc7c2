/**
 * Named model shapes. `reference` is the benchmark shape every issue compares on (≈ 97M parameters:
 * llama, d_model 768, 12 layers, 12 heads MHA, FFN 2048, vocab 8192). The others are small enough
 * for tests and the demo; llama-3.2-1b is a real model's shape, for memory checks.
 */
import { claShare, type ModelConfig } from "./config.js";
import { llamaConfig } from "./synthetic.js";

export const PRESETS = {
  /** A few MB: the model `npm ci` writes so the CLI runs on a fresh clone. */
  tiny: () =>
    llamaConfig({ dModel: 128, nLayers: 4, nHeads: 4, nKvHeads: 1, ffnDim: 384, vocabSize: 2048, contextLength: 4096 }),
  "tiny-cla2": () => ({
    ...llamaConfig({
      dModel: 128,
      nLayers: 4,
      nHeads: 4,
      nKvHeads: 1,
      ffnDim: 384,
      vocabSize: 2048,
      contextLength: 4096,
    }),
    kvSource: claShare(4, 2),
  }),
  reference: () =>
    llamaConfig({ dModel: 768, nLayers: 12, nHeads: 12, ffnDim: 2048, vocabSize: 8192, contextLength: 32768 }),
  /** Llama-3.2-1B's shape (1.24B parameters, GQA 32/8, tied embeddings, Llama-3 RoPE scaling): for memory checks. */
  "llama-3.2-1b": () =>
    llamaConfig({
      dModel: 2048,
      nLayers: 16,
      nHeads: 32,
      nKvHeads: 8,
      ffnDim: 8192,
      vocabSize: 128256,
      contextLength: 131072,
      ropeTheta: 500000,
      ropeScaling: { type: "llama3", factor: 32, lowFreqFactor: 1, highFreqFactor: 4, originalContext: 8192 },
      tiedEmbeddings: true,
      normEps: 1e-5,
    }),
} satisfies Record<string, () => ModelConfig>;

export type PresetName = keyof typeof PRESETS;

export function isPreset(name: string): name is PresetName {
  return Object.hasOwn(PRESETS, name);
}
