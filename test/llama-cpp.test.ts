/**
 * kvslim's logits against llama.cpp's (node-llama-cpp, CPU, f32 KV cache) on random-weight GGUF models:
 * GQA, MQA, qwen2 with biases, a head dim ≠ d_model / heads; f32, f16, bf16 and q8_0 weights; at
 * positions from the first token to after 1,000 tokens of context.
 *
 * Compared: log-probabilities over the whole vocabulary (node-llama-cpp exposes probabilities, not raw
 * logits). Both sides compute the same function — llama.cpp's dot types: bf16-rounded activations for
 * bf16 weights, q8_0-quantized activations for q8_0 weights, f32 otherwise — in a different summation
 * order. For f16 weights llama.cpp's dot type depends on the CPU (f16-rounded activations on most x86
 * CPUs, f32 with AMX): a probe on short sequences finds which, and kvslim computes the same one.
 */
import fs from "node:fs";
import { afterAll, beforeAll, describe, test } from "vitest";
import type { DType } from "../src/memory/dtype.js";
import { loadModel } from "../src/model/model.js";
import { expectErrorsByPosition, expectF16Mode, f16ErrorsBySequence, llamaCppLogits, loadLlamaCppModel, logSoftmax, maxAbsDiff } from "./helpers/llama-cpp.js";
import { SHAPES, randomTokens, tempDir, writeTestGguf } from "./helpers/models.js";

const CONTEXT = 1100;
const POSITIONS = [0, 1, 2, 31, 63, 64, 65, 200, 511, 512, 1099];
const TOLERANCE = 1e-5;
/**
 * bf16 and q8_0 round activations: a last-bit difference upstream (summation order) can flip one rounded
 * value, which moves that position's log-probabilities by up to a few 1e-2 (seen: 4e-2). So for them
 * the typical position must agree to TOLERANCE (median) and every position within FLIP_BOUND.
 */
const FLIP_BOUND: Record<DType, number> = { f32: TOLERANCE, f16: TOLERANCE, bf16: 0.05, q8_0: 0.05 };
/** The f16 probe: independent two-token sequences (see f16ErrorsBySequence for why short). */
const F16_PROBE = { sequences: 24, length: 2 };

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

describe("next-token probabilities match llama.cpp", () => {
  for (const [shape, dtype] of cases) {
    const f16 = dtype === "f16";
    const bounds = FLIP_BOUND[dtype] === TOLERANCE ? `max |Δ log p| ≤ ${TOLERANCE}` : `median |Δ log p| ≤ ${TOLERANCE}, max ≤ ${FLIP_BOUND[dtype]}`;
    const f16Note = `; first llama.cpp's f16 dot type from ${F16_PROBE.sequences} ${F16_PROBE.length}-token sequences (median ≤ ${TOLERANCE}, max ≤ ${FLIP_BOUND.bf16}; the other mode ≥ 10×), the long run only when it keeps f32 activations`;
    test(`${shape} ${dtype}: next-token log-probabilities at ${POSITIONS.length} positions up to ${CONTEXT} tokens (${bounds})${f16 ? f16Note : ""}`, async () => {
      const m = writeTestGguf(dir, `${shape}-${dtype}`, SHAPES[shape], dtype);
      const V = m.config.vocabSize;
      const tokens = randomTokens(CONTEXT, V);
      const ref = await loadLlamaCppModel(m.path);
      let expected: Map<number, Float32Array>;
      try {
        if (f16) {
          const sequences = Array.from({ length: F16_PROBE.sequences }, (_, i) => tokens.slice(i * F16_PROBE.length, (i + 1) * F16_PROBE.length));
          const mode = expectF16Mode(await f16ErrorsBySequence(ref, m.path, sequences, V), { median: TOLERANCE, max: FLIP_BOUND.bf16 });
          // f16-rounded activations make long sequences diverge at the first rounding flip (f16ErrorsBySequence):
          // the probe's short sequences are the comparison then. f32 activations have no flips: compare the long run.
          if (mode === "f16") return;
        }
        expected = await llamaCppLogits(ref, tokens, POSITIONS, V);
      } finally {
        await ref.dispose();
      }
      const model = await loadModel(m.path, { contextSize: CONTEXT });
      const session = model.createSession();
      const all = session.evaluate(tokens, true);
      const errors = POSITIONS.map((p) => maxAbsDiff(logSoftmax(all.subarray(p * V, (p + 1) * V)), expected.get(p)!));
      session.dispose();
      model.dispose();
      expectErrorsByPosition(errors, { median: TOLERANCE, max: FLIP_BOUND[dtype] });
    });
  }
});
