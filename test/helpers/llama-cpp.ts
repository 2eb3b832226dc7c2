/**
 * llama.cpp (through node-llama-cpp, CPU only) as the independent reference for model outputs.
 * One Llama instance per test process; models are loaded per file and disposed by the caller.
 */
import { getLlama, LlamaLogLevel, type Llama, type LlamaModel } from "node-llama-cpp";
import { expect } from "vitest";
import { loadModel, type LoadOptions } from "../../src/model/model.js";

let llamaPromise: Promise<Llama> | null = null;

export function llamaCpp(): Promise<Llama> {
  llamaPromise ??= getLlama({ gpu: false, build: "never", logLevel: LlamaLogLevel.error, progressLogs: false });
  return llamaPromise;
}

export async function loadLlamaCppModel(modelPath: string): Promise<LlamaModel> {
  const llama = await llamaCpp();
  return llama.loadModel({ modelPath, gpuLayers: 0 });
}

/** llama.cpp's KV cache types kvslim compares against (quantised V needs its flash attention). */
export type LlamaCppKv = "F32" | "Q8_0" | "Q4_0";

/**
 * Next-token log-probabilities from llama.cpp after each of `positions` (indices into tokens), with an f32
 * KV cache by default, so the only differences from kvslim are summation order; a q8_0 or q4_0 cache (K and
 * V) runs llama.cpp's flash attention, the path that reads a quantised V.
 */
export async function llamaCppLogits(
  model: LlamaModel,
  tokens: number[],
  positions: number[],
  vocabSize: number,
  threads = 1,
  kv: LlamaCppKv = "F32",
): Promise<Map<number, Float32Array>> {
  const context = await model.createContext({
    contextSize: Math.max(256, tokens.length + 16),
    batchSize: 512,
    threads,
    flashAttention: kv !== "F32",
    experimentalKvCacheKeyType: kv,
    experimentalKvCacheValueType: kv,
  });
  try {
    const sequence = context.getSequence();
    const want = new Set(positions);
    // Full-vocabulary probabilities with no sampling filters: softmax of the raw logits.
    const next = { probabilities: true, options: { temperature: 1, topK: 0, topP: 1, minP: 0 } };
    const input = tokens.map((t, i) => (want.has(i) ? ([t, { generateNext: next }] as const) : t));
    // eslint-disable-next-line @typescript-eslint/no-explicit-any
    const output = await sequence.controlledEvaluate(input as any);
    const result = new Map<number, Float32Array>();
    for (const pos of positions) {
      const item = output[pos];
      const probs = item?.next?.probabilities as Map<number, number> | undefined;
      if (!probs) throw new Error(`llama.cpp returned no probabilities at position ${pos}`);
      if (probs.size !== vocabSize)
        throw new Error(`llama.cpp returned ${probs.size} probabilities at position ${pos}, expected ${vocabSize}`);
      // log p = logit − logsumexp(logits): the logits up to one constant per position.
      const arr = new Float32Array(vocabSize);
      for (const [id, p] of probs) arr[id] = Math.log(p);
      result.set(pos, arr);
    }
    return result;
  } finally {
    await context.dispose();
  }
}

/** log softmax of a logits row, in float64. */
export function logSoftmax(logits: Float32Array): Float64Array {
  let max = -Infinity;
  for (const v of logits) max = Math.max(max, v);
  let sum = 0;
  for (const v of logits) sum += Math.exp(v - max);
  const lse = max + Math.log(sum);
  return Float64Array.from(logits, (v) => v - lse);
}

export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let worst = 0;
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i] - b[i]));
  return worst;
}

/** The middle value (the upper one of an even count). */
function median(values: number[]): number {
  return [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)];
}

/**
 * Log-probability errors against llama.cpp, one per position: the median within `median`, the worst within `max`
 * (one position may sit on a rounding flip); a failure lists every position's error.
 */
export function expectErrorsByPosition(errors: number[], bounds: { median: number; max: number }): void {
  const report = `errors by position: ${errors.map((e) => e.toExponential(1)).join(" ")}`;
  expect(median(errors), report).toBeLessThanOrEqual(bounds.median);
  expect(Math.max(...errors), report).toBeLessThanOrEqual(bounds.max);
}

/** The dot type of activations meeting f16 weights: kvslim's f16Activations load option. */
export type F16Mode = "f32" | "f16";

