/**
 * The retrieval evaluation the trainer runs with its validation loss (src/train/retrieval-eval.ts): held-out
 * retrieval documents, one per window, whose answer and copy ranges are where the text says, and a scorer
 * checked against float64 log-softmax on hand-made logits.
 */
import * as path from "node:path";
import { describe, expect, test } from "vitest";
import { hfTokenizer } from "../src/tokenizer/hf-tokenizer.js";
import { retrievalLengths } from "../src/train/data/retrieval.js";
import { wordnetValidation } from "../src/train/data/wordnet.js";
import { RetrievalScorer, retrievalWindows, type RetrievalWindow } from "../src/train/retrieval-eval.js";
import { makeRandom } from "./helpers/kernels-helpers.js";

const tokenizer = hfTokenizer(path.resolve(import.meta.dirname, "../models/kvslim-tiny"));
const filler = wordnetValidation();
const eos = tokenizer.eos!;
const V = tokenizer.vocabSize;
const text = (w: RetrievalWindow, [a, b]: [number, number]) => tokenizer.decode([...w.tokens.subarray(a, b)]);

describe("retrieval windows", () => {
  const windows = retrievalWindows(filler, tokenizer, 512, 9, retrievalLengths(512), 5);

  test("9 windows of 512 tokens, key-value, needle, repeat, mid-repeat in turn, each an EOS, the document, EOS padding", () => {
    expect(windows.map((w) => w.kind)).toEqual([
      "key-value",
      "needle",
      "repeat",
      "mid-repeat",
      "key-value",
      "needle",
      "repeat",
      "mid-repeat",
      "key-value",
    ]);
    for (const w of windows) {
      expect(w.tokens).toHaveLength(512);
      expect(w.tokens[0]).toBe(eos);
      expect(w.tokens.subarray(w.answer[1]).every((t) => t === eos)).toBe(true);
      expect(w.tokens.subarray(1, w.answer[1]).includes(eos)).toBe(false);
    }
  });

  test("key-value and needle: the scored tokens are ' <4 digits>' right after the question's restated fact '… is'", () => {
    for (const w of windows.filter((x) => x.kind === "key-value" || x.kind === "needle")) {
      expect(w.first).toBeNull();
      expect(text(w, w.answer)).toMatch(/^ \d{4}$/);
      const before = text(w, [1, w.answer[0]]);
      const fact = /A: the (code of the \w+ \w+|secret number of \w+) is$/.exec(before);
      expect(fact, before.slice(-80)).not.toBeNull();
      // The fact was stated earlier with the same number.
      expect(before.slice(0, before.lastIndexOf("\n"))).toContain(`The ${fact![1]} is${text(w, w.answer)}.`);
    }
  });

  test("repeat: the two scored ranges are the same tokens (the passage without its first token), the first at the start", () => {
    for (const w of windows.filter((x) => x.kind === "repeat")) {
      const first = w.first!;
      expect(first[0]).toBe(2);
      expect(first[1] - first[0]).toBe(w.answer[1] - w.answer[0]);
      expect(first[1] - first[0]).toBeGreaterThan(10);
      expect([...w.tokens.subarray(...first)]).toEqual([...w.tokens.subarray(...w.answer)]);
      expect(w.answer[0]).toBeGreaterThan(first[1]);
    }
  });

  test("mid-repeat: the copy (after the last newline) is a stretch of the earlier text; both scored ranges decode to that stretch without its first word's start, their token counts within 2", () => {
    for (const w of windows.filter((x) => x.kind === "mid-repeat")) {
      const first = w.first!;
      const copy = text(w, [w.answer[0] - 1, w.answer[1]]);
      expect(text(w, [1, w.answer[0] - 1]).endsWith("\n")).toBe(true);
      expect(copy.length).toBeGreaterThan(80);
      const earlier = text(w, [1, first[1]]);
      expect(earlier.endsWith(copy.trimStart())).toBe(true);
      expect(copy.trimStart().endsWith(text(w, w.answer))).toBe(true);
      expect(copy.trimStart().endsWith(text(w, first).trimStart())).toBe(true);
      expect(Math.abs(first[1] - first[0] - (w.answer[1] - w.answer[0]))).toBeLessThanOrEqual(2);
      expect(w.answer[0]).toBeGreaterThan(first[1]);
    }
  });

  test("deterministic in the seed, different across seeds", () => {
    expect(retrievalWindows(filler, tokenizer, 512, 3, retrievalLengths(512), 5)).toEqual(windows.slice(0, 3));
    expect(retrievalWindows(filler, tokenizer, 512, 3, retrievalLengths(512), 6)[0].tokens).not.toEqual(
      windows[0].tokens,
    );
  });

  test("windows too short for a kind leave it out, without an error: 32 tokens hold needles only", () => {
    const short = retrievalWindows(filler, tokenizer, 32, 6, retrievalLengths(32), 5);
    expect(short.map((w) => w.kind)).toEqual(Array(6).fill("needle"));
    expect(retrievalWindows(filler, tokenizer, 8, 6, retrievalLengths(8), 5)).toEqual([]);
  });
});

