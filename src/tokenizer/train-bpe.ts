/**
 * A byte-level BPE tokenizer trainer (GPT-2 style) for kvslim's own small models, and the tokenizer.json
 * it writes for @huggingface/tokenizers (and so for hfTokenizer in hf-tokenizer.ts).
 *
 * Ids: 0 <s> (BOS), 1 </s> (EOS), 2 <pad>; 3 + b for byte b (0–255, written in GPT-2's printable byte
 * alphabet BYTE_TO_CHAR); then one id per merge, in the order learned. If two merges spell the same string
 * ("a"+"bc" and "ab"+"c") the second reuses the first one's id, so the vocabulary can hold fewer ids than
 * 259 + merges; training stops when the vocabulary reaches the requested size.
 *
 * Pre-tokenizer: BYTE_LEVEL_SPLIT, the regex @huggingface/tokenizers compiles for a ByteLevel pre-tokenizer
 * with use_regex true (GPT-2's, plus a final \s+), with JavaScript's Unicode tables; add_prefix_space false.
 * Merges never cross its pieces, so no token can spell "<s>", "</s>" or "<pad>" ("<" and "s" fall into
 * different pieces).
 *
 * Training (Sennrich, Haddow, Birch, "Neural Machine Translation of Rare Words with Subword Units",
 * arXiv:1508.07909, on a word-frequency table; GPT-2's byte-level alphabet instead of characters):
 *   Step 1: cut every document into pieces and count each distinct piece.
 *   Step 2: write each piece as byte ids; count every adjacent pair, weighted by the piece's count, and
 *           remember which pieces hold each pair.
 *   Step 3: take the most frequent pair (ties: the smaller left id, then the smaller right id); stop when
 *           its count is below minFrequency or the vocabulary is full.
 *   Step 4: in the pieces that hold it, merge its occurrences left to right; update the pair counts by
 *           what changed in those pieces only (the incremental part); go to step 3.
 * The queue is a lazy max-heap: a pair whose count rises is queued again; one whose count falls keeps its
 * old entry, which is refreshed when it reaches the top (a merge only lowers the counts of existing pairs).
 *
 * Encoding with the trained merges (BpeEncoder, the reference the tests hold the library to): cut into
 * pieces, then in each piece repeatedly merge the adjacent pair with the lowest merge rank, leftmost first.
 *
 * Files written by saveTokenizer (Hugging Face's formats):
 *   tokenizer.json: added_tokens (the 3 specials, special: true), normalizer null, pre_tokenizer and decoder
 *     ByteLevel (add_prefix_space false, use_regex true), post_processor TemplateProcessing "<s> $A",
 *     model { type "BPE", vocab { token: id } with every id, merges ["left right", ...] in rank order }.
 *   tokenizer_config.json: bos_token, eos_token, pad_token, add_bos_token true,
 *     clean_up_tokenization_spaces false (so decoding inverts encoding).
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { FileExistsError, UsageError } from "../errors.js";
import { writeAll, writeFileAtomic } from "../io/atomic.js";
import { BYTE_TO_CHAR, CHAR_TO_BYTE } from "./bpe.js";
import { Heap } from "./heap.js";

export const SPECIAL_TOKENS = ["<s>", "</s>", "<pad>"] as const;
export const BOS_TOKEN = "<s>";
export const EOS_TOKEN = "</s>";
export const PAD_TOKEN = "<pad>";
/** Byte b has id BYTE_ID_OFFSET + b. */
export const BYTE_ID_OFFSET = SPECIAL_TOKENS.length;
export const MIN_VOCAB_SIZE = BYTE_ID_OFFSET + 256;
export const MAX_VOCAB_SIZE = 1 << 20;

/** The pre-tokenizer of @huggingface/tokenizers' ByteLevel (use_regex: true), verbatim. */
export const BYTE_LEVEL_SPLIT = /'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+/gu;

export interface TrainedBpe {
  /** id -> token: the specials as written, every other token in GPT-2's byte alphabet. */
  tokens: string[];
  /** The merges in the order learned (= rank). */
  merges: [string, string][];
}

