/**
 * needle: one sentence with a four-digit number hidden at a depth of held-out filler text of a given length
 * in tokens, then a question whose answer restates the fact up to the number (the passkey form: "… A: the
 * secret number of Maria is"), so the model has to find the number and copy it. Score: prefix match of the
 * generated text against the number. One sample per (length, depth, repeat); the report draws a length ×
 * depth heatmap per method. A length whose prompt and answer do not fit the context is skipped, and said so.
 */
import { Rng } from "../../model/sampler.js";
import {
  dropLinesToFit,
  fitLength,
  promptLength,
  type GenerationSample,
  type TaskContext,
  type TaskSamples,
} from "../task.js";
import { fillerTokens, randomInt, tokenCount } from "../text.js";

const NAMES = [
  "Maria",
  "Ahmed",
  "Chen",
  "Olga",
  "Kwame",
  "Lucia",
  "Ravi",
  "Ingrid",
  "Tomas",
  "Yuki",
  "Amara",
  "Pierre",
];
/** Tokens generated for the answer: a number and a little after it. */
export const NEEDLE_ANSWER_TOKENS = 6;

export interface NeedleOptions {
  /** Context lengths in tokens (filler, needle and question together). */
  lengths: number[];
  /** Depths: this many, evenly spaced from 0 (the start) to 1 (just before the question). */
  depths: number;
}

/** The depth of the d-th of n evenly spaced depths, in [0, 1]. */
export function depthOf(d: number, n: number): number {
  return n === 1 ? 0.5 : d / (n - 1);
}

export function needleSamples(ctx: TaskContext, options: NeedleOptions): TaskSamples {
  const rng = new Rng(ctx.seed);
  const skipped: string[] = [];
  // A length the context cannot hold with the answer is shortened to what it can (and said); lengths that
  // become equal are one.
  const fits: number[] = [];
  for (const requested of options.lengths) {
    const fitted = fitLength(
      "needle",
      requested,
      ctx.contextSize,
      NEEDLE_ANSWER_TOKENS + 1,
      "fit the model's context with the answer",
    );
    skipped.push(...fitted.skipped);
    if (fitted.length < 16)
      skipped.push(
        `needle at ${requested} tokens: the model's context of ${ctx.contextSize} leaves no room for filler`,
      );
    else if (!fits.includes(fitted.length)) fits.push(fitted.length);
  }
  const cells = fits.length * options.depths;
  const samples: GenerationSample[] = [];
  for (let i = 0; cells > 0 && i < Math.max(ctx.samples, cells); i++) {
    const length = fits[Math.floor(i / options.depths) % fits.length];
    const d = i % options.depths;
    const depth = depthOf(d, options.depths);
    const name = NAMES[randomInt(rng, NAMES.length)];
    const code = String(1000 + randomInt(rng, 9000));
    const needle = `The secret number of ${name} is ${code}.`;
    const question = `\nQ: What is the secret number of ${name}? A: the secret number of ${name} is`;
    const room = length - tokenCount(ctx.tokenizer, needle) - tokenCount(ctx.tokenizer, question) - 2;
    const filler = fillerTokens(rng, ctx.tokenizer, room).split("\n");
    // The needle goes between lines, at the line nearest the depth.
    const at = Math.round(depth * filler.length);
    const lines = [...filler.slice(0, at), needle, ...filler.slice(at)];
    dropLinesToFit(
      lines,
      (line) => line === needle,
      (l) => promptLength(ctx.tokenizer, l.join("\n"), question),
      length,
    );
    const context = lines.join("\n");
    samples.push({
      kind: "generate",
      id: `needle-${length}-${d}-${i}`,
      context,
      questions: [{ prompt: question, answers: [code], maxNewTokens: NEEDLE_ANSWER_TOKENS, metric: "prefix" }],
      meta: { length, depth: Math.round(depth * 100) / 100 },
    });
  }
  return { samples, skipped };
}
