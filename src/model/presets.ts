/**
 * Named model shapes. `reference` is the benchmark shape every issue compares on (≈ 97M parameters:
 * llama, d_model 768, 12 layers, 12 heads MHA, FFN 2048, vocab 8192). The others are small enough
 * for tests and the demo.
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
} satisfies Record<string, () => ModelConfig>;

export type PresetName = keyof typeof PRESETS;

export function isPreset(name: string): name is PresetName {
  return Object.hasOwn(PRESETS, name);
}
