/**
 * kvslim's logits against llama.cpp's (node-llama-cpp, CPU, f32 KV cache) on random-weight GGUF models:
 * GQA, MQA, qwen2 with biases, a head dim ≠ d_model / heads; f32, f16, bf16 and q8_0 weights; at
 * positions from the first token to after 1,000 tokens of context.
 *
 * Tolerances are relative to the largest logit: both sides compute the same function (llama.cpp's
 * dot types: f16 / bf16 / q8_0 activations for those weights) in a different summation order.
 */
import fs from "node:fs";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import type { DType } from "../src/memory/dtype.js";
import { loadModel } from "../src/model/model.js";
import { llamaCppLogits, loadLlamaCppModel } from "./helpers/llama-cpp.js";
import { SHAPES, randomTokens, relMaxDiff, tempDir, writeTestGguf } from "./helpers/models.js";

const CONTEXT = 1100;
const POSITIONS = [0, 1, 2, 31, 63, 64, 65, 200, 511, 512, 1099];
const TOLERANCE: Record<DType, number> = { f32: 1e-5, f16: 1e-5, bf16: 1e-5, q8_0: 1e-5 };

const cases: [keyof typeof SHAPES, DType][] = [
  ["llama-gqa", "f32"],
  ["llama-mqa", "f32"],
  ["llama-odd-head-dim", "f32"],
  ["qwen2-bias", "f32"],
  ["llama-gqa", "f16"],
  ["llama-gqa", "bf16"],
  ["llama-gqa", "q8_0"],
  ["qwen2-bias", "q8_0"],
];

let dir: string;
beforeAll(() => {
  dir = tempDir();
});
afterAll(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

describe("logits match llama.cpp", () => {
  for (const [shape, dtype] of cases) {
    test(`${shape} ${dtype}: next-token logits at ${POSITIONS.length} positions up to ${CONTEXT} tokens (rel max diff ≤ ${TOLERANCE[dtype]})`, async () => {
      const m = writeTestGguf(dir, `${shape}-${dtype}`, SHAPES[shape], dtype);
      const tokens = randomTokens(CONTEXT, m.config.vocabSize);
      const ref = await loadLlamaCppModel(m.path);
      let expected: Map<number, Float32Array>;
      try {
        expected = await llamaCppLogits(ref, tokens, POSITIONS, m.config.vocabSize);
      } finally {
        await ref.dispose();
      }
      const model = await loadModel(m.path, { contextSize: CONTEXT });
      const session = model.createSession();
      const all = session.evaluate(tokens, true);
      const V = m.config.vocabSize;
      const errors = POSITIONS.map((p) => relMaxDiff(all.subarray(p * V, (p + 1) * V), expected.get(p)!));
      session.dispose();
      model.dispose();
      expect(Math.max(...errors), `errors by position: ${errors.map((e) => e.toExponential(1)).join(" ")}`).toBeLessThanOrEqual(TOLERANCE[dtype]);
    });
  }
});
