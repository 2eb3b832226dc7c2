/**
 * The GGUF tokenizers against llama.cpp itself (node-llama-cpp): tiny GGUF models carrying the real
 * Llama 2 SentencePiece vocabulary and the real Llama 3 byte-level BPE vocabulary (under several
 * tokenizer.ggml.pre settings) must tokenize and detokenize exactly as llama.cpp does.
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import fc from "fast-check";
import { getLlama, LlamaLogLevel, type Llama, type LlamaModel, type Token } from "node-llama-cpp";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { tokenizerFromGguf, type TextTokenizer } from "../src/tokenizer/tokenizer.js";
import {
  llama2Vocab,
  llama3Vocab,
  metadataMap,
  TOKEN_TYPE,
  tokenizerEntries,
  writeTinyGguf,
  type TinyVocab,
} from "./helpers/tiny-gguf.js";

/** Strings that exercise every branch we know of: spaces, newlines, digits, contractions, scripts, bytes, specials. */
const TRICKY = [
  "",
  " ",
  "  ",
  "   ",
  "Hello world",
  " Hello",
  "  leading spaces",
  "trailing spaces   ",
  "many     inner   spaces",
  "line\nbreak",
  "\n",
  "\n\n\n",
  "a\r\nb",
  " \n ",
  "\ttab\tseparated",
  "\t",
  " \t\n x",
  "mixed \t \n\n  end ",
  "lardan jeho milyon", // Llama 3 tokens that merging alone would split (ignore_merges)
  "aaa",
  "eee ooo",
  "xxx",
  "mmmmm",
  ".......",
  "=====",
  "0",
  "12",
  "123",
  "1234567",
  "3.14159",
  "1,000,000",
  "v2.0-rc1",
  "x86_64",
  "a1b2c3",
  "It's",
  "don't",
  "I'LL",
  "we've",
  "they're",
  "she'd",
  "'s",
  "' s",
  "''",
  "rock 'n' roll",
  "O'Neil's",
  "Hello, world!",
  "wait... what?!",
  "(parens) [brackets] {braces} <angles>",
  "a+b=c; x*y/z",
  "$5 & 10%",
  "#tag @user",
  "Hello , world . Yes ? No !",
  "it 's a dog 's life",
  "a ' b ' c",
  "we 're here , they 've gone",
  "I 'm",
  "don 't",
  " n't",
  "  ,",
  "x ,y",
  " 'll",
  "email@example.com",
  "https://example.com/path?q=1&r=2",
  "snake_case camelCase kebab-case",
  "C++ && C#",
  "café naïve résumé",
  "Ünïcödé",
  "ẞ straße",
  "Ελληνικά",
  "русский текст",
  "עברית",
  "العربية",
  "हिन्दी",
  "中文字符",
  "日本語のテキスト",
  "한국어",
  "mixed 中 english 文字",
  "ａｂｃ１２３",
  "🙂",
  "👍🏽",
  "👨‍👩‍👧",
  "🙂text🙂",
  "\u00a0nbsp\u00a0",
  "\u2009thin\u202fspaces\u3000",
  "\u0085",
  "\u200b",
  "\ufeffbom",
  "e\u0301",
  "\u0300",
  "a\u1C89b",
  "\u1C89's",
  "\u{116D0}123",
  "x\u1B4E!y", // assigned after Unicode 15.1 (llama.cpp's tables)
  "\u{10FFFF}",
  "\u{1F9FF}",
  "\uFFFD",
  "\u{E000}",
  "\u{1D11E}",
  "\u00ad",
  "\x00",
  "\x7f",
  "\x1b[31m",
  "<s>",
  "</s>",
  "<s>hello</s>",
  "a<s>b",
  " <s> ",
  "<unk>",
  "<|begin_of_text|>",
  "<|eot_id|>",
  "x<|eot_id|>y",
  "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>",
  "<think>reason</think> answer",
  "x<|user|>y",
  "<|assistant|>",
  " <tool_call> ",
  "<|im_end|>",
  "a<|user|><|user|>b",
  "<0x41>",
  "▁",
  "▁▁x",
  "Ġ",
  "\u0100",
];

/** Random texts assembled from risky pieces and arbitrary code points. */
const randomText = fc
  .array(
    fc.oneof(
      fc.constantFrom(
        " ",
        "  ",
        "\n",
        "\t",
        "\r\n",
        "'s",
        "'LL",
        "é",
        "中",
        "🙂",
        "<s>",
        "<|eot_id|>",
        ".",
        ",",
        "7",
        "123",
        "\u00a0",
        "▁",
      ),
      fc.string({ unit: "grapheme-ascii", maxLength: 6 }),
      fc.string({ unit: "grapheme", maxLength: 3 }),
      fc.string({ unit: "binary", maxLength: 3 }),
      fc.string({
        unit: fc.constantFrom(" ", "\n", "\r", "\t", "\u00a0", "\u3000", "\u0085", "a", "1", "!", "\u0300", "\u1C89"),
        maxLength: 8,
      }),
    ),
    { maxLength: 12 },
  )
  .map((pieces) => pieces.join(""));

const RANDOM_RUNS = 100;

let llama: Llama;
let dir: string;

beforeAll(async () => {
  llama = await getLlama({ gpu: false, build: "never", logLevel: LlamaLogLevel.error });
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "kvslim-tokenizer-"));
});