export interface TrainOptions {
  /** Total ids wanted, specials and the 256 bytes included: MIN_VOCAB_SIZE to MAX_VOCAB_SIZE. */
  vocabSize: number;
  /** Pairs seen fewer times than this are never merged. Default 2. */
  minFrequency?: number;
}

const utf8 = new TextEncoder();
const utf8Decoder = new TextDecoder("utf-8", { fatal: false, ignoreBOM: true });

/** The pieces BPE merges within, as the library cuts them (each match of BYTE_LEVEL_SPLIT). */
export function preTokenize(text: string): string[] {
  return text.match(BYTE_LEVEL_SPLIT) ?? [];
}

/** Checks a requested vocabulary size at the boundary; `name` is what the caller calls it (e.g. "--vocab"). */
export function checkVocabSize(vocabSize: number, name = "vocabSize"): void {
  if (!Number.isInteger(vocabSize) || vocabSize < MIN_VOCAB_SIZE || vocabSize > MAX_VOCAB_SIZE) {
    throw new UsageError(
      `${name} expects an integer from ${MIN_VOCAB_SIZE} (${SPECIAL_TOKENS.length} special tokens + 256 bytes) ` +
        `to ${MAX_VOCAB_SIZE}, got ${vocabSize}; 4096 suits kvslim's small models`,
    );
  }
}

/** Learns merges from documents (each is pre-tokenized on its own: no piece spans two documents). */
export function trainBpe(documents: Iterable<string>, options: TrainOptions): TrainedBpe {
  const { vocabSize } = options;
  const minFrequency = options.minFrequency ?? 2;
  checkVocabSize(vocabSize);

  // Step 1: the word-frequency table.
  const pieceCounts = new Map<string, number>();
  for (const doc of documents) {
    for (const piece of preTokenize(doc)) pieceCounts.set(piece, (pieceCounts.get(piece) ?? 0) + 1);
  }

  // Step 2: pieces as byte ids; pair counts and where each pair occurs.
  const words: Int32Array[] = [];
  const freq: number[] = [];
  for (const [piece, count] of pieceCounts) {
    words.push(Int32Array.from(utf8.encode(piece), (b) => BYTE_ID_OFFSET + b));
    freq.push(count);
  }
  pieceCounts.clear();
  const tokens: string[] = [...SPECIAL_TOKENS, ...BYTE_TO_CHAR];
  const idOf = new Map(tokens.map((t, id) => [t, id]));
  const merges: [string, string][] = [];
  const keyOf = (left: number, right: number) => left * vocabSize + right; // ids < vocabSize, so unique
  const pairCount = new Map<number, number>();
  const pairWords = new Map<number, number[]>(); // may list a word twice or after the pair left it
  const queue = new Heap<PairEntry>((a, b) => a.count > b.count || (a.count === b.count && a.key < b.key));
  const listWord = (key: number, w: number) => {
    const list = pairWords.get(key);
    if (list === undefined) pairWords.set(key, [w]);
    else if (list[list.length - 1] !== w) list.push(w);
  };
  for (let w = 0; w < words.length; w++) {
    const symbols = words[w];
    for (let i = 0; i + 1 < symbols.length; i++) {
      const key = keyOf(symbols[i], symbols[i + 1]);
      pairCount.set(key, (pairCount.get(key) ?? 0) + freq[w]);
      listWord(key, w);
    }
  }
  for (const [key, count] of pairCount) queue.push({ count, key });

  const visited = new Int32Array(words.length).fill(-1); // merge number that last rewrote each word
  while (tokens.length < vocabSize) {
    // Step 3: the most frequent pair.
    const best = popMostFrequent(queue, pairCount);
    if (best === null || best.count < minFrequency) break;
    const left = Math.floor(best.key / vocabSize);
    const right = best.key % vocabSize;
    const text = tokens[left] + tokens[right];
    let merged = idOf.get(text);
    if (merged !== undefined && merged < BYTE_ID_OFFSET)
      throw new Error(`BUG: a merge spells the special token ${text}`);
    if (merged === undefined) {
      merged = tokens.length;
      tokens.push(text);
      idOf.set(text, merged);
    }
    const mergeNumber = merges.length;
    merges.push([tokens[left], tokens[right]]);

    // Step 4: rewrite the words that hold the pair; the count changes are (pairs after) - (pairs before).
    const delta = new Map<number, number>();
    for (const w of pairWords.get(best.key) ?? []) {
      if (visited[w] === mergeNumber) continue;
      visited[w] = mergeNumber;
      const before = words[w];
      const after = mergePair(before, left, right, merged);
      if (after.length === before.length) continue; // the pair left this word in an earlier merge
      for (let i = 0; i + 1 < before.length; i++) addTo(delta, keyOf(before[i], before[i + 1]), -freq[w]);
      for (let i = 0; i + 1 < after.length; i++) {
        const key = keyOf(after[i], after[i + 1]);
        addTo(delta, key, freq[w]);
        if (after[i] === merged || after[i + 1] === merged) listWord(key, w);
      }
      words[w] = after;
    }
    for (const [key, change] of delta) {
      if (change === 0) continue;
      const count = (pairCount.get(key) ?? 0) + change;
      if (count > 0) pairCount.set(key, count);
      else pairCount.delete(key);
      if (change > 0) queue.push({ count, key });
    }
    pairWords.delete(best.key);
    if (pairCount.has(best.key)) throw new Error(`BUG: pair ${best.key} still counted after merging it`);
  }
  return { tokens, merges };
}

