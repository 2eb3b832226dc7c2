/**
 * The byte-level BPE trainer: its merges equal a naive recount-every-step trainer's, the tokenizer.json
 * it writes makes @huggingface/tokenizers produce exactly the ids of the trainer's own encoder, decoding
 * inverts encoding for any text, kvslim's hfTokenizer loads the directory, and `kvslim tokenizer train`
 * writes that directory and fails cleanly on bad flags.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { Tokenizer } from "@huggingface/tokenizers";
import { expectFailure, runCli } from "./helpers/cli.js";
import { UsageError } from "../src/errors.js";
import { hfTokenizer } from "../src/tokenizer/hf-tokenizer.js";
import {
  BpeEncoder,
  MIN_VOCAB_SIZE,
  saveTokenizer,
  tokenizerJson,
  trainBpe,
  type TrainedBpe,
} from "../src/tokenizer/train-bpe.js";
import { trainingStream } from "../src/train/data/retrieval.js";
import { wordnetTrain } from "../src/train/data/wordnet.js";
import { tempDir } from "./helpers/models.js";
import { naiveTrainBpe } from "./helpers/naive-bpe.js";

/** Varied text: non-ASCII, emoji (with modifiers and ZWJ), whitespace runs, digits, contractions, specials as text. */
const TEXTS = [
  "Hello world",
  " leading space",
  "  two  spaces  ",
  "line\nbreak\n\n",
  "\ttab\r\n",
  "12345 3.14 1e-9",
  "It's don't I'LL we've you'd",
  "Hello, world! (yes) [no] {maybe} <s> </s> <pad>",
  "café naïve Ünïcödé",
  "中文字符 and 日本語のテキスト",
  "🙂 👍🏽 👨‍👩‍👧 🇫🇷",
  "a+b=c; x*y <= z",
  "https://x.org/a?b=1&c=%20",
  "Ελληνικά русский עברית",
  "\u00a0non-breaking\u2003em space\u3000ideographic",
  "The code of the blue door is 4821.",
  "",
  " ",
  "\n",
];

let dir: string;
let corpus: string[];
let bpe: TrainedBpe;
let encoder: BpeEncoder;
let library: Tokenizer;

