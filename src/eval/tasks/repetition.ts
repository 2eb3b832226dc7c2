/**
 * repetition (the SparQ paper's): a long held-out context, then a prompt of at least 128 characters copied
 * from inside it; the model must go on copying. Score: characters of the greedy continuation that match
 * the context's text after the copied prompt, before the first mismatch (leading whitespace stripped).
 * The prompt starts at a word's first character and ends at a word's last, so that it tokenizes as the
 * same words did in the context: a cut inside a word gives the prompt a last token the context never had
 * there, and the task would measure how a model completes a broken word instead of how far it copies.
 */
import { Rng } from "../../model/sampler.js";
import type { GenerationSample, TaskContext, TaskSamples } from "../task.js";
import { fillerTokens, randomInt, tokenCount } from "../text.js";

export const PROMPT_CHARS = 128;
/** Characters of the expected continuation (the most a sample can score). */
export const CONTINUATION_CHARS = 256;

export interface RepetitionOptions {
  /** Context length in tokens. */
  length: number;
}

export function repetitionSamples(ctx: TaskContext, options: RepetitionOptions): TaskSamples {
  const rng = new Rng(ctx.seed);
  // Room after the context for the prompt and the continuation, at two characters a token (measured per
  // sample below; a sample that does not fit is left out and counted).
  const room = Math.ceil((PROMPT_CHARS + CONTINUATION_CHARS) / 2) + 8;
  const length = Math.min(options.length, ctx.contextSize - room);
  const skipped =
    length < options.length
      ? [
          `repetition at ${options.length} tokens: shortened to ${length} to leave room for the prompt and its continuation`,
        ]
      : [];
  const samples: GenerationSample[] = [];
  let tooShort = 0;
  for (let i = 0; i < ctx.samples; i++) {
    const context = fillerTokens(rng, ctx.tokenizer, length);
    // Copy from a point in the first 70% that leaves room for the prompt and the continuation.
    const last = Math.min(context.length - PROMPT_CHARS - CONTINUATION_CHARS, Math.floor(context.length * 0.7));
    const start = last > 0 ? wordStart(context, randomInt(rng, last)) : -1;
    const end = start < 0 ? -1 : wordEnd(context, start + PROMPT_CHARS);
    const prompt = context.slice(start, end);
    const continuation = context.slice(end, end + CONTINUATION_CHARS);
    const maxNewTokens = tokenCount(ctx.tokenizer, continuation) + 2;
    if (
      start < 0 ||
      continuation.length < CONTINUATION_CHARS ||
      tokenCount(ctx.tokenizer, context) + tokenCount(ctx.tokenizer, "\n" + prompt) + maxNewTokens + 1 > ctx.contextSize
    ) {
      tooShort++;
      continue;
    }
    samples.push({
      kind: "generate",
      id: `repetition-${length}-${i}`,
      context,
      questions: [{ prompt: "\n" + prompt, answers: [continuation], maxNewTokens, metric: "repetition" }],
      meta: { length },
    });
  }
  if (tooShort > 0)
    skipped.push(
      `repetition: ${tooShort} of ${ctx.samples} samples left out: a ${length}-token context cannot hold the ${PROMPT_CHARS}-character prompt and its continuation within the model's ${ctx.contextSize} tokens`,
    );
  return { samples, skipped };
}

const SPACE = /\s/;

/** The first position at or after i where a word starts (or the text's end). */
export function wordStart(text: string, i: number): number {
  while (i < text.length && (SPACE.test(text[i]) || (i > 0 && !SPACE.test(text[i - 1])))) i++;
  return i;
}

/** The first position at or after i that ends a word: whitespace or the text's end. */
export function wordEnd(text: string, i: number): number {
  while (i < text.length && !SPACE.test(text[i])) i++;
  return i;
}