interface PairEntry {
  count: number; // the pair's count when queued
  key: number; // left * vocabSize + right
}

/** The queued pair with the highest current count (ties: lowest key), skipping and refreshing stale entries. */
function popMostFrequent(queue: Heap<PairEntry>, pairCount: Map<number, number>): PairEntry | null {
  while (queue.size > 0) {
    const top = queue.pop();
    const current = pairCount.get(top.key) ?? 0;
    if (current === top.count) return top;
    // Lower now: queue it again at its count. Higher: an entry with that count was queued when it rose.
    if (current > 0 && current < top.count) queue.push({ count: current, key: top.key });
  }
  return null;
}

/** `symbols` with every (left, right), left to right and not overlapping, replaced by `merged`. */
function mergePair(symbols: Int32Array, left: number, right: number, merged: number): Int32Array {
  const out = new Int32Array(symbols.length);
  let n = 0;
  for (let i = 0; i < symbols.length; i++) {
    if (i + 1 < symbols.length && symbols[i] === left && symbols[i + 1] === right) {
      out[n++] = merged;
      i++;
    } else {
      out[n++] = symbols[i];
    }
  }
  return n === symbols.length ? symbols : out.slice(0, n);
}

function addTo(map: Map<number, number>, key: number, value: number): void {
  map.set(key, (map.get(key) ?? 0) + value);
}

/** Encodes and decodes with trained merges, independently of @huggingface/tokenizers. */
export class BpeEncoder {
  private readonly idOf: Map<string, number>;
  private readonly rank: Map<string, number>;
  private readonly cache = new Map<string, number[]>();

  constructor(private readonly bpe: TrainedBpe) {
    this.idOf = new Map(bpe.tokens.map((t, id) => [t, id]));
    this.rank = new Map(bpe.merges.map(([a, b], r) => [`${a} ${b}`, r])); // byte-level tokens hold no spaces
  }

  /** Token ids of `text`; special-token text is encoded as ordinary text. */
  encode(text: string): number[] {
    const ids: number[] = [];
    for (const piece of preTokenize(text)) {
      let pieceIds = this.cache.get(piece);
      if (pieceIds === undefined) {
        pieceIds = this.encodePiece(piece);
        if (this.cache.size < 100_000) this.cache.set(piece, pieceIds);
      }
      ids.push(...pieceIds);
    }
    return ids;
  }

  /** The text of `ids` (specials as their text). Invalid UTF-8 becomes U+FFFD, as in the library. */
  decode(ids: readonly number[]): string {
    const bytes: number[] = [];
    for (const id of ids) {
      const token = this.bpe.tokens[id];
      if (token === undefined)
        throw new RangeError(`token id ${id} is outside the vocabulary (0 to ${this.bpe.tokens.length - 1})`);
      if (id < BYTE_ID_OFFSET) bytes.push(...utf8.encode(token));
      else for (const ch of token) bytes.push(CHAR_TO_BYTE.get(ch)!);
    }
    return utf8Decoder.decode(Uint8Array.from(bytes));
  }

