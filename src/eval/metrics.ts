/**
 * The scores of kvslim's evaluation tasks, as the papers and tools they come from define them:
 *   - prefix match (SparQ's SQuAD/TriviaQA metric): the normalised output starts with a normalised answer;
 *     normalising lower-cases, drops punctuation and quotes, a leading article and extra whitespace;
 *   - contains-all / contains-any (RULER's string_match_all / string_match_part, kvpress's columns): every /
 *     some answer occurs in the output, case-insensitively;
 *   - repetition (SparQ): characters of the output that match the expected continuation before the first
 *     mismatch, leading whitespace stripped from both;
 *   - bits per character (SparQ's WikiText-103): the reference's summed negative log-likelihood in nats,
 *     × log2(e), over its characters.
 * And the 95% interval the report puts beside each mean.
 */
import { Rng } from "../model/sampler.js";

export type Metric = "prefix" | "contains-all" | "contains-any" | "repetition" | "bpc";
export const METRICS: readonly Metric[] = ["prefix", "contains-all", "contains-any", "repetition", "bpc"];

/** Lower case; punctuation and quotes gone; a leading "the", "a" or "an" gone; whitespace runs as one space. */
export function normaliseAnswer(text: string): string {
  const words = text
    .toLowerCase()
    .replace(/[\p{P}\p{S}]/gu, " ")
    .split(/\s+/)
    .filter((w) => w !== "");
  if (words.length > 0 && (words[0] === "the" || words[0] === "a" || words[0] === "an")) words.shift();
  return words.join(" ");
}

/** 1 if the normalised output starts with some normalised non-empty answer (as a whole word or words), else 0. */
export function prefixMatch(output: string, answers: readonly string[]): number {
  const out = normaliseAnswer(output);
  return answers.some((a) => {
    const want = normaliseAnswer(a);
    return want !== "" && (out === want || out.startsWith(want + " "));
  })
    ? 1
    : 0;
}

/** The fraction of answers found in the output, case-insensitively (RULER's string_match_all). */
export function containsAll(output: string, answers: readonly string[]): number {
  if (answers.length === 0) return 0;
  const out = output.toLowerCase();
  return answers.filter((a) => out.includes(a.toLowerCase())).length / answers.length;
}

/** 1 if some answer occurs in the output, case-insensitively (RULER's string_match_part), else 0. */
export function containsAny(output: string, answers: readonly string[]): number {
  const out = output.toLowerCase();
  return answers.some((a) => a !== "" && out.includes(a.toLowerCase())) ? 1 : 0;
}

/** Characters of `output` equal to `expected` before the first mismatch, leading whitespace stripped from both. */
export function repetitionScore(output: string, expected: string): number {
  const a = Array.from(output.trimStart());
  const b = Array.from(expected.trimStart());
  let n = 0;
  while (n < a.length && n < b.length && a[n] === b[n]) n++;
  return n;
}

/** −log p(token) in nats under the softmax of a logits row (float64), and whether the token is the argmax. */
export function negativeLogLikelihood(logits: ArrayLike<number>, token: number): number {
  return tokenScore(logits, token).nats;
}

export function tokenScore(logits: ArrayLike<number>, token: number): { nats: number; argmax: boolean } {
  let max = -Infinity;
  for (let v = 0; v < logits.length; v++) if (logits[v] > max) max = logits[v];
  let sum = 0;
  for (let v = 0; v < logits.length; v++) sum += Math.exp(logits[v] - max);
  return { nats: Math.log(sum) + max - logits[token], argmax: logits[token] === max };
}

/** Bits per character of a reference of `characters` characters whose tokens cost `nats` (summed). */
export function bitsPerCharacter(nats: number, characters: number): number {
  return (nats * Math.LOG2E) / characters;
}

/** The score of one output under a metric with its answers (bpc is scored from log-likelihoods instead). */
export function score(metric: Exclude<Metric, "bpc">, output: string, answers: readonly string[]): number {
  switch (metric) {
    case "prefix":
      return prefixMatch(output, answers);
    case "contains-all":
      return containsAll(output, answers);
    case "contains-any":
      return containsAny(output, answers);
    case "repetition":
      return repetitionScore(output, answers[0] ?? "");
    default:
      return metric satisfies never;
  }
}

export interface Interval {
  mean: number;
  /** The 95% interval of the mean: Wilson's for 0/1 scores, else a percentile bootstrap (2,000 resamples, seeded). */
  low: number;
  high: number;
  n: number;
}

const BOOTSTRAP_RESAMPLES = 2000;

/**
 * Mean and 95% interval of per-sample scores. 0/1 scores get Wilson's score interval, which stays inside
 * [0, 1] and is sound for small n; other scores (characters copied, bits per character) a percentile
 * bootstrap, which stays inside the scores' range however skewed they are. Deterministic.
 */
export function interval(values: readonly number[]): Interval {
  const n = values.length;
  if (n === 0) return { mean: NaN, low: NaN, high: NaN, n };
  const mean = values.reduce((a, b) => a + b, 0) / n;
  const z = 1.959963984540054;
  if (values.every((v) => v === 0 || v === 1)) {
    const centre = (mean + (z * z) / (2 * n)) / (1 + (z * z) / n);
    const half = (z / (1 + (z * z) / n)) * Math.sqrt((mean * (1 - mean)) / n + (z * z) / (4 * n * n));
    return { mean, low: Math.max(0, centre - half), high: Math.min(1, centre + half), n };
  }
  const rng = new Rng(n);
  const means = new Float64Array(BOOTSTRAP_RESAMPLES);
  for (let b = 0; b < BOOTSTRAP_RESAMPLES; b++) {
    let sum = 0;
    for (let i = 0; i < n; i++) sum += values[Math.floor(rng.next() * n)];
    means[b] = sum / n;
  }
  means.sort();
  return {
    mean,
    low: means[Math.floor(0.025 * BOOTSTRAP_RESAMPLES)],
    high: means[Math.ceil(0.975 * BOOTSTRAP_RESAMPLES) - 1],
    n,
  };
}
