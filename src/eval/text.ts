/**
 * Text for the tasks: filler and held-out prose from the WordNet validation half (glosses and examples of
 * the synsets kvslim's own models never trained on: src/train/data/wordnet.ts splits by synset), sized in
 * tokens of the evaluated model's tokenizer.
 */
import { Rng } from "../model/sampler.js";
import type { TextTokenizer } from "../tokenizer/tokenizer.js";
import { wordnetValidation } from "../train/data/wordnet.js";

let validation: string[] | null = null;

/** The held-out documents, one per WordNet synset (read once). */
export function heldOutDocuments(): readonly string[] {
  validation ??= wordnetValidation();
  return validation;
}

/** Uniform integer in [0, n). */
export function randomInt(rng: Rng, n: number): number {
  return Math.floor(rng.next() * n);
}

/** Random held-out documents, one per line, together at least `chars` characters ("" for chars ≤ 0). */
export function fillerText(rng: Rng, chars: number): string {
  if (chars <= 0) return "";
  const docs = heldOutDocuments();
  const lines: string[] = [];
  let length = -1;
  while (length < chars) {
    const line = docs[randomInt(rng, docs.length)];
    lines.push(line);
    length += line.length + 1;
  }
  return lines.join("\n");
}

/** Tokens of `text` without BOS. */
export function tokenCount(tokenizer: TextTokenizer, text: string): number {
  return tokenizer.encode(text, { addBos: false }).length;
}

/**
 * Filler of about `tokens` tokens (never more): whole lines drawn until the count is reached, then lines
 * dropped from the end while it is over. Deterministic in the Rng.
 */
export function fillerTokens(rng: Rng, tokenizer: TextTokenizer, tokens: number): string {
  if (tokens <= 0) return "";
  // Characters per token of this tokenizer on this text, measured on a first draw, then topped up.
  let text = fillerText(rng, tokens * 3);
  let n = tokenCount(tokenizer, text);
  while (n < tokens) {
    text += "\n" + fillerText(rng, Math.max(64, Math.ceil(((tokens - n) * text.length) / Math.max(1, n))));
    n = tokenCount(tokenizer, text);
  }
  const lines = text.split("\n");
  while (lines.length > 1 && n > tokens) {
    lines.pop();
    n = tokenCount(tokenizer, lines.join("\n"));
  }
  return lines.join("\n");
}
