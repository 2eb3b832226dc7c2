/**
 * Hugging Face tokenizer directories: tokenizer.json files written from the real Llama 3 and Llama 2
 * vocabularies (in the shape Meta's files have) must load through loadHfTokenizer, give the same ids as
 * the GGUF path for the same vocabulary, and decode and stream consistently.
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { FormatError } from "../src/errors.js";
import { loadHfTokenizer, tokenizerFromGguf, type TextTokenizer } from "../src/tokenizer/tokenizer.js";
import { llama2Vocab, llama3Vocab, metadataMap, tokenizerEntries, type TinyVocab } from "./helpers/tiny-gguf.js";

/** Ordinary text (the HF regex engine and llama.cpp's Unicode tables differ on exotic code points). */
const TEXTS = [
  "Hello world",
  " Hello",
  "  two  spaces  ",
  "line\nbreak\n\n",
  "\ttab",
  "12345 3.14",
  "It's don't I'LL we've",
  "Hello, world! (yes) [no] {maybe}",
  "café naïve",
  "中文字符 and 日本語",
  "🙂 👍🏽",
  "a+b=c; x*y",
  "https://x.org/a?b=1",
  "<s> and <|eot_id|> as text",
  "mixed\r\nline endings\r",
  "trailing  ",
];
const asciiText = fc.string({ unit: "grapheme-ascii", maxLength: 40 });

const LLAMA3_SPLIT =
  "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const CHAT_TEMPLATE = "{{ bos_token }}{% for m in messages %}{{ m.content }}{% endfor %}";

const added = (id: number, content: string) => ({
  id,
  content,
  single_word: false,
  lstrip: false,
  rstrip: false,
  normalized: false,
  special: true,
});
const templateWith = (bos: string) => ({
  type: "TemplateProcessing",
  single: [{ SpecialToken: { id: bos, type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } }],
  pair: [
    { SpecialToken: { id: bos, type_id: 0 } },
    { Sequence: { id: "A", type_id: 0 } },
    { Sequence: { id: "B", type_id: 1 } },
  ],
  special_tokens: {},
});

/** Meta-Llama-3's tokenizer.json layout: specials only as added tokens, post-processor adds BOS. */
function llama3Files(v: TinyVocab): Record<string, object> {
  const vocab = Object.fromEntries(v.tokens.slice(0, 128000).map((t, i) => [t, i]));
  return {
    "tokenizer.json": {
      version: "1.0",
      added_tokens: v.tokens.slice(128000).map((t, i) => added(128000 + i, t)),
      normalizer: null,
      pre_tokenizer: {
        type: "Sequence",
        pretokenizers: [
          { type: "Split", pattern: { Regex: LLAMA3_SPLIT }, behavior: "Isolated", invert: false },
          { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: false },
        ],
      },
      post_processor: {
        type: "Sequence",
        processors: [
          { type: "ByteLevel", add_prefix_space: true, trim_offsets: false, use_regex: true },
          templateWith("<|begin_of_text|>"),
        ],
      },
      decoder: { type: "ByteLevel", add_prefix_space: true, trim_offsets: true, use_regex: true },
      model: {
        type: "BPE",
        dropout: null,
        unk_token: null,
        fuse_unk: false,
        byte_fallback: false,
        ignore_merges: true,
        vocab,
        merges: v.merges,
      },
    },
    "tokenizer_config.json": {
      bos_token: "<|begin_of_text|>",
      eos_token: "<|eot_id|>",
      clean_up_tokenization_spaces: true,
      chat_template: CHAT_TEMPLATE,
    },
    "generation_config.json": { bos_token_id: 128000, eos_token_id: [128001, 128008, 128009] },
  };
}

/** Llama-2's tokenizer.json layout: SentencePiece as BPE with byte fallback, ▁ normalizer, Strip decoder. */
function llama2Files(v: TinyVocab): Record<string, object> {
  return {
    "tokenizer.json": {
      version: "1.0",
      added_tokens: [added(0, "<unk>"), added(1, "<s>"), added(2, "</s>")],
      normalizer: {
        type: "Sequence",
        normalizers: [
          { type: "Prepend", prepend: "\u2581" },
          { type: "Replace", pattern: { String: " " }, content: "\u2581" },
        ],
      },
      pre_tokenizer: null,
      post_processor: templateWith("<s>"),
      decoder: {
        type: "Sequence",
        decoders: [
          { type: "Replace", pattern: { String: "\u2581" }, content: " " },
          { type: "ByteFallback" },
          { type: "Fuse" },
          { type: "Strip", content: " ", start: 1, stop: 0 },
        ],
      },
      model: {
        type: "BPE",
        dropout: null,
        unk_token: "<unk>",
        fuse_unk: true,
        byte_fallback: true,
        vocab: Object.fromEntries(v.tokens.map((t, i) => [t, i])),
        merges: mergesOf(v),
      },
    },
    "tokenizer_config.json": {
      add_bos_token: true,
      add_eos_token: false,
      bos_token: "<s>",
      eos_token: "</s>",
      clean_up_tokenization_spaces: false,
    },
  };
}