describe("the scorer", () => {
  const [kv, , repeat, mid] = retrievalWindows(filler, tokenizer, 512, 4, retrievalLengths(512), 7);

  /** Logits (512, V) of small random noise with `boost` added to each scored token's own logit. */
  function logits(w: RetrievalWindow, boost: number, seed: number): Float32Array {
    const random = makeRandom(seed);
    const out = Float32Array.from({ length: 512 * V }, () => random() - 0.5);
    for (const [a, b] of w.first === null ? [w.answer] : [w.first, w.answer]) {
      for (let p = a; p < b; p++) out[(p - 1) * V + w.tokens[p]] += boost;
    }
    return out;
  }

  /** float64 mean of −log softmax(row p − 1)[tokens[p]] over the range. */
  function meanLoss(l: Float32Array, w: RetrievalWindow, [a, b]: [number, number]): number {
    let sum = 0;
    for (let p = a; p < b; p++) {
      const row = Array.from(l.subarray((p - 1) * V, p * V));
      const max = Math.max(...row);
      sum += max + Math.log(row.reduce((z, x) => z + Math.exp(x - max), 0)) - row[w.tokens[p]];
    }
    return sum / (b - a);
  }

  test("an answer is recalled when every token of it is the argmax, and not when one is not", () => {
    const scorer = new RetrievalScorer();
    scorer.add(kv, logits(kv, 2, 1), V);
    const wrong = logits(kv, 2, 2);
    const last = kv.answer[1] - 1;
    wrong[(last - 1) * V + ((kv.tokens[last] + 1) % V)] += 5; // another token wins the answer's last position
    scorer.add(kv, wrong, V);
    expect(scorer.result()).toMatchObject({ recalled: 1, asked: 2 });
    expect(Number.isNaN(scorer.result().firstCopyLoss)).toBe(true); // no repeat window yet
  });

  test("copy losses == float64 mean −log softmax over each copy's tokens (rel 1e-6)", () => {
    const scorer = new RetrievalScorer();
    const l = logits(repeat, 3, 3);
    scorer.add(repeat, l, V);
    const r = scorer.result();
    expect(r.asked).toBe(0);
    expect(Math.abs(r.firstCopyLoss - meanLoss(l, repeat, repeat.first!))).toBeLessThan(1e-6 * r.firstCopyLoss);
    expect(Math.abs(r.secondCopyLoss - meanLoss(l, repeat, repeat.answer))).toBeLessThan(1e-6 * r.secondCopyLoss);
    expect(r.secondCopyLoss).toBeLessThan(Math.log(V) - 2); // the boost counts
  });

  test("mid-copy losses == float64 mean −log softmax over each range (rel 1e-6), kept apart from the repeat's", () => {
    const scorer = new RetrievalScorer();
    const l = logits(mid, 3, 4);
    scorer.add(mid, l, V);
    const r = scorer.result();
    expect(Number.isNaN(r.firstCopyLoss)).toBe(true);
    expect(Math.abs(r.midFirstCopyLoss - meanLoss(l, mid, mid.first!))).toBeLessThan(1e-6 * r.midFirstCopyLoss);
    expect(Math.abs(r.midSecondCopyLoss - meanLoss(l, mid, mid.answer))).toBeLessThan(1e-6 * r.midSecondCopyLoss);
  });
});
