/**
 * Training data: the WordNet documents (parsing, the deterministic disjoint train/validation split,
 * English content) and the generated retrieval documents (answers where the generator says, lengths,
 * determinism for a seed) and the stream that mixes them at a stated share.
 */
import { describe, expect, test } from "vitest";
import { Rng } from "../src/model/sampler.js";
import {
  DEFAULT_MAX_CHARS,
  DEFAULT_MIN_CHARS,
  keyValueDocument,
  needleDocument,
  repeatDocument,
  midRepeatDocument,
  RETRIEVAL_GENERATORS,
  RETRIEVAL_SHARE,
  retrievalLengths,
  trainingDocuments,
  type StreamOptions,
  trainingStream,
  type RetrievalKind,
} from "../src/train/data/retrieval.js";
import { BatchSampler, tokenizeDocuments } from "../src/train/data/batches.js";
import type { TextTokenizer } from "../src/tokenizer/tokenizer.js";
import {
  corpusSize,
  fnv1a32,
  isValidationSynset,
  loadWordnet,
  parseSynsetLine,
  readWordnetSynsets,
  synsetDocument,
  VALIDATION_ONE_IN,
} from "../src/train/data/wordnet.js";

// Lines in the layout of WordNet 3.1's data files (pointer lists shortened; the parser skips them).
const BREATHE =
  "00001740 29 v 04 breathe 0 take_a_breath 0 respire 0 suspire 3 002 * 00005041 v 0000 $ 00002325 v 0000 02 + 02 00 + 08 00 | " +
  'draw air into, and expel out of, the lungs; "I can breathe better when the air is clean"; "The patient is respiring"  ';
const GALORE =
  '00014377 00 s 02 abounding 0 galore(ip) 0 001 & 00013906 a 0000 | existing in abundance; "abounding confidence"; "whiskey galore"  ';
const SEETHING =
  '00089013 00 s 01 seething 0 001 & 00088039 a 0000 | in constant agitation; "a seething mass of maggots"; "lovers and madmen have such seething brains"- Shakespeare  ';
const COMMUTATIVE =
  '00999999 00 a 01 commutative 0 000 | (of a binary operation) independent of order; as in e.g. "a x b = b x a"  ';
const PRANG = "00123456 04 n 01 prang 0 000 | crash  ";

