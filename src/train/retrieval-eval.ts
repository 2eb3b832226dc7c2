/**
 * Does the model retrieve yet? The validation loss cannot say: the answers are a few tokens in thousands.
 * This scores the retrieval documents one per window, on the validation half of WordNet:
 *   - key-value and needle: is the answer (the number after "… is") the model's greedy choice, every
 *     token of it, with the document before it as context (teacher-forced: exact match of the argmax)?
 *   - repeat: the mean loss per token on the passage's second copy against its first. A model that copies
 *     predicts the second copy far better: the ratio falls well below 1. The passage repeats from its
 *     document's start, which a model can also continue by "say the document's beginning again".
 *   - mid-repeat: the same ratio for a stretch of filler copied from a random word (midRepeatDocument),
 *     which only matching what was just read against earlier text (an induction head) can continue: the
 *     general copying the repetition task of `kvslim eval` asks for.
 * A window is an EOS (as after the previous document in training), the document, and EOS padding; the
 * scores are read from the logits of a forward pass without a loss.
 */
import { tokenScore } from "../eval/metrics.js";
import type { TextTokenizer } from "../tokenizer/tokenizer.js";
import { Rng } from "../model/sampler.js";
import { answerStart, midRepeatDocument, RETRIEVAL_GENERATORS, type RetrievalKind } from "./data/retrieval.js";

/** A window's kind: a training document kind, or a mid-repeat (a repeat document made by midRepeatDocument). */
export type WindowKind = RetrievalKind | "mid-repeat";

/** One window: tokens (T), and the token ranges [start, end) to score (positions of the predicted tokens). */
export interface RetrievalWindow {
  kind: WindowKind;
  tokens: Int32Array;
  /** key-value, needle: the answer; repeat, mid-repeat: the second copy. */
  answer: [number, number];
  /** repeat and mid-repeat only: the first copy (each copy's first token is left out: nothing predicts it). */
  first: [number, number] | null;
}

export interface RetrievalScore {
  /** key-value and needle windows whose answer is the argmax at every token, and how many there were. */
  recalled: number;
  asked: number;
  /** Mean loss per token over the repeated passages' first and second copies (nats). */
  firstCopyLoss: number;
  secondCopyLoss: number;
  /** The same over the mid-repeats' stretches where they first appear and where they are copied. */
  midFirstCopyLoss: number;
  midSecondCopyLoss: number;
}

const KINDS: readonly WindowKind[] = ["key-value", "needle", "repeat", "mid-repeat"];

/**
 * Up to n windows of seqLen tokens, the kinds in turn, from `filler` (the validation documents) with lengths
 * in [minChars, maxChars]. A document that does not fit the window is drawn again; a kind none of whose
 * 50 draws in a row fits is left out (short windows cannot hold a key-value list), so fewer than n (or
 * none) may come back. Deterministic in `seed`.
 */
export function retrievalWindows(
  filler: readonly string[],
  tokenizer: TextTokenizer,
  seqLen: number,
  n: number,
  lengths: { minChars: number; maxChars: number },
  seed: number,
): RetrievalWindow[] {
  const eos = tokenizer.eos;
  if (eos === null) throw new Error("the tokenizer has no EOS token to pad retrieval windows with");
  const rng = new Rng(seed);
  const kinds = [...KINDS];
  const out: RetrievalWindow[] = [];
  while (out.length < n && kinds.length > 0) {
    const kind = kinds[out.length % kinds.length];
    const w = drawWindow(kind, filler, tokenizer, seqLen, lengths, rng, eos);
    if (w === null) kinds.splice(kinds.indexOf(kind), 1);
    else out.push(w);
  }
  return out;
}

function drawWindow(
  kind: WindowKind,
  filler: readonly string[],
  tokenizer: TextTokenizer,
  seqLen: number,
  lengths: { minChars: number; maxChars: number },
  rng: Rng,
  eos: number,
): RetrievalWindow | null {
  for (let tries = 0; tries < 50; tries++) {
    const chars = lengths.minChars + Math.floor(rng.next() * (lengths.maxChars - lengths.minChars + 1));
    const doc =
      kind === "mid-repeat" ? midRepeatDocument(rng, filler, chars) : RETRIEVAL_GENERATORS[kind](rng, filler, chars);
    // The document's tokens after an EOS (as in the training stream), split where the answer starts: the
    // prefix must tokenize the same alone, so that the answer's tokens are exactly those after it.
    const prefix = tokenizer.encode(doc.text.slice(0, answerStart(doc)), { addBos: false });
    const ids = tokenizer.encode(doc.text, { addBos: false });
    const isPrefix = (p: number[]) => p.every((t, j) => ids[j] === t);
    if (ids.length + 1 > seqLen || !isPrefix(prefix)) continue;
    const tokens = new Int32Array(seqLen).fill(eos);
    tokens.set(ids, 1);
    if (kind === "mid-repeat") {
      // Where the stretch first appears: its tokens are those between the encodings of the text before it
      // and of the text up to its end (both must be prefixes of the document's tokens).
      const at = doc.text.indexOf(doc.answer);
      const before = tokenizer.encode(doc.text.slice(0, at), { addBos: false });
      const through = tokenizer.encode(doc.text.slice(0, at + doc.answer.length), { addBos: false });
      if (!isPrefix(before) || !isPrefix(through)) continue;
      return {
        kind,
        tokens,
        answer: [2 + prefix.length, 1 + ids.length],
        first: [2 + before.length, 1 + through.length],
      };
    }
    if (kind !== "repeat") return { kind, tokens, answer: [1 + prefix.length, 1 + ids.length], first: null };
    // Both copies without their first token, which nothing before predicts: the two ranges compare like with like.
    const copy = ids.length - prefix.length;
    return { kind, tokens, answer: [2 + prefix.length, 1 + ids.length], first: [2, 1 + copy] };
  }
  return null;
}

/** Accumulates windows' results from their logits. */
export class RetrievalScorer {
  private recalled = 0;
  private asked = 0;
  private first = { loss: 0, tokens: 0 };
  private second = { loss: 0, tokens: 0 };
  private midFirst = { loss: 0, tokens: 0 };
  private midSecond = { loss: 0, tokens: 0 };

  /** Scores window w from its logits (seqLen, V): row p − 1 predicts the token at p. */
  add(w: RetrievalWindow, logits: Float32Array, V: number): void {
    // kvslim eval's token scoring: −log p in nats, and whether the token is the greedy choice.
    const predict = (p: number) => tokenScore(logits.subarray((p - 1) * V, p * V), w.tokens[p]);
    const sum = (range: [number, number], into: { loss: number; tokens: number }) => {
      for (let p = range[0]; p < range[1]; p++) into.loss += predict(p).nats;
      into.tokens += range[1] - range[0];
    };
    if (w.first === null) {
      let all = true;
      for (let p = w.answer[0]; p < w.answer[1]; p++) all &&= predict(p).argmax;
      this.asked++;
      if (all) this.recalled++;
    } else if (w.kind === "mid-repeat") {
      sum(w.first, this.midFirst);
      sum(w.answer, this.midSecond);
    } else {
      sum(w.first, this.first);
      sum(w.answer, this.second);
    }
  }

  result(): RetrievalScore {
    const mean = (a: { loss: number; tokens: number }) => (a.tokens > 0 ? a.loss / a.tokens : NaN);
    return {
      recalled: this.recalled,
      asked: this.asked,
      firstCopyLoss: mean(this.first),
      secondCopyLoss: mean(this.second),
      midFirstCopyLoss: mean(this.midFirst),
      midSecondCopyLoss: mean(this.midSecond),
    };
  }
}
