/**
 * bpc (the SparQ paper's WikiText-103 task, on held-out text): a long prefix of held-out prose, then a
 * reference of about 400 characters scored token by token with the method active at every step (teacher
 * forcing): bits per character = the reference's summed negative log-likelihood in nats × log2(e) / its
 * characters. Text: the WordNet validation half, which kvslim's own models never saw; for other models it is
 * public text they may have seen, which the report says.
 */
import { Rng } from "../../model/sampler.js";
import { fitLength, type BpcSample, type TaskContext, type TaskSamples } from "../task.js";
import { fillerText, fillerTokens } from "../text.js";

export const REFERENCE_CHARS = 400;

export interface BpcOptions {
  /** Prefix length in tokens. */
  length: number;
}

export function bpcSamples(ctx: TaskContext, options: BpcOptions): TaskSamples {
  const rng = new Rng(ctx.seed);
  // The reference's tokens (at most one per character) follow the prefix.
  const { length, skipped } = fitLength(
    "bpc",
    options.length,
    ctx.contextSize,
    REFERENCE_CHARS + 2,
    `leave room for the ${REFERENCE_CHARS}-character reference`,
  );
  if (length < 64)
    return {
      samples: [],
      skipped: [`bpc: the model's context of ${ctx.contextSize} tokens leaves no room for a prefix`],
    };
  const samples: BpcSample[] = [];
  for (let i = 0; i < ctx.samples; i++) {
    const context = fillerTokens(rng, ctx.tokenizer, length);
    const reference = "\n" + fillerText(rng, REFERENCE_CHARS).slice(0, REFERENCE_CHARS - 1);
    samples.push({ kind: "bpc", id: `bpc-${length}-${i}`, context, reference, meta: { length } });
  }
  return { samples, skipped };
}