describe("WordNet documents", () => {
  test("a synset line becomes '<lemmas>: <definition>. <example>. <example>.' with underscores as spaces", () => {
    const s = parseSynsetLine(BREATHE, "v", "test");
    expect(s).toEqual({
      pos: "v",
      offset: "00001740",
      lemmas: ["breathe", "take a breath", "respire", "suspire"],
      definition: "draw air into, and expel out of, the lungs",
      examples: ["I can breathe better when the air is clean", "The patient is respiring"],
    });
    expect(synsetDocument(s)).toBe(
      "breathe, take a breath, respire, suspire: draw air into, and expel out of, the lungs. I can breathe better when the air is clean. The patient is respiring.",
    );
  });

  test("adjective markers, attributions after examples, trailing 'as in e.g.' are dropped; a gloss without examples works", () => {
    expect(synsetDocument(parseSynsetLine(GALORE, "a", "test"))).toBe(
      "abounding, galore: existing in abundance. abounding confidence. whiskey galore.",
    );
    expect(synsetDocument(parseSynsetLine(SEETHING, "a", "test"))).toBe(
      "seething: in constant agitation. a seething mass of maggots. lovers and madmen have such seething brains.",
    );
    expect(synsetDocument(parseSynsetLine(COMMUTATIVE, "a", "test"))).toBe(
      "commutative: (of a binary operation) independent of order. a x b = b x a.",
    );
    expect(synsetDocument(parseSynsetLine(PRANG, "n", "test"))).toBe("prang: crash.");
  });

  test("FNV-1a-32 gives the published test vectors ('' 0x811c9dc5, 'a' 0xe40c292c, 'foobar' 0xbf9cf968)", () => {
    expect([fnv1a32(""), fnv1a32("a"), fnv1a32("foobar")]).toEqual([0x811c9dc5, 0xe40c292c, 0xbf9cf968]);
  });

  test("the split is deterministic: re-reading the files and splitting by FNV-1a('pos:offset') % 50 gives the same documents", () => {
    const { train, validation } = loadWordnet();
    const again = readWordnetSynsets();
    expect(again.filter((s) => !isValidationSynset(s.pos, s.offset)).map(synsetDocument)).toEqual(train);
    expect(again.filter((s) => isValidationSynset(s.pos, s.offset)).map(synsetDocument)).toEqual(validation);
  });

  test("train and validation are disjoint (no synset, no document in both); validation is 1.5–2.5% of synsets", () => {
    const synsets = readWordnetSynsets();
    const keys = synsets.map((s) => `${s.pos}:${s.offset}`);
    expect(new Set(keys).size).toBe(keys.length); // pos:offset names one synset
    const { train, validation } = loadWordnet();
    expect(train.length + validation.length).toBe(synsets.length);
    const trainSet = new Set(train);
    expect(validation.filter((d) => trainSet.has(d))).toEqual([]);
    const share = validation.length / synsets.length;
    expect(share).toBeGreaterThan(1.5 / 100);
    expect(share).toBeLessThan(2.5 / 100);
    expect(VALIDATION_ONE_IN).toBe(50);
  });

  test("sizes: over 100,000 train documents and ≥ 9 MB of train text, ≥ 150 KB of validation text (ASCII: chars = bytes)", () => {
    const { train, validation } = loadWordnet();
    const t = corpusSize(train);
    const v = corpusSize(validation);
    expect(t.documents).toBeGreaterThan(100_000);
    expect(t.bytes).toBeGreaterThan(9e6);
    expect(v.bytes).toBeGreaterThan(150e3);
    expect([t.chars, v.chars]).toEqual([t.bytes, v.bytes]);
    expect(corpusSize(["é", "ab"])).toEqual({ documents: 2, chars: 3, bytes: 4 });
  });

  test("documents are non-empty English: printable ASCII, '<lemmas>: <definition>.' form, ≥ 90% hold a common English word", () => {
    const { train, validation } = loadWordnet();
    const all = [...train, ...validation];
    expect(all.filter((d) => !/^[\x20-\x7e]+$/.test(d))).toEqual([]);
    expect(all.filter((d) => !/^[^:]+: \S.*[.!?]$/.test(d))).toEqual([]);
    const common = /\b(the|of|a|an|to|or|and|in|is|for|with|by)\b/;
    expect(all.filter((d) => common.test(d)).length / all.length).toBeGreaterThan(0.9);
  });
});