  private encodePiece(piece: string): number[] {
    const symbols = Array.from(utf8.encode(piece), (b) => BYTE_TO_CHAR[b]);
    for (;;) {
      // The adjacent pair with the lowest rank; on equal ranks (the same pair twice) the leftmost.
      let bestAt = -1;
      let bestRank = Infinity;
      for (let i = 0; i + 1 < symbols.length; i++) {
        const rank = this.rank.get(`${symbols[i]} ${symbols[i + 1]}`);
        if (rank !== undefined && rank < bestRank) {
          bestRank = rank;
          bestAt = i;
        }
      }
      if (bestAt < 0) break;
      symbols.splice(bestAt, 2, symbols[bestAt] + symbols[bestAt + 1]);
    }
    return symbols.map((s) => this.idOf.get(s)!);
  }
}

/** The tokenizer.json of trained merges (Hugging Face tokenizers' format, merges as "a b"). */
export function tokenizerJson(bpe: TrainedBpe): object {
  const byteLevel = { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: true };
  const bos = { SpecialToken: { id: BOS_TOKEN, type_id: 0 } };
  return {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: SPECIAL_TOKENS.map((content, id) => ({
      id,
      content,
      single_word: false,
      lstrip: false,
      rstrip: false,
      normalized: false,
      special: true,
    })),
    normalizer: null,
    pre_tokenizer: byteLevel,
    // BOS before every sequence, as tokenizer_config.json's add_bos_token says.
    post_processor: {
      type: "TemplateProcessing",
      single: [bos, { Sequence: { id: "A", type_id: 0 } }],
      pair: [bos, { Sequence: { id: "A", type_id: 0 } }, bos, { Sequence: { id: "B", type_id: 1 } }],
      special_tokens: { [BOS_TOKEN]: { id: BOS_TOKEN, ids: [SPECIAL_TOKENS.indexOf(BOS_TOKEN)], tokens: [BOS_TOKEN] } },
    },
    decoder: byteLevel,
    model: {
      type: "BPE",
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: false,
      vocab: Object.fromEntries(bpe.tokens.map((t, id) => [t, id])),
      merges: bpe.merges.map(([a, b]) => `${a} ${b}`),
    },
  };
}

/** tokenizer_config.json: the special tokens, BOS on by default, no clean-up (so decode inverts encode). */
export function tokenizerConfigJson(): object {
  return {
    tokenizer_class: "PreTrainedTokenizerFast",
    bos_token: BOS_TOKEN,
    eos_token: EOS_TOKEN,
    pad_token: PAD_TOKEN,
    add_bos_token: true,
    add_eos_token: false,
    clean_up_tokenization_spaces: false,
  };
}

/**
 * Writes tokenizer.json and tokenizer_config.json into `dir` (created if missing), each atomically.
 * Refuses a non-empty directory unless `force`; with `force` only those two files are replaced.
 */
export function saveTokenizer(bpe: TrainedBpe, dir: string, options: { force?: boolean } = {}): void {
  checkOutputDir(dir, options.force ?? false);
  fs.mkdirSync(dir, { recursive: true });
  const files: [string, object][] = [
    ["tokenizer.json", tokenizerJson(bpe)],
    ["tokenizer_config.json", tokenizerConfigJson()],
  ];
  for (const [name, json] of files) {
    const bytes = utf8.encode(`${JSON.stringify(json, null, 2)}\n`);
    writeFileAtomic(path.join(dir, name), (fd) => writeAll(fd, bytes), { overwrite: true });
  }
}

/** Throws FileExistsError unless `dir` is missing, an empty directory, or a directory we may overwrite into. */
export function checkOutputDir(dir: string, force: boolean): void {
  if (!fs.existsSync(dir)) return;
  if (!fs.statSync(dir).isDirectory()) {
    throw new FileExistsError(`expected a directory at ${dir}, found a file; choose another output path`);
  }
  const entries = fs.readdirSync(dir);
  if (entries.length > 0 && !force) {
    const shown = entries.slice(0, 3).join(", ") + (entries.length > 3 ? ", …" : "");
    throw new FileExistsError(
      `expected an empty or new directory at ${dir}, found ${entries.length} entries (${shown}); ` +
        `choose another directory or overwrite explicitly (--force)`,
    );
  }
}
