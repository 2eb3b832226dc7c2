/**
 * The obviously-correct BPE trainer the fast one (src/tokenizer/train-bpe.ts) is checked against: after
 * every merge it recounts every adjacent pair of every word from scratch. Same conventions: ids 0–2 the
 * specials, 3 + b byte b (GPT-2 alphabet), the most frequent pair wins, ties go to the smaller left id
 * and then the smaller right id, a merge that spells an existing token reuses its id, and training stops
 * below minFrequency or at vocabSize ids.
 */
import { BYTE_TO_CHAR } from "../../src/tokenizer/bpe.js";

/** Its own copy of the ByteLevel regex of @huggingface/tokenizers. */
const SPLIT = /'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+/gu;

export function naiveTrainBpe(
  texts: string[],
  vocabSize: number,
  minFrequency = 2,
): { tokens: string[]; merges: [string, string][] } {
  const tokens = ["<s>", "</s>", "<pad>", ...BYTE_TO_CHAR];
  const merges: [string, string][] = [];
  const ids = new Map(tokens.map((t, id) => [t, id]));
  const idOf = (t: string) => ids.get(t)!;

  const counts = new Map<string, number>();
  for (const text of texts)
    for (const piece of text.match(SPLIT) ?? []) counts.set(piece, (counts.get(piece) ?? 0) + 1);
  const words = [...counts].map(([piece, count]) => ({
    symbols: Array.from(new TextEncoder().encode(piece), (b) => BYTE_TO_CHAR[b]),
    count,
  }));

  while (tokens.length < vocabSize) {
    const pairs = new Map<string, { left: string; right: string; count: number }>();
    for (const w of words) {
      for (let i = 0; i + 1 < w.symbols.length; i++) {
        const key = `${w.symbols[i]}\u0000${w.symbols[i + 1]}`;
        const pair = pairs.get(key) ?? { left: w.symbols[i], right: w.symbols[i + 1], count: 0 };
        pair.count += w.count;
        pairs.set(key, pair);
      }
    }
    let best: { left: string; right: string; count: number } | null = null;
    for (const p of pairs.values()) {
      const better =
        best === null ||
        p.count > best.count ||
        (p.count === best.count &&
          (idOf(p.left) < idOf(best.left) || (idOf(p.left) === idOf(best.left) && idOf(p.right) < idOf(best.right))));
      if (better) best = p;
    }
    if (best === null || best.count < minFrequency) break;
    merges.push([best.left, best.right]);
    const merged = best.left + best.right;
    if (!ids.has(merged)) {
      ids.set(merged, tokens.length);
      tokens.push(merged);
    }
    for (const w of words) {
      const out: string[] = [];
      for (let i = 0; i < w.symbols.length; i++) {
        if (w.symbols[i] === best.left && w.symbols[i + 1] === best.right) {
          out.push(merged);
          i++;
        } else {
          out.push(w.symbols[i]);
        }
      }
      w.symbols = out;
    }
  }
  return { tokens, merges };
}
