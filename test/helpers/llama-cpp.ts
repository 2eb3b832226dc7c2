/**
 * llama.cpp (through node-llama-cpp, CPU only) as the independent reference for model outputs.
 * One Llama instance per test process; models are loaded per file and disposed by the caller.
 */
import { getLlama, LlamaLogLevel, type Llama, type LlamaModel } from "node-llama-cpp";
import { expect } from "vitest";

let llamaPromise: Promise<Llama> | null = null;

export function llamaCpp(): Promise<Llama> {
  llamaPromise ??= getLlama({ gpu: false, build: "never", logLevel: LlamaLogLevel.error, progressLogs: false });
  return llamaPromise;
}

export async function loadLlamaCppModel(modelPath: string): Promise<LlamaModel> {
  const llama = await llamaCpp();
  return llama.loadModel({ modelPath, gpuLayers: 0 });
}

/**
 * Next-token log-probabilities from llama.cpp after each of `positions` (indices into tokens), with an f32
 * KV cache so the only differences from kvslim are summation order.
 */
export async function llamaCppLogits(model: LlamaModel, tokens: number[], positions: number[], vocabSize: number, threads = 1): Promise<Map<number, Float32Array>> {
  const context = await model.createContext({
    contextSize: Math.max(256, tokens.length + 16),
    batchSize: 512,
    threads,
    flashAttention: false,
    experimentalKvCacheKeyType: "F32",
    experimentalKvCacheValueType: "F32",
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
      if (probs.size !== vocabSize) throw new Error(`llama.cpp returned ${probs.size} probabilities at position ${pos}, expected ${vocabSize}`);
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

/**
 * Log-probability errors against llama.cpp, one per position: the median within `median`, the worst within `max`
 * (one position may sit on a rounding flip); a failure lists every position's error.
 */
export function expectErrorsByPosition(errors: number[], bounds: { median: number; max: number }): void {
  const report = `errors by position: ${errors.map((e) => e.toExponential(1)).join(" ")}`;
  expect([...errors].sort((a, b) => a - b)[Math.floor(errors.length / 2)], report).toBeLessThanOrEqual(bounds.median);
  expect(Math.max(...errors), report).toBeLessThanOrEqual(bounds.max);
}
