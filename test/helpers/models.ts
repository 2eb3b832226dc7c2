/**
 * Small random-weight models written to a temp directory, for tests.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import type { ModelConfig } from "../../src/model/config.js";
import type { FileType } from "../../src/model/file-types.js";
import { llamaConfig, randomWeights, syntheticVocab, writeGgufModel, writeHfModel } from "../../src/model/synthetic.js";

export function tempDir(prefix = "kvslim-test-"): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

export interface TestModel {
  config: ModelConfig;
  weights: ReturnType<typeof randomWeights>;
  path: string;
}

export function writeTestGguf(
  dir: string,
  name: string,
  config: ModelConfig,
  dtype: FileType = "f32",
  seed = 1,
): TestModel {
  const weights = randomWeights(config, { seed });
  const file = path.join(dir, `${name}.gguf`);
  writeGgufModel(file, config, weights, syntheticVocab(config.vocabSize, seed), dtype);
  return { config, weights, path: file };
}

export function writeTestHf(
  dir: string,
  name: string,
  config: ModelConfig,
  dtype: "f32" | "f16" | "bf16" = "f32",
  seed = 1,
): TestModel {
  const weights = randomWeights(config, { seed });
  const out = path.join(dir, name);
  writeHfModel(out, config, weights, syntheticVocab(config.vocabSize, seed), dtype);
  return { config, weights, path: out };
}

/**
 * Shapes the llama.cpp comparison runs on (all matrix widths multiples of 32 so q8_0 and the other 32-element
 * formats apply; llama-k256's are multiples of 256, so the k-quants apply too).
 */
export const SHAPES = {
  "llama-gqa": llamaConfig({ dModel: 64, nLayers: 2, nHeads: 4, nKvHeads: 2, ffnDim: 128, vocabSize: 512 }),
  "llama-mqa": llamaConfig({ dModel: 64, nLayers: 2, nHeads: 4, nKvHeads: 1, ffnDim: 128, vocabSize: 512 }),
  "llama-odd-head-dim": llamaConfig({
    dModel: 64,
    nLayers: 2,
    nHeads: 4,
    nKvHeads: 2,
    headDim: 24,
    ffnDim: 128,
    vocabSize: 512,
  }),
  "qwen2-bias": llamaConfig({
    architecture: "qwen2",
    dModel: 64,
    nLayers: 2,
    nHeads: 4,
    nKvHeads: 2,
    ffnDim: 128,
    vocabSize: 512,
    qkvBias: true,
    ropeTheta: 1e6,
    normEps: 1e-6,
  }),
  "llama-k256": llamaConfig({ dModel: 256, nLayers: 2, nHeads: 4, nKvHeads: 2, ffnDim: 512, vocabSize: 512 }),
} satisfies Record<string, ModelConfig>;

/** A seeded list of token ids in [0, V - 2) (no specials). */
export function randomTokens(n: number, V: number, seed = 7): number[] {
  let s = seed >>> 0;
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out.push(s % (V - 2));
  }
  return out;
}

/** max |a - b| / max |b|: the error relative to the logits' scale. */
export function relMaxDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let diff = 0;
  let scale = 0;
  for (let i = 0; i < b.length; i++) {
    diff = Math.max(diff, Math.abs(a[i] - b[i]));
    scale = Math.max(scale, Math.abs(b[i]));
  }
  return diff / scale;
}