describe("retrieval documents", () => {
  const filler = loadWordnet().train.slice(0, 4000);
  const longestFiller = Math.max(...filler.map((d) => d.length));
  const kinds = Object.keys(RETRIEVAL_GENERATORS) as RetrievalKind[];
  const make = (kind: RetrievalKind, seed: number, chars: number) =>
    RETRIEVAL_GENERATORS[kind](new Rng(seed), filler, chars);

  test.each(kinds)(
    "%s: length ≥ the target and < target + the longest filler document + 2, for 20 seeds and 4 targets",
    (kind) => {
      for (let seed = 1; seed <= 20; seed++) {
        for (const chars of [300, 1000, 4000, 9000]) {
          const { text } = make(kind, seed, chars);
          expect(text.length).toBeGreaterThanOrEqual(chars);
          expect(text.length).toBeLessThan(chars + longestFiller + 2);
        }
      }
    },
  );

  test("key-value: the first line lists 4–8 codes; the last 1–3 lines ask for distinct listed facts, each answered 'A: the code of <key> is <its code>', the last one's code is the answer", () => {
    const askedCounts = new Set<number>();
    for (let seed = 1; seed <= 30; seed++) {
      const doc = keyValueDocument(new Rng(seed), filler, 3000);
      const lines = doc.text.split("\n");
      const facts = [...lines[0].matchAll(/The code of (the \w+ \w+) is (\d{4})\./g)];
      expect(facts.length).toBeGreaterThanOrEqual(4);
      expect(facts.length).toBeLessThanOrEqual(8);
      expect(facts.map((f) => f[0]).join(" ")).toBe(lines[0]);
      const questions = lines
        .map((l) => /^Q: What is the code of (the \w+ \w+)\? A: the code of \1 is (\d{4})$/.exec(l))
        .filter((m) => m !== null);
      expect(questions.length).toBeGreaterThanOrEqual(1);
      expect(questions.length).toBeLessThanOrEqual(3);
      askedCounts.add(questions.length);
      expect(lines.slice(-questions.length)).toEqual(questions.map((q) => q[0])); // the questions are the last lines
      expect(new Set(questions.map((q) => q[1])).size).toBe(questions.length); // distinct keys
      for (const q of questions) {
        const asked = facts.filter((f) => f[1] === q[1]);
        expect(asked).toHaveLength(1); // the key names one fact
        expect(q[2]).toBe(asked[0][2]);
      }
      expect(questions[questions.length - 1][2]).toBe(doc.answer);
    }
    expect([...askedCounts].sort()).toEqual([1, 2, 3]);
  });

  test("repeat: the text starts and ends with the same passage (the answer), ≥ 40% of the target, with filler between", () => {
    for (let seed = 1; seed <= 30; seed++) {
      const doc = repeatDocument(new Rng(seed), filler, 3000);
      expect(doc.answer.length).toBeGreaterThanOrEqual(1200);
      expect(doc.text.startsWith(`${doc.answer}\n`)).toBe(true);
      expect(doc.text.endsWith(`\n${doc.answer}`)).toBe(true);
      expect(doc.text.length).toBeGreaterThan(2 * doc.answer.length + 2);
    }
  });

  test("mid-repeat: filler, a newline, then a stretch of the filler again (the answer) from a word's first character to a word's last, ≥ 40% of the target; the copy's starts vary", () => {
    const starts = new Set<number>();
    for (let seed = 1; seed <= 30; seed++) {
      const doc = midRepeatDocument(new Rng(seed), filler, 3000);
      expect(doc.kind).toBe("repeat");
      expect(doc.answer.length).toBeGreaterThanOrEqual(1200);
      expect(doc.text.endsWith(`\n${doc.answer}`)).toBe(true);
      const fill = doc.text.slice(0, doc.text.length - doc.answer.length - 1);
      const at = fill.indexOf(doc.answer);
      expect(at).toBeGreaterThanOrEqual(0);
      expect(at === 0 || /\s/.test(fill[at - 1])).toBe(true);
      expect(/\S/.test(doc.answer[0]) && /\S/.test(doc.answer[doc.answer.length - 1])).toBe(true);
      const after = fill[at + doc.answer.length];
      expect(after === undefined || /\s/.test(after)).toBe(true);
      starts.add(at);
    }
    expect(starts.size).toBeGreaterThan(20);
  });

  test("the stream with repeatMid 0 is the stream without the option (no extra draws), and repeatMid 1 makes the repeat documents mid-repeats (> 10 whole-passage repeats in 300 documents → ≤ 1)", () => {
    const take = (o: Partial<StreamOptions>, n: number) => {
      const it = trainingDocuments(filler, { seed: 3, retrievalShare: 0.6, ...o });
      return Array.from({ length: n }, () => it.next().value!.text);
    };
    expect(take({ repeatMid: 0 }, 200)).toEqual(take({}, 200));
    // A whole-passage repeat's first 80 characters come again after a newline; a mid-repeat's only if its
    // copy happens to start at the filler's first word (one here).
    const wholePassage = (texts: string[]) => texts.filter((t) => t.indexOf(`\n${t.slice(0, 80)}`) > 0).length;
    expect(wholePassage(take({}, 300))).toBeGreaterThan(10);
    expect(wholePassage(take({ repeatMid: 1 }, 300))).toBeLessThanOrEqual(1);
    expect(() => take({ repeatMid: 1.5 }, 1)).toThrow(/repeatMid expects a number in \[0, 1\], got 1.5/);
  });

  test("needle: one fact line at 5–95% depth, none elsewhere; the last line asks for it and ends 'A: the secret number of <name> is <answer>'", () => {
    for (let seed = 1; seed <= 30; seed++) {
      const doc = needleDocument(new Rng(seed), filler, 3000);
      const lines = doc.text.split("\n");
      const needles = lines
        .map((l, i) => [i, /^The secret number of (\w+) is (\d{4})\.$/.exec(l)] as const)
        .filter(([, m]) => m !== null);
      expect(needles).toHaveLength(1);
      const [at, needle] = needles[0];
      const depth = doc.text.indexOf(lines[at]) / doc.text.length;
      expect(depth).toBeGreaterThan(0.05);
      expect(depth).toBeLessThan(0.95);
      expect(lines[lines.length - 1]).toBe(
        `Q: What is the secret number of ${needle![1]}? A: the secret number of ${needle![1]} is ${doc.answer}`,
      );
      expect(needle![2]).toBe(doc.answer);
    }
  });

  test("needle depths: a range puts the fact there (0–0.05 at the start, 0.95–1 at the end); a bad range is refused", () => {
    const depthOf = (depths: readonly [number, number], seed: number) => {
      const doc = needleDocument(new Rng(seed), filler, 3000, depths);
      const at = doc.text.search(/^The secret number of \w+ is \d{4}\.$/m);
      // The fact's offset over the filler's length (the text less the fact and the question lines).
      const lines = doc.text.split("\n");
      const fixed = lines.filter((l) => /^(The secret number|Q: What is the secret)/.test(l)).join("\n").length;
      return at / (doc.text.length - fixed);
    };
    for (let seed = 1; seed <= 30; seed++) {
      expect(depthOf([0, 0.05], seed)).toBeLessThan(0.1);
      expect(depthOf([0.95, 1], seed)).toBeGreaterThan(0.85);
    }
    // The default is what it was: the same text as with [0.1, 0.9] spelled out.
    expect(needleDocument(new Rng(7), filler, 3000)).toEqual(needleDocument(new Rng(7), filler, 3000, [0.1, 0.9]));
    expect(() => trainingStream(filler, { seed: 1, needleDepths: [0.5, 0.2] })).toThrow(
      /needle depths 0 ≤ min ≤ max ≤ 1, got \[0\.5,0\.2\]/,
    );
  });

  test.each(kinds)("%s is deterministic for a seed and differs between seeds", (kind) => {
    expect(make(kind, 5, 2000)).toEqual(make(kind, 5, 2000));
    expect(make(kind, 5, 2000).text).not.toBe(make(kind, 6, 2000).text);
  });

  test(`trainingStream: deterministic; each WordNet document exactly once; retrieval share of characters ${RETRIEVAL_SHARE} ± 0.01`, () => {
    const wordnet = loadWordnet().train.slice(0, 5000);
    const stream = [...trainingStream(wordnet, { seed: 3 })];
    expect([...trainingStream(wordnet, { seed: 3 })]).toEqual(stream);
    expect([...trainingStream(wordnet, { seed: 4 })]).not.toEqual(stream);
    const known = new Set(wordnet);
    const fromWordnet = stream.filter((d) => known.has(d));
    expect([...fromWordnet].sort()).toEqual([...wordnet].sort());
    expect(fromWordnet).not.toEqual(wordnet); // shuffled
    const retrieval = stream.filter((d) => !known.has(d));
    // Lengths in [min, max + one filler document]: short enough to fit in a 512-token training window.
    const longestFiller = Math.max(...wordnet.map((d) => d.length));
    expect(
      retrieval.every(
        (d) => d.length >= DEFAULT_MIN_CHARS && d.length <= DEFAULT_MAX_CHARS + longestFiller && d.includes("\n"),
      ),
    ).toBe(true);
    const share = corpusSize(retrieval).chars / corpusSize(stream).chars;
    expect(Math.abs(share - RETRIEVAL_SHARE)).toBeLessThan(0.01);
  });

  test("retrievalLengths scales the defaults (for 512-token windows) with the window", () => {
    expect(retrievalLengths(512)).toEqual({ minChars: DEFAULT_MIN_CHARS, maxChars: DEFAULT_MAX_CHARS });
    expect(retrievalLengths(1024)).toEqual({ minChars: 2 * DEFAULT_MIN_CHARS, maxChars: 2 * DEFAULT_MAX_CHARS });
    expect(retrievalLengths(32)).toEqual({
      minChars: Math.round(DEFAULT_MIN_CHARS / 16),
      maxChars: Math.round(DEFAULT_MAX_CHARS / 16),
    });
  });

  test("trainingStream with retrievalShare 0 yields the WordNet documents only", () => {
    const wordnet = loadWordnet().train.slice(0, 500);
    const stream = [...trainingStream(wordnet, { seed: 1, retrievalShare: 0 })];
    expect([...stream].sort()).toEqual([...wordnet].sort());
  });
});

