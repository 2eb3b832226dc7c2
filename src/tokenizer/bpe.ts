/**
 * Byte-level BPE of one text fragment, as llama.cpp's llm_tokenizer_bpe_session (src/llama-vocab.cpp):
 * pre-tokenize into words (pre-tokenize.ts), write each word's UTF-8 bytes in GPT-2's printable byte
 * alphabet, then within each word repeatedly merge the adjacent pair with the lowest merge rank
 * (leftmost on ties). With ignore_merges (Llama 3) a word that is already a token is emitted whole.
 */
import { Heap } from "./heap.js";
import { preTokenize } from "./pre-tokenize.js";
import type { Vocab } from "./vocab.js";

/** GPT-2's byte -> printable character table (bytes_to_unicode), and its inverse. */
export const BYTE_TO_CHAR: readonly string[] = (() => {
  const table: string[] = new Array(256);
  let extra = 0;
  for (let b = 0; b < 256; b++) {
    const printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
    table[b] = String.fromCharCode(printable ? b : 256 + extra++);
  }
  return table;
})();
export const CHAR_TO_BYTE: ReadonlyMap<string, number> = new Map(BYTE_TO_CHAR.map((c, b) => [c, b]));

interface Bigram {
  left: number;
  right: number;
  rank: number;
  text: string; // left + right when queued; a mismatch later means the entry is stale
}

const utf8 = new TextEncoder();

export function bpeTokenize(vocab: Vocab, text: string, out: number[]): void {
  const pre = vocab.pre!;
  for (const word of preTokenize(text, pre)) {
    const encoded = Array.from(utf8.encode(word), (b) => BYTE_TO_CHAR[b]).join("");
    const whole = pre.ignoreMerges ? vocab.idOf.get(encoded) : undefined;
    if (whole !== undefined) out.push(whole);
    else mergeWord(vocab, encoded, out);
  }
}

function mergeWord(vocab: Vocab, word: string, out: number[]): void {
  // Step 1: one symbol per byte character (all byte characters are single UTF-16 units).
  const texts = Array.from(word);
  const prev = texts.map((_, i) => i - 1);
  const next = texts.map((_, i) => (i + 1 < texts.length ? i + 1 : -1));

  // Step 2: queue every adjacent pair with a merge rank; lowest rank first, then leftmost.
  const queue = new Heap<Bigram>((a, b) => a.rank < b.rank || (a.rank === b.rank && a.left < b.left));
  const addBigram = (left: number, right: number) => {
    if (left === -1 || right === -1) return;
    const rank = vocab.mergeRank.get(`${texts[left]} ${texts[right]}`);
    if (rank !== undefined) queue.push({ left, right, rank, text: texts[left] + texts[right] });
  };
  for (let i = 1; i < texts.length; i++) addBigram(i - 1, i);

  // Step 3: merge until no queued pair is still current.
  while (queue.size > 0) {
    const bigram = queue.pop();
    const left = texts[bigram.left];
    const right = texts[bigram.right];
    if (left === "" || right === "" || left + right !== bigram.text) continue;
    texts[bigram.left] = bigram.text;
    texts[bigram.right] = "";
    next[bigram.left] = next[bigram.right];
    if (next[bigram.right] >= 0) prev[next[bigram.right]] = bigram.left;
    addBigram(prev[bigram.left], bigram.left);
    addBigram(bigram.left, next[bigram.left]);
  }

  // Step 4: emit; a symbol that is not a token falls back to its one-character (ASCII) tokens, others are dropped.
  for (const symbol of texts) {
    if (symbol === "") continue;
    const id = vocab.idOf.get(symbol);
    if (id !== undefined) {
      out.push(id);
      continue;
    }
    for (const ch of symbol) {
      const byteId = ch < "\x80" ? vocab.idOf.get(ch) : undefined;
      if (byteId !== undefined) out.push(byteId);
    }
  }
}
