/**
 * Runs one cell of the grid: a task's samples on a model with one attention method. The context is
 * prefilled (dense for every method), then each question is answered greedily or the reference scored
 * token by token, the method active at every decode step. The KV cache's counters give the bytes each
 * decode step read and wrote and what dense attention would have moved over the same positions.
 */
import type { AttentionSpec } from "../attention/method.js";
import type { Model } from "../model/model.js";
import type { Session } from "../model/session.js";
import { bitsPerCharacter, negativeLogLikelihood, score } from "./metrics.js";
import type { BpcSample, GenerationSample, Sample } from "./task.js";

export interface SampleResult {
  id: string;
  meta: Record<string, string | number>;
  /** The sample's score: the mean over its questions, or its bits per character. */
  score: number;
  /** What the model generated, per question (not for bpc). */
  outputs?: string[];
}

export interface CellMeasure {
  results: SampleResult[];
  /** KV bytes read + written per decode step, as the cache counted them, and dense's over the same positions. */
  kvBytesPerStep: number;
  denseBytesPerStep: number;
  /** KV bytes the cache held per token at the end of each sample, averaged. */
  kvStoredPerToken: number;
  decodeTokensPerSecond: number;
  decodeSteps: number;
}

/** The method for a sample whose prompt (context and question) is n tokens: budgets follow the prompt. */
export type SpecFor = (promptTokens: number) => AttentionSpec;

export async function runCell(
  model: Model,
  spec: SpecFor,
  samples: readonly Sample[],
  onSample?: () => void,
): Promise<CellMeasure> {
  const traffic = { steps: 0, read: 0, written: 0, denseRead: 0, denseWritten: 0 };
  let stored = 0;
  let decodeSeconds = 0;
  const results: SampleResult[] = [];
  for (const sample of samples) {
    const one = sample.kind === "bpc" ? await runBpc(model, spec, sample) : await runGeneration(model, spec, sample);
    results.push(one.result);
    for (const key of Object.keys(traffic) as (keyof typeof traffic)[]) traffic[key] += one.traffic[key];
    stored += one.storedPerToken;
    decodeSeconds += one.decodeSeconds;
    onSample?.();
  }
  const steps = traffic.steps;
  return {
    results,
    kvBytesPerStep: steps > 0 ? (traffic.read + traffic.written) / steps : 0,
    denseBytesPerStep: steps > 0 ? (traffic.denseRead + traffic.denseWritten) / steps : 0,
    kvStoredPerToken: samples.length > 0 ? stored / samples.length : 0,
    decodeTokensPerSecond: decodeSeconds > 0 ? steps / decodeSeconds : 0,
    decodeSteps: steps,
  };
}

interface OneSample {
  result: SampleResult;
  traffic: Session["cache"]["traffic"];
  storedPerToken: number;
  decodeSeconds: number;
}

/** Prefills the context into a new session (BOS as the tokenizer says), its method chosen for the prompt's length. */
function prefilled(model: Model, spec: SpecFor, context: string, more: number): Session {
  const ids = model.tokenizer.encode(context, { addBos: model.tokenizer.addBos });
  const session = model.createSession({ attention: spec(ids.length + more) });
  try {
    if (ids.length > 0) session.evaluate(ids);
    return session;
  } catch (e) {
    session.dispose();
    throw e;
  }
}

/**
 * Each question is asked after the context. With one question (the paper's tasks, RULER), or a method that
 * evicts, context and question are one prompt: prefilled together, so an evicting method compacts with the
 * question already seen, as in the SparQ paper's comparison. Several questions on one context (--data) share
 * its prefill, the session rewinding to the context's end after each answer (kvpress's setting); a method
 * that evicts cannot rewind, so it prefills context and question again for each.
 */
async function runGeneration(model: Model, spec: SpecFor, sample: GenerationSample): Promise<OneSample> {
  const tok = model.tokenizer;
  const outputs: string[] = [];
  const scores: number[] = [];
  const traffic = { steps: 0, read: 0, written: 0, denseRead: 0, denseWritten: 0 };
  let storedPerToken = 0;
  let decodeSeconds = 0;
  const contextIds = tok.encode(sample.context, { addBos: tok.addBos });
  const questionIds = sample.questions.map((q) => tok.encode(q.prompt, { addBos: false }));
  const method = spec(contextIds.length + Math.max(...questionIds.map((q) => q.length))).method;
  const shared = sample.questions.length > 1 && method !== "h2o" && method !== "streaming";
  let session: Session | null = null;
  try {
    for (const [i, q] of sample.questions.entries()) {
      let prompt: number[];
      if (shared && session !== null) {
        session.rewind(session.tokens.length - contextIds.length);
        prompt = questionIds[i];
      } else if (shared) {
        session = prefilled(model, spec, sample.context, questionIds[i].length);
        prompt = questionIds[i];
      } else {
        session?.dispose();
        session = model.createSession({ attention: spec(contextIds.length + questionIds[i].length) });
        prompt = [...contextIds, ...questionIds[i]];
      }
      const before = { ...session.cache.traffic };
      let text = "";
      const run = session.generate(prompt, { maxTokens: q.maxNewTokens, temperature: 0 });
      let next = await run.next();
      while (!next.done) {
        text += next.value.text;
        next = await run.next();
      }
      decodeSeconds += next.value.generateSeconds;
      const after = session.cache.traffic;
      for (const key of Object.keys(traffic) as (keyof typeof traffic)[]) traffic[key] += after[key] - before[key];
      storedPerToken += session.cache.usedBytes / session.tokens.length;
      outputs.push(text);
      scores.push(score(q.metric, text, q.answers));
    }
  } finally {
    session?.dispose();
  }
  const n = sample.questions.length;
  return {
    result: { id: sample.id, meta: sample.meta, score: scores.reduce((a, b) => a + b, 0) / n, outputs },
    traffic,
    storedPerToken: storedPerToken / n,
    decodeSeconds,
  };
}

async function runBpc(model: Model, spec: SpecFor, sample: BpcSample): Promise<OneSample> {
  const tok = model.tokenizer;
  const session = prefilled(model, spec, sample.context, 0);
  try {
    const reference = tok.encode(sample.reference, { addBos: false });
    const before = { ...session.cache.traffic };
    // The logits after the context predict the reference's first token; each reference token is then one
    // decode step (the method active), whose logits predict the next.
    let logits = session.evaluate(reference.slice(0, 1));
    let nats = 0;
    const t0 = performance.now();
    for (let i = 0; i < reference.length; i++) {
      if (i > 0) logits = session.evaluate([reference[i]]);
      if (i + 1 < reference.length) nats += negativeLogLikelihood(logits, reference[i + 1]);
    }
    const decodeSeconds = (performance.now() - t0) / 1000;
    const after = session.cache.traffic;
    const traffic = { steps: 0, read: 0, written: 0, denseRead: 0, denseWritten: 0 };
    for (const key of Object.keys(traffic) as (keyof typeof traffic)[]) traffic[key] = after[key] - before[key];
    // Scored: the reference's characters after its first token (which the context's last logits would
    // predict across the tokenization boundary, so it is given, not scored).
    const scoredChars = tok.decode(reference.slice(1)).length;
    return {
      result: { id: sample.id, meta: sample.meta, score: bitsPerCharacter(nats, scoredChars) },
      traffic,
      storedPerToken: session.cache.usedBytes / session.tokens.length,
      decodeSeconds,
    };
  } finally {
    session.dispose();
  }
}
