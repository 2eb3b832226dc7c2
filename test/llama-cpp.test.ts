/**
 * kvslim's logits against llama.cpp's (node-llama-cpp, CPU, f32 KV cache) on random-weight GGUF models:
 * GQA, MQA, qwen2 with biases, a head dim ≠ d_model / heads; f32, f16, bf16, q8_0 weights and the 4- to 6-bit
 * formats in llama-quantize's mixes (q4_0, q4_1, q5_0, q5_1, q4_k_m, q5_k_m, q6_k files); at
 * positions from the first token to after 1,000 tokens of context.
 *
 * Compared: log-probabilities over the whole vocabulary (node-llama-cpp exposes probabilities, not raw
 * logits). Both sides compute the same function — llama.cpp's dot types: bf16-rounded activations for
 * bf16 weights, q8_0-quantized activations for q8_0, q4_0 and q5_0 weights, q8_1 for q4_1 and q5_1, q8_K
 * for the k-quants, f32 otherwise — in a different summation
 * order. For f16 weights llama.cpp's dot type depends on the CPU (f16-rounded activations on most x86
 * CPUs, f32 with AMX): a probe on short sequences finds which, and kvslim computes the same one.
 *
 * Where activations are rounded (bf16, q8_0, f16 on most CPUs), two summation orders part at the first
 * value that rounds the other way, and where that happens depends on the ggml CPU variant
 * (errorsBySequence). So those dot types are held to the exact bound on short independent sequences, and
 * the long run to the bound of a rounding flip. That still catches a wrong long context: attention, RoPE
 * and the cache are the same code for every weight dtype and meet the exact bound at every position in the
 * f32 cases, and dropping one of 1,100 tokens moves these models' log-probabilities by 0.12–1.2 (measured
 * on llama-gqa bf16 and q8_0 at positions 63–1,099).
 */
import fs from "node:fs";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import type { FileType } from "../src/model/file-types.js";
import { loadModel } from "../src/model/model.js";
import {
  errorsBySequence,
  expectErrorsByPosition,
  expectErrorsBySequence,
  expectF16Mode,
  f16ErrorsBySequence,
  llamaCppLogits,
  loadLlamaCppModel,
  logSoftmax,
  maxAbsDiff,
  type F16Mode,
} from "./helpers/llama-cpp.js";
import { SHAPES, randomTokens, tempDir, writeTestGguf } from "./helpers/models.js";

const CONTEXT = 1100;
const POSITIONS = [0, 1, 2, 31, 63, 64, 65, 200, 511, 512, 1099];
const TOLERANCE = 1e-5;
/**
 * With rounded activations a last-bit difference upstream (summation order) can flip one rounded value,
 * which moves log-probabilities by up to a few 1e-2 (seen: 4e-2); a wrong kernel moves them by ~1.
 */
const FLIP_BOUND = 0.05;
/**
 * The same for files whose matrices meet q8_K activations (the k-quants): one scale per 256 values makes a
 * flipped code a larger step than q8_0's per-32 scale (seen: 6e-2 after 1,000 tokens). Still far below a
 * wrong kernel's ~1, and the short sequences hold such files to the exact bound first.
 */
const FLIP_BOUND_Q8_K = 0.15;
/** Short independent sequences for the rounded dot types (see errorsBySequence for why short). */
const SHORT = { sequences: 24, length: 2 };

const cases: [keyof typeof SHAPES, FileType][] = [
  ["llama-gqa", "f32"],
  ["llama-mqa", "f32"],
  ["llama-odd-head-dim", "f32"],
  ["qwen2-bias", "f32"],
  ["llama-gqa", "f16"],
  ["llama-gqa", "bf16"],
  ["llama-gqa", "q8_0"],
  ["qwen2-bias", "q8_0"],
  // The 4- to 6-bit formats: llama-quantize's mixes (the small shape's 64-wide rows fall back to 32-element
  // formats: q5_0 for q4_k, q8_0 for q6_k; llama-k256 holds q4_k, q5_k and q6_k themselves).
  ["llama-gqa", "q4_0"],
  ["llama-gqa", "q4_1"],
  ["llama-gqa", "q5_0"],
  ["qwen2-bias", "q5_1"],
  ["llama-k256", "q4_k_m"],
  ["llama-k256", "q5_k_m"],
  ["llama-k256", "q6_k"],
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
    const rounded = dtype !== "f32" && dtype !== "f16"; // bf16-rounded or quantized activations
    const flipBound = ["q4_k_s", "q4_k_m", "q5_k_s", "q5_k_m", "q6_k"].includes(dtype) ? FLIP_BOUND_Q8_K : FLIP_BOUND;
    const short = `${SHORT.sequences} ${SHORT.length}-token sequences (median ≤ ${TOLERANCE}, max ≤ ${FLIP_BOUND})`;
    const how =
      dtype === "f32"
        ? `max |Δ log p| ≤ ${TOLERANCE}`
        : dtype === "f16"
          ? `llama.cpp's f16 dot type found on ${short}, the other ≥ 10× off; then max ≤ ${TOLERANCE} with f32 activations, ≤ ${FLIP_BOUND} with f16-rounded ones`
          : `${short}, then max ≤ ${flipBound}`;
    test(`${shape} ${dtype}: next-token log-probabilities at ${POSITIONS.length} positions up to ${CONTEXT} tokens (${how})`, async () => {
      const m = writeTestGguf(dir, `${shape}-${dtype}`, SHAPES[shape], dtype);
      const V = m.config.vocabSize;
      const tokens = randomTokens(CONTEXT, V);
      const sequences = Array.from({ length: SHORT.sequences }, (_, i) =>
        tokens.slice(i * SHORT.length, (i + 1) * SHORT.length),
      );
      const ref = await loadLlamaCppModel(m.path);
      let expected: Map<number, Float32Array>;
      let f16Activations: F16Mode = "f32";
      try {
        if (dtype === "f16")
          f16Activations = expectF16Mode(await f16ErrorsBySequence(ref, m.path, sequences, V), {
            median: TOLERANCE,
            max: FLIP_BOUND,
          });
        if (rounded)
          expectErrorsBySequence(await errorsBySequence(ref, m.path, sequences, V), {
            median: TOLERANCE,
            max: FLIP_BOUND,
          });
        expected = await llamaCppLogits(ref, tokens, POSITIONS, V);
      } finally {
        await ref.dispose();
      }
      const model = await loadModel(m.path, { contextSize: CONTEXT, f16Activations });
      const session = model.createSession();
      const all = session.evaluate(tokens, true);
      const errors = POSITIONS.map((p) => maxAbsDiff(logSoftmax(all.subarray(p * V, (p + 1) * V)), expected.get(p)!));
      session.dispose();
      model.dispose();
      const exact = !rounded && f16Activations === "f32";
      expectErrorsByPosition(errors, { median: exact ? TOLERANCE : flipBound, max: exact ? TOLERANCE : flipBound });
    });
  }
});

