/**
 * SentencePiece-style tokenization of one text fragment, as llama.cpp's llm_tokenizer_spm_session
 * (src/llama-vocab.cpp): start from single characters, repeatedly merge the adjacent pair whose
 * concatenation is the vocabulary token with the highest score (leftmost on ties), then emit each
 * symbol as its token, or as byte tokens <0xXX> when it is not in the vocabulary.
 *
 * The caller has already replaced spaces with "▁" and prepended one where llama.cpp does.
 */
import { UnsupportedError } from "../errors.js";
import { Heap } from "./heap.js";
import type { Vocab } from "./vocab.js";

interface SpmSymbol {
  start: number; // UTF-16 offset into the text
  length: number; // 0 once merged into its left neighbour
  prev: number;
  next: number;
}

interface Bigram {
  left: number;
  right: number;
  score: number;
  length: number; // left.length + right.length when queued; a mismatch later means the entry is stale
}

const utf8 = new TextEncoder();

export function spmTokenize(vocab: Vocab, text: string, out: number[]): void {
  // Step 1: one symbol per code point.
  const symbols: SpmSymbol[] = [];
  for (let offset = 0; offset < text.length;) {
    const length = text.codePointAt(offset)! > 0xffff ? 2 : 1;
    symbols.push({ start: offset, length, prev: symbols.length - 1, next: -1 });
    offset += length;
  }
  symbols.forEach((s, i) => (s.next = i + 1 < symbols.length ? i + 1 : -1));

  // Step 2: queue every adjacent pair that forms a token; highest score first, then leftmost.
  const queue = new Heap<Bigram>((a, b) => a.score > b.score || (a.score === b.score && a.left < b.left));
  const tryAddBigram = (left: number, right: number) => {
    if (left === -1 || right === -1) return;
    const l = symbols[left];
    const r = symbols[right];
    const id = vocab.idOf.get(text.slice(l.start, r.start + r.length));
    if (id === undefined) return;
    queue.push({ left, right, score: vocab.scores[id], length: l.length + r.length });
  };
  for (let i = 1; i < symbols.length; i++) tryAddBigram(i - 1, i);

  // Step 3: merge until no queued pair is still current.
  while (queue.size > 0) {
    const bigram = queue.pop();
    const left = symbols[bigram.left];
    const right = symbols[bigram.right];
    if (left.length === 0 || right.length === 0 || left.length + right.length !== bigram.length) continue;
    left.length += right.length;
    right.length = 0;
    left.next = right.next;
    if (right.next >= 0) symbols[right.next].prev = bigram.left;
    tryAddBigram(left.prev, bigram.left);
    tryAddBigram(bigram.left, left.next);
  }

  // Step 4: emit. Every merged symbol is a token; a single character that is not falls back to bytes.
  for (let i = symbols.length > 0 ? 0 : -1; i !== -1; i = symbols[i].next) {
    const piece = text.slice(symbols[i].start, symbols[i].start + symbols[i].length);
    const id = vocab.idOf.get(piece);
    if (id !== undefined) {
      out.push(id);
      continue;
    }
    for (const byte of utf8.encode(piece)) out.push(byteToken(vocab, byte));
  }
}

/** llama_vocab::byte_to_token for SPM: "<0xXX>", else the byte itself as a one-character token. */
function byteToken(vocab: Vocab, byte: number): number {
  const hex = byte.toString(16).toUpperCase().padStart(2, "0");
  const id = vocab.idOf.get(`<0x${hex}>`) ?? (byte < 0x80 ? vocab.idOf.get(String.fromCharCode(byte)) : undefined);
  if (id !== undefined) return id;
  if (vocab.unk !== null) return vocab.unk; // llama.cpp would throw here
  throw new UnsupportedError(`the vocabulary has no byte token <0x${hex}> and no unknown token to stand for it`);
}