beforeAll(() => {
  dir = tempDir("kvslim-tok-");
  // A small slice of the real corpus, retrieval documents and some non-ASCII text, so merges span bytes.
  corpus = [
    ...trainingStream(wordnetTrain().slice(0, 3000), { seed: 7, minChars: 800, maxChars: 1500 }),
    ...TEXTS,
    ...TEXTS,
  ];
  bpe = trainBpe(corpus, { vocabSize: 1200 });
  encoder = new BpeEncoder(bpe);
  library = new Tokenizer(tokenizerJson(bpe) as Record<string, unknown>, {});
});
afterAll(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

describe("training", () => {
  test("learns a a, then a b, then aa ab on 'aaabdaaabac' (hand-counted: 4, then 2 tied with 'aa a', then 2)", () => {
    const trained = trainBpe(["aaabdaaabac"], { vocabSize: 300 });
    expect(trained.merges).toEqual([
      ["a", "a"],
      ["a", "b"],
      ["aa", "ab"],
    ]); // then every pair is seen once: stop
    expect(trained.tokens.length).toBe(MIN_VOCAB_SIZE + 3);
  });

  test("every merge equals the naive recount-every-step trainer's on a WordNet slice with retrieval and non-ASCII text", () => {
    const texts = [...corpus.slice(0, 1000), ...TEXTS, ...TEXTS]; // TEXTS twice: multi-byte pairs seen twice
    const fast = trainBpe(texts, { vocabSize: 600 });
    const naive = naiveTrainBpe(texts, 600);
    expect(fast.merges.length).toBeGreaterThan(300);
    expect(fast.merges).toEqual(naive.merges);
    expect(fast.tokens).toEqual(naive.tokens);
  });

  test("the vocabulary has the specials at 0–2, the 256 bytes at 3–258, and the requested size", () => {
    expect(bpe.tokens.slice(0, 3)).toEqual(["<s>", "</s>", "<pad>"]);
    expect(new Set(bpe.tokens).size).toBe(bpe.tokens.length);
    expect(bpe.tokens.length).toBe(1200);
    expect(bpe.tokens.slice(3, 259).every((t) => t.length === 1)).toBe(true);
  });

  test.each([0, 258, 12.5, Number.NaN, 2 ** 21])(
    "vocabSize %s is refused with a UsageError naming the minimum 259",
    (vocabSize) => {
      expect(() => trainBpe(["abc"], { vocabSize })).toThrow(UsageError);
      expect(() => trainBpe(["abc"], { vocabSize })).toThrow(/259/);
    },
  );
});

describe("encoding", () => {
  test("@huggingface/tokenizers gives exactly the ids of the trainer's own encoder on varied text", () => {
    // The library alone matches special-token text ("<s>") as the special token; hfTokenizer does not (below).
    const plain = TEXTS.filter((t) => !t.includes("<s>"));
    for (const text of [...plain, ...corpus.slice(3000, 3050)]) {
      expect(library.encode(text, { add_special_tokens: false }).ids, JSON.stringify(text)).toEqual(
        encoder.encode(text),
      );
    }
  });

  test("@huggingface/tokenizers gives exactly the trainer encoder's ids on random strings (fast-check, all of Unicode)", () => {
    fc.assert(
      fc.property(
        fc.oneof(fc.string({ unit: "binary", maxLength: 60 }), fc.string({ unit: "grapheme", maxLength: 60 })),
        (text) => {
          expect(library.encode(text, { add_special_tokens: false }).ids).toEqual(encoder.encode(text));
        },
      ),
      { numRuns: 300 },
    );
  });

  test("the encoding compresses: > 2.5 bytes per token at 1200 ids on held-out WordNet text", () => {
    const text = wordnetTrain().slice(5000, 5500).join("\n");
    expect(Buffer.byteLength(text) / encoder.encode(text).length).toBeGreaterThan(2.5);
  });

  test("decode(encode(x)) === x for the trainer's encoder and the library, on fixed and random text (non-ASCII, emoji)", () => {
    for (const text of TEXTS) {
      expect(encoder.decode(encoder.encode(text))).toBe(text);
      if (text !== "") expect(library.decode(library.encode(text, { add_special_tokens: false }).ids, {})).toBe(text);
    }
    fc.assert(
      fc.property(fc.string({ unit: "binary", maxLength: 60 }), (text) => {
        expect(encoder.decode(encoder.encode(text))).toBe(text);
      }),
      { numRuns: 300 },
    );
  });
});

describe("the written directory", () => {
  let out: string;
  beforeAll(() => {
    out = path.join(dir, "saved");
    saveTokenizer(bpe, out);
  });

  test("holds tokenizer.json (BPE, ByteLevel pre-tokenizer and decoder, 3 special added tokens) and tokenizer_config.json", () => {
    const json = JSON.parse(fs.readFileSync(path.join(out, "tokenizer.json"), "utf8"));
    expect(json.model.type).toBe("BPE");
    expect(Object.keys(json.model.vocab)).toHaveLength(1200);
    expect(json.model.merges).toHaveLength(bpe.merges.length);
    expect(json.pre_tokenizer).toMatchObject({ type: "ByteLevel", add_prefix_space: false, use_regex: true });
    expect(json.decoder.type).toBe("ByteLevel");
    expect(
      json.added_tokens.map((t: { id: number; content: string; special: boolean }) => [t.id, t.content, t.special]),
    ).toEqual([
      [0, "<s>", true],
      [1, "</s>", true],
      [2, "<pad>", true],
    ]);
    const config = JSON.parse(fs.readFileSync(path.join(out, "tokenizer_config.json"), "utf8"));
    expect(config).toMatchObject({ bos_token: "<s>", eos_token: "</s>", add_bos_token: true });
  });

  test("hfTokenizer loads it: BOS 0, EOS 1, encode = [BOS, ...trainer ids], decode(encode(x)) === x", () => {
    const tok = hfTokenizer(out);
    expect([tok.bos, tok.eos, tok.addBos, tok.vocabSize]).toEqual([0, 1, true, 1200]);
    for (const text of [...TEXTS, ...corpus.slice(3000, 3020)]) {
      const ids = tok.encode(text);
      expect(ids).toEqual([0, ...encoder.encode(text)]);
      expect(tok.decode(ids)).toBe(text);
    }
    expect(tok.encode("<s>x</s>", { addBos: false, parseSpecial: true })).toEqual([0, ...encoder.encode("x"), 1]);
  });

  test("the library's own post-processor adds BOS when asked for special tokens", () => {
    const fromFile = new Tokenizer(JSON.parse(fs.readFileSync(path.join(out, "tokenizer.json"), "utf8")), {});
    expect(fromFile.encode("Hello world").ids).toEqual([0, ...encoder.encode("Hello world")]);
  });
});

describe("kvslim tokenizer train", () => {
  const run = runCli;

  let txt: string;
  beforeAll(() => {
    txt = path.join(dir, "corpus.txt");
    fs.writeFileSync(txt, corpus.slice(0, 800).join("\n"));
  });

  test("--corpus FILE.txt writes a directory hfTokenizer loads, and prints vocabulary, merges, corpus size and time", async () => {
    const out = path.join(dir, "cli-tok");
    const r = await run("tokenizer", "train", "--corpus", txt, "--vocab", "400", "--out", out);
    expect(r.code, r.err).toBe(0);
    expect(r.out).toMatch(/vocabulary: 400 tokens/);
    expect(r.out).toMatch(/merges learned: \d+/);
    expect(r.out).toMatch(/corpus: .*corpus\.txt, 1 documents, \d+ characters/);
    expect(r.out).toMatch(/time: [\d.]+ s/);
    const tok = hfTokenizer(out);
    expect(tok.vocabSize).toBe(400);
    expect(tok.decode(tok.encode("The code of the blue door is 4821. 🙂"))).toBe(
      "The code of the blue door is 4821. 🙂",
    );
  });

  test("refuses a non-empty --out without --force (FileExistsError, exit 1, one line) and overwrites with --force", async () => {
    const out = path.join(dir, "occupied");
    fs.mkdirSync(out);
    fs.writeFileSync(path.join(out, "notes.txt"), "keep me");
    expectFailure(
      await run("tokenizer", "train", "--corpus", txt, "--vocab", "300", "--out", out),
      1,
      "FileExistsError",
      /--force/,
    );
    expect(fs.readdirSync(out)).toEqual(["notes.txt"]);
    const r = await run("tokenizer", "train", "--corpus", txt, "--vocab", "300", "--out", out, "--force");
    expect(r.code, r.err).toBe(0);
    expect(fs.readdirSync(out).sort()).toEqual(["notes.txt", "tokenizer.json", "tokenizer_config.json"]);
    expect(hfTokenizer(out).vocabSize).toBe(300);
  });

  test("--corpus wordnet --vocab 300 learns exactly the first 41 merges of the shipped models' tokenizer (models/kvslim-tiny/tokenizer.json), in order", async () => {
    const out = path.join(dir, "wordnet-300");
    const r = await run("tokenizer", "train", "--corpus", "wordnet", "--vocab", "300", "--out", out);
    expect(r.code, r.err).toBe(0);
    const merges = (file: string): unknown[] => JSON.parse(fs.readFileSync(file, "utf8")).model.merges;
    const learned = merges(path.join(out, "tokenizer.json"));
    const shipped = merges(path.join(import.meta.dirname, "..", "models", "kvslim-tiny", "tokenizer.json"));
    expect(learned.length).toBe(300 - MIN_VOCAB_SIZE); // 41
    expect(shipped.length).toBe(4096 - MIN_VOCAB_SIZE);
    expect(learned).toEqual(shipped.slice(0, learned.length));
  });

  test.each(["abc", "258", "12.5", "0", "-5", "99999999"])(
    "--vocab %s fails with a UsageError (exit 2, one line) naming --vocab",
    async (vocab) => {
      expectFailure(
        await run("tokenizer", "train", "--corpus", txt, "--vocab", vocab, "--out", path.join(dir, "never")),
        2,
        "UsageError",
        /--vocab/,
      );
      expect(fs.existsSync(path.join(dir, "never"))).toBe(false);
    },
  );

  test("--corpus that is neither 'wordnet' nor an existing .txt file fails with a UsageError", async () => {
    expectFailure(
      await run("tokenizer", "train", "--corpus", path.join(dir, "missing.txt"), "--out", path.join(dir, "never")),
      2,
      "UsageError",
      /no file/,
    );
    expectFailure(
      await run("tokenizer", "train", "--corpus", "shakespeare", "--out", path.join(dir, "never")),
      2,
      "UsageError",
      /\.txt/,
    );
  });
});