afterAll(async () => {
  await llama?.dispose();
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

/** Writes the vocabulary as a tiny model, loads it into llama.cpp and builds our tokenizer from the same metadata. */
async function load(name: string, vocab: TinyVocab): Promise<{ model: LlamaModel; tok: TextTokenizer }> {
  const modelPath = path.join(dir, `${name}.gguf`);
  writeTinyGguf(modelPath, vocab);
  const model = await llama.loadModel({ modelPath });
  return { model, tok: tokenizerFromGguf(metadataMap(tokenizerEntries(vocab))) };
}

/** The checks every vocabulary gets, each against llama.cpp. */
function agreesWithLlamaCpp(name: string, vocab: () => Promise<TinyVocab>, options: { randomRuns: number }) {
  describe(`${name} vocabulary matches llama.cpp`, () => {
    let model: LlamaModel;
    let tok: TextTokenizer;
    beforeAll(async () => ({ model, tok } = await load(name, await vocab())));
    afterAll(async () => model?.dispose());

    const ours = (text: string, parseSpecial = false) => tok.encode(text, { addBos: false, parseSpecial });
    const theirs = (text: string, parseSpecial = false): number[] => Array.from(model.tokenize(text, parseSpecial));
    const detokenize = (ids: number[], special = false) => model.detokenize(ids as Token[], special);

    it("encode gives llama.cpp's ids on the tricky strings (exact)", () => {
      for (const text of TRICKY) expect({ text, ids: ours(text) }).toEqual({ text, ids: theirs(text) });
    });

    it("encode with parseSpecial gives llama.cpp's ids on the tricky strings (exact)", () => {
      for (const text of TRICKY) expect({ text, ids: ours(text, true) }).toEqual({ text, ids: theirs(text, true) });
    });

    it(`encode gives llama.cpp's ids on ${options.randomRuns} random strings (exact)`, () => {
      fc.assert(
        fc.property(randomText, fc.boolean(), (text, special) => {
          expect(ours(text, special)).toEqual(theirs(text, special));
        }),
        { numRuns: options.randomRuns, seed: 42 },
      );
    });

    it("decode gives llama.cpp's text for encoded tricky strings, with and without BOS and special text", () => {
      for (const text of TRICKY) {
        const ids = theirs(text, true);
        for (const seq of [ids, tok.bos === null ? ids : [tok.bos, ...ids]]) {
          expect({ seq, text: tok.decode(seq) }).toEqual({ seq, text: detokenize(seq) });
          expect({ seq, text: tok.decode(seq, { skipSpecial: false }) }).toEqual({ seq, text: detokenize(seq, true) });
        }
      }
    });

    it(`decode gives llama.cpp's text for ${options.randomRuns} random id sequences`, () => {
      fc.assert(
        fc.property(fc.array(fc.nat({ max: tok.vocabSize - 1 }), { maxLength: 16 }), fc.boolean(), (ids, special) => {
          expect(tok.decode(ids, { skipSpecial: !special })).toEqual(detokenize(ids, special));
        }),
        { numRuns: options.randomRuns, seed: 7 },
      );
    });

    it("decode(encode(x)) gives x back wherever llama.cpp's round trip does", () => {
      let agreed = 0;
      for (const text of TRICKY) {
        if (model.detokenize(model.tokenize(text)) !== text) continue;
        expect(tok.decode(ours(text))).toBe(text);
        agreed++;
      }
      expect(agreed).toBeGreaterThan(TRICKY.length / 2);
    });
  });
}

/** The vocabulary with extra tokens appended (score 0). */
async function withAddedTokens(vocab: Promise<TinyVocab>, added: [string, number][]): Promise<TinyVocab> {
  const v = await vocab;
  return {
    ...v,
    tokens: [...v.tokens, ...added.map(([text]) => text)],
    tokenTypes: [...v.tokenTypes!, ...added.map(([, type]) => type)],
    scores: v.scores && [...v.scores, ...added.map(() => 0)],
  };
}
/** User-defined tokens (always matched), a control token (matched only with parseSpecial), and a "normal"
 * <|im_end|> that llama.cpp turns into a control token because it ends generation. */
const ADDED: [string, number][] = [
  ["<|user|>", TOKEN_TYPE.userDefined],
  ["<think>", TOKEN_TYPE.userDefined],
  ["</think>", TOKEN_TYPE.userDefined],
  ["<|assistant|>", TOKEN_TYPE.control],
  ["<tool_call>", TOKEN_TYPE.userDefined],
  ["<|im_end|>", TOKEN_TYPE.normal],
];

agreesWithLlamaCpp("llama2-spm", llama2Vocab, { randomRuns: RANDOM_RUNS });
agreesWithLlamaCpp("llama2-spm plus added tokens", () => withAddedTokens(llama2Vocab(), ADDED), {
  randomRuns: RANDOM_RUNS / 2,
});
agreesWithLlamaCpp("llama3-bpe plus added tokens", () => withAddedTokens(llama3Vocab(), ADDED), {
  randomRuns: RANDOM_RUNS / 2,
});
agreesWithLlamaCpp("llama3-bpe (pre llama-bpe)", () => llama3Vocab("llama-bpe"), { randomRuns: RANDOM_RUNS });
for (const pre of ["gpt-2", "default", "qwen2", "smollm"]) {
  agreesWithLlamaCpp(`llama3 merges with pre ${pre}`, () => llama3Vocab(pre), { randomRuns: RANDOM_RUNS / 2 });
}