/** One token per character, EOS 0: enough to check stream positions by hand. */
const charTokenizer = {
  eos: 0,
  encode: (text: string) => [...text].map((c) => c.charCodeAt(0)),
} as unknown as TextTokenizer;

describe("training windows", () => {
  const wordnet = loadWordnet().train.slice(0, 400);
  const documents = [...trainingDocuments(wordnet, { seed: 2, retrievalShare: 0.5, minChars: 300, maxChars: 900 })];

  test("trainingDocuments marks exactly the generated documents, in trainingStream's order", () => {
    expect(documents.map((d) => d.text)).toEqual([
      ...trainingStream(wordnet, { seed: 2, retrievalShare: 0.5, minChars: 300, maxChars: 900 }),
    ]);
    const known = new Set(wordnet);
    expect(documents.every((d) => d.retrieval === !known.has(d.text))).toBe(true);
    expect(documents.filter((d) => d.retrieval).length).toBeGreaterThan(50);
  });

  test("tokenizeDocuments: each retrieval document's end is the EOS right after its last token", () => {
    const { tokens, retrievalEnds } = tokenizeDocuments(documents, charTokenizer);
    const retrieval = documents.filter((d) => d.retrieval);
    expect(retrievalEnds.length).toBe(retrieval.length);
    retrieval.forEach((doc, i) => {
      const end = retrievalEnds[i];
      expect(tokens[end]).toBe(0);
      const text = String.fromCharCode(...tokens.subarray(end - doc.text.length, end));
      expect(text).toBe(doc.text);
    });
  });

  test("answer windows: share 1 ends every window's targets at a retrieval EOS; share 0 draws as before; a bad share is refused", () => {
    const { tokens, retrievalEnds } = tokenizeDocuments(documents, charTokenizer);
    const T = 1000;
    const ends = new Set(retrievalEnds.filter((e) => e >= T));
    const sampler = new BatchSampler(tokens, 4, T, 9, { share: 1, ends: retrievalEnds });
    const inputs = new Int32Array(4 * T);
    const targets = new Int32Array(4 * T);
    let aligned = 0;
    for (let step = 0; step < 20; step++) {
      sampler.next(inputs, targets);
      for (let b = 0; b < 4; b++) {
        const window = targets.subarray(b * T, (b + 1) * T);
        // The window's last target is an EOS, and the window's inputs are the tokens before it.
        expect(window[T - 1]).toBe(0);
        expect(inputs[b * T + 1]).toBe(window[0]);
        for (const end of ends) {
          if (tokens.subarray(end - T + 1, end + 1).every((t, i) => t === window[i])) {
            aligned++;
            break;
          }
        }
      }
    }
    expect(aligned).toBe(80);
    // Share 0 (the default) consumes the generator exactly as a sampler without answer windows.
    const a = new BatchSampler(tokens, 2, 64, 3);
    const b = new BatchSampler(tokens, 2, 64, 3, { share: 0, ends: retrievalEnds });
    const [x, y] = [new Int32Array(128), new Int32Array(128)];
    const [u, v] = [new Int32Array(128), new Int32Array(128)];
    a.next(x, y);
    b.next(u, v);
    expect(u).toEqual(x);
    expect(a.state).toEqual(b.state);
    expect(() => new BatchSampler(tokens, 2, 64, 3, { share: 0.5, ends: new Int32Array(0) })).toThrow(/answer windows/);
    expect(() => new BatchSampler(tokens, 2, 64, 3, { share: 1.5, ends: retrievalEnds })).toThrow(/answer windows/);
  });
});
