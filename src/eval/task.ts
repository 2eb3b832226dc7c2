/**
 * What an evaluation task produces: samples, each a long context (prefilled, dense for every method, as the
 * SparQ paper and its baselines do) followed either by questions answered by greedy generation with the
 * method active, or by a reference text scored token by token with the method active (bits per character).
 */
import type { TextTokenizer } from "../tokenizer/tokenizer.js";
import type { Metric } from "./metrics.js";

export interface Question {
  /** Appended to the context (after the previous question's turn is forgotten). */
  prompt: string;
  /** Accepted answers (the first is the expected continuation for repetition). */
  answers: string[];
  maxNewTokens: number;
  metric: Exclude<Metric, "bpc">;
}

export interface GenerationSample {
  kind: "generate";
  id: string;
  context: string;
  questions: Question[];
  /** What the report groups by: length in tokens, depth, task variant. */
  meta: Record<string, string | number>;
}

export interface BpcSample {
  kind: "bpc";
  id: string;
  /** Prefilled before the reference. */
  context: string;
  /** Teacher-forced, one token at a time, the method active; scored in bits per character. */
  reference: string;
  meta: Record<string, string | number>;
}

export type Sample = GenerationSample | BpcSample;

/** What a task generator gets: the model's tokenizer and context, the seed, the sample count and its own options. */
export interface TaskContext {
  tokenizer: TextTokenizer;
  /** Positions the model may use: a sample's context, question and answer must fit. */
  contextSize: number;
  seed: number;
  samples: number;
}

export interface TaskSamples {
  samples: Sample[];
  /** What was left out and why (lengths that do not fit the model's context), for the report. */
  skipped: string[];
}

/**
 * The context length a task can use: `requested`, or less so that `reserve` tokens (question and answer)
 * still fit the model's context; shortening is said in `skipped` ("TASK at N tokens: shortened to M to …").
 */
export function fitLength(
  task: string,
  requested: number,
  contextSize: number,
  reserve: number,
  why: string,
): { length: number; skipped: string[] } {
  const length = Math.min(requested, contextSize - reserve);
  return {
    length,
    skipped: length < requested ? [`${task} at ${requested} tokens: shortened to ${length} to ${why}`] : [],
  };
}

/** Positions a one-question prompt takes as the runner encodes it: BOS if the tokenizer adds one, then the context and the question, each encoded on its own. */
export function promptLength(tokenizer: TextTokenizer, context: string, question: string): number {
  return (
    (tokenizer.addBos ? 1 : 0) +
    tokenizer.encode(context, { addBos: false }).length +
    tokenizer.encode(question, { addBos: false }).length
  );
}

/**
 * Filler is sized by counting its pieces, and pieces joined can tokenize to a few more tokens than their sum.
 * This drops filler lines from `lines` (in place), the last one `keep` does not protect first, until
 * `measure(lines)` is at most `length`; false if only protected lines are left and it is still over.
 */
export function dropLinesToFit(
  lines: string[],
  keep: (line: string) => boolean,
  measure: (lines: string[]) => number,
  length: number,
): boolean {
  while (measure(lines) > length) {
    let i = lines.length - 1;
    while (i >= 0 && keep(lines[i])) i--;
    if (i < 0) return false;
    lines.splice(i, 1);
  }
  return true;
}