/**
 * Worst |Δ log p| per sequence between kvslim (loaded with `options`) and llama.cpp, on short independent
 * sequences: the comparison for dot types that round activations (bf16, q8_0, and f16 on most x86 CPUs).
 *
 * Short, because with rounded activations any two summation orders diverge once one value lands on the
 * other side of a rounding boundary: from then on each later position's K/V differ by about the rounding
 * step, more values flip, and the log-probabilities differ by ~1e-3 for the rest of the sequence (seen with
 * f16 between kvslim's own WebAssembly and reference kernels from position 12 on, and against llama.cpp
 * from position 2; with bf16 against llama.cpp's SSE4.2 and AVX variants from position 63 on, but not its
 * AVX2 one). Where the first flip comes depends on the summation order, so on the ggml CPU variant. A
 * two-token sequence flips rarely (1 in 24 seen), so the median over sequences is held to the exact bound.
 */
export async function errorsBySequence(
  ref: LlamaModel,
  modelPath: string,
  sequences: number[][],
  vocabSize: number,
  options: LoadOptions = {},
  kv: LlamaCppKv = "F32",
): Promise<number[]> {
  const errors: number[] = [];
  const longest = Math.max(...sequences.map((s) => s.length));
  const model = await loadModel(modelPath, { contextSize: longest, threads: 1, ...options });
  try {
    for (const tokens of sequences) {
      const positions = tokens.map((_, p) => p);
      const expected = await llamaCppLogits(ref, tokens, positions, vocabSize, 1, kv);
      const session = model.createSession();
      const all = session.evaluate(tokens, true);
      const V = vocabSize;
      errors.push(
        Math.max(...positions.map((p) => maxAbsDiff(logSoftmax(all.subarray(p * V, (p + 1) * V)), expected.get(p)!))),
      );
      session.dispose();
    }
  } finally {
    model.dispose();
  }
  return errors;
}

/**
 * llama.cpp's dot type for f16 weights depends on the ggml CPU variant it loads and, with AMX, on the
 * matrix shape (docs/llama-cpp.md): activations are rounded to f16 first on most x86 CPUs and kept f32 on
 * others. kvslim computes either (its f16Activations load option): errorsBySequence for both.
 */
export async function f16ErrorsBySequence(
  ref: LlamaModel,
  modelPath: string,
  sequences: number[][],
  vocabSize: number,
): Promise<Record<F16Mode, number[]>> {
  return {
    f32: await errorsBySequence(ref, modelPath, sequences, vocabSize, { f16Activations: "f32" }),
    f16: await errorsBySequence(ref, modelPath, sequences, vocabSize, { f16Activations: "f16" }),
  };
}

/** errorsBySequence's verdict: the median within `median`, the worst within `max` (a sequence may sit on a flip). */
export function expectErrorsBySequence(errors: number[], bounds: { median: number; max: number }): void {
  const report = `worst |Δ log p| by sequence: ${errors.map((e) => e.toExponential(1)).join(" ")}`;
  expect(median(errors), report).toBeLessThanOrEqual(bounds.median);
  expect(Math.max(...errors), report).toBeLessThanOrEqual(bounds.max);
}

/**
 * The f16 mode llama.cpp computed, from f16ErrorsBySequence: the matched mode's median within `median`
 * and worst within `max` (a sequence may sit on a rounding flip), the other mode's median at least 10 ×
 * `median` away (so the choice is never close and the probe can tell the modes apart).
 */
export function expectF16Mode(errors: Record<F16Mode, number[]>, bounds: { median: number; max: number }): F16Mode {
  const mode: F16Mode = median(errors.f16) < median(errors.f32) ? "f16" : "f32";
  const other: F16Mode = mode === "f16" ? "f32" : "f16";
  const report = `worst |Δ log p| by sequence with ${mode} activations: ${errors[mode].map((e) => e.toExponential(1)).join(" ")}; with ${other}: ${errors[other].map((e) => e.toExponential(1)).join(" ")}`;
  expect(median(errors[mode]), report).toBeLessThanOrEqual(bounds.median);
  expect(Math.max(...errors[mode]), report).toBeLessThanOrEqual(bounds.max);
  expect(median(errors[other]), report).toBeGreaterThanOrEqual(10 * bounds.median);
  return mode;
}