/** Llama 2 merges in score order (the tiny-gguf scores are minus the merge rank). */
function mergesOf(v: TinyVocab): string[] {
  const idOf = new Map(v.tokens.map((t, i) => [t, i]));
  const merges: [string, number][] = [];
  for (const [t, i] of idOf) {
    const chars = Array.from(t);
    for (let k = 1; k < chars.length; k++) {
      const [a, b] = [chars.slice(0, k).join(""), chars.slice(k).join("")];
      if (idOf.has(a) && idOf.has(b) && v.scores![i] > -1e6) merges.push([`${a} ${b}`, v.scores![i]]);
    }
  }
  return merges.sort((x, y) => y[1] - x[1]).map(([m]) => m);
}

let dir: string;
const write = (name: string, files: Record<string, object | string>) => {
  const at = path.join(dir, name);
  fs.mkdirSync(at, { recursive: true });
  for (const [file, content] of Object.entries(files))
    fs.writeFileSync(path.join(at, file), typeof content === "string" ? content : JSON.stringify(content));
  return at;
};
beforeAll(() => void (dir = fs.mkdtempSync(path.join(os.tmpdir(), "kvslim-hf-tokenizer-"))));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

for (const [name, vocabOf, filesOf] of [
  ["Llama 3 (ByteLevel BPE)", () => llama3Vocab("llama-bpe"), llama3Files],
  ["Llama 2 (SentencePiece BPE, byte fallback)", llama2Vocab, llama2Files],
] as const) {
  describe(`${name} tokenizer.json`, () => {
    let hf: TextTokenizer;
    let gguf: TextTokenizer;
    beforeAll(async () => {
      const vocab = await vocabOf();
      hf = loadHfTokenizer(write(name.split(" ")[1], filesOf(vocab)));
      gguf = tokenizerFromGguf(metadataMap(tokenizerEntries(vocab)));
    });

    it("gives the GGUF path's ids on ordinary strings, with and without special tokens (exact)", () => {
      for (const text of TEXTS) {
        for (const parseSpecial of [false, true]) {
          expect({ text, ids: hf.encode(text, { parseSpecial }) }).toEqual({
            text,
            ids: gguf.encode(text, { parseSpecial }),
          });
        }
      }
    });

    it("gives the GGUF path's ids on 100 random ASCII strings (exact)", () => {
      fc.assert(
        fc.property(asciiText, (text) => void expect(hf.encode(text)).toEqual(gguf.encode(text))),
        { numRuns: 100, seed: 11 },
      );
    });

    it("reads BOS, EOS, the BOS default and the vocabulary size like the GGUF path", () => {
      expect([hf.bos, hf.addBos, hf.vocabSize]).toEqual([gguf.bos, gguf.addBos, gguf.vocabSize]);
      for (const id of hf.stopIds) expect(gguf.stopIds).toContain(id);
    });

    it("decode(encode(x)) gives x back on ordinary strings without clean-up patterns", () => {
      for (const text of TEXTS) expect(hf.decode(hf.encode(text))).toBe(text);
    });

    it("pushes + flush equal decode for 200 random id sequences", () => {
      fc.assert(
        fc.property(
          fc.array(fc.nat({ max: hf.vocabSize - 1 }), { maxLength: 16 }),
          fc.boolean(),
          (ids, skipSpecial) => {
            const stream = hf.createStreamDecoder({ skipSpecial });
            expect(ids.map((id) => stream.push(id)).join("") + stream.flush()).toBe(hf.decode(ids, { skipSpecial }));
          },
        ),
        { numRuns: 200, seed: 13 },
      );
    });
  });
}

describe("Hugging Face files", () => {
  it("Llama 3: config gives EOS, generation_config the stop ids, and the chat template", async () => {
    const hf = loadHfTokenizer(write("llama3-config", llama3Files(await llama3Vocab())));
    expect([hf.eos, hf.chatTemplate]).toEqual([128009, CHAT_TEMPLATE]);
    expect([...hf.stopIds].sort()).toEqual([128001, 128008, 128009]);
    expect(hf.decode([128000, 9906], { skipSpecial: false })).toBe("<|begin_of_text|>Hello");
    expect(hf.decode([128000, 9906])).toBe("Hello");
  });

  it("a directory without tokenizer.json is a FormatError naming the file", () => {
    const empty = write("empty", {});
    expect(() => loadHfTokenizer(empty)).toThrow(FormatError);
    expect(() => loadHfTokenizer(empty)).toThrow(path.join(empty, "tokenizer.json"));
  });

  it("corrupt tokenizer.json or tokenizer_config.json is a FormatError naming the file", () => {
    const badJson = write("bad-json", { "tokenizer.json": "{ not json" });
    expect(() => loadHfTokenizer(badJson)).toThrow(FormatError);
    expect(() => loadHfTokenizer(badJson)).toThrow(/tokenizer\.json is not valid JSON/);
    const badConfig = write("bad-config", {
      "tokenizer.json": { model: { type: "BPE", vocab: {}, merges: [] } },
      "tokenizer_config.json": "[1,",
    });
    expect(() => loadHfTokenizer(badConfig)).toThrow(/tokenizer_config\.json is not valid JSON/);
    const noModel = write("no-model", { "tokenizer.json": { added_tokens: [] } });
    expect(() => loadHfTokenizer(noModel)).toThrow(
      /"model" must be an object \(the tokenizer.s model\), found nothing \(the key is missing\)/,
    );
  });
});