/**
 * Quantised KV caches: kvslim's q8_0 and q4_0 caches against llama.cpp's (`-ctk`/`-ctv`, which needs its flash
 * attention for V) on f32 weights. Both quantise each K and V row when it is stored, quantise the query to
 * q8_0 for the K dot products, and read V dequantised; they differ in summation order and in llama.cpp's
 * online softmax. With the head dim a multiple of 64 both rotate Q, K and V by Walsh–Hadamard matrices first
 * (llama.cpp by default; kvslim's "auto"); LLAMA_ATTN_ROT_DISABLE=1 and kvRotation "none" turn it off.
 * A K or V value that lies on a rounding boundary can take the other code in one of them, as with rounded
 * activations (errorsBySequence), so the same two-step check applies: short sequences to the exact bound,
 * the long run to a flip's. An f32 cache, and the other rotation setting, are held off by ≥ 10×: neither is
 * what llama.cpp computed.
 */
describe("quantised KV caches match llama.cpp's, rotated and not", () => {
  for (const kv of ["q8_0", "q4_0"] as const) {
    for (const rotation of ["hadamard", "none"] as const) {
      const llamaKv = kv === "q8_0" ? "Q8_0" : "Q4_0";
      const other = rotation === "none" ? "hadamard" : "none";
      test(`llama-k256 f32 weights, ${kv} K and V, rotation ${rotation}: ${SHORT.sequences} ${SHORT.length}-token sequences (median ≤ ${TOLERANCE}, max ≤ ${FLIP_BOUND}; an f32 cache's and rotation ${other}'s medians ≥ 10× that), then ${POSITIONS.length} positions up to ${CONTEXT} tokens (max ≤ ${FLIP_BOUND})`, async () => {
        // Read by llama.cpp when it creates a context's KV cache (Node's process.env sets the real environment).
        process.env.LLAMA_ATTN_ROT_DISABLE = rotation === "none" ? "1" : "0";
        const m = writeTestGguf(dir, `kv-${kv}-${rotation}`, SHAPES["llama-k256"], "f32");
        const V = m.config.vocabSize;
        const tokens = randomTokens(CONTEXT, V, 7);
        const sequences = Array.from({ length: SHORT.sequences }, (_, i) =>
          tokens.slice(i * SHORT.length, (i + 1) * SHORT.length),
        );
        const ref = await loadLlamaCppModel(m.path);
        const median = (e: number[]) => [...e].sort((a, b) => a - b)[e.length >> 1];
        let expected: Map<number, Float32Array>;
        try {
          const same = await errorsBySequence(
            ref,
            m.path,
            sequences,
            V,
            { kvDtype: kv, kvRotation: rotation },
            llamaKv,
          );
          expectErrorsBySequence(same, { median: TOLERANCE, max: FLIP_BOUND });
          for (const options of [{ kvDtype: "f32" as const }, { kvDtype: kv, kvRotation: other }]) {
            const off = await errorsBySequence(ref, m.path, sequences, V, options, llamaKv);
            expect(
              median(off),
              `${JSON.stringify(options)}: ${off.map((e) => e.toExponential(1)).join(" ")}`,
            ).toBeGreaterThanOrEqual(10 * TOLERANCE);
          }
          expected = await llamaCppLogits(ref, tokens, POSITIONS, V, 1, llamaKv);
        } finally {
          await ref.dispose();
          delete process.env.LLAMA_ATTN_ROT_DISABLE;
        }
        const model = await loadModel(m.path, { contextSize: CONTEXT, kvDtype: kv, kvRotation: rotation });
        const session = model.createSession();
        const all = session.evaluate(tokens, true);
        const errors = POSITIONS.map((p) => maxAbsDiff(logSoftmax(all.subarray(p * V, (p + 1) * V)), expected.get(p)!));
        session.dispose();
        model.dispose();
        expectErrorsByPosition(errors, { median: FLIP_BOUND, max: FLIP_BOUND });
      });
    }
  }
});
