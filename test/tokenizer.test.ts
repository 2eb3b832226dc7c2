/**
 * The tokenizer layer without llama.cpp: metadata handling and its errors, streaming detokenization
 * against one-shot decode, and chat templates. (Agreement with llama.cpp: tokenizer-llama-cpp.test.ts;
 * tokenizer.json files: tokenizer-hf.test.ts.)
 */
import fc from "fast-check";
import { beforeAll, describe, expect, it } from "vitest";
import { FormatError, UnsupportedError } from "../src/errors.js";
import { renderChat, type ChatMessage } from "../src/tokenizer/chat.js";
import { tokenizerFromGguf, type TextTokenizer } from "../src/tokenizer/tokenizer.js";
import { llama2Vocab, llama3Vocab, metadataMap, tokenizerEntries, type TinyVocab } from "./helpers/tiny-gguf.js";

const fromVocab = (v: TinyVocab) => tokenizerFromGguf(metadataMap(tokenizerEntries(v)));

let spm: TextTokenizer; // Llama 2
let bpe: TextTokenizer; // Llama 3
beforeAll(async () => {
  spm = fromVocab({ ...(await llama2Vocab()), chatTemplate: "{{ bos_token }}" });
  bpe = fromVocab({ ...(await llama3Vocab()), eos: 128009 });
});

describe("GGUF metadata", () => {
  it("Llama 2 (SPM) reads vocab size, BOS/EOS, stop ids, BOS default and chat template", () => {
    expect([spm.vocabSize, spm.bos, spm.eos, spm.addBos, spm.chatTemplate]).toEqual([
      32000,
      1,
      2,
      true,
      "{{ bos_token }}",
    ]);
    expect([...spm.stopIds]).toEqual([2]);
    expect(spm.encode("Hello")).toEqual([1, 15043]);
    expect(spm.encode("Hello", { addBos: false })).toEqual([15043]);
  });

  it("Llama 3 (BPE) adds BOS by default and stops on <|eot_id|>, <|eom_id|>, <|end_of_text|> and EOS", () => {
    expect([bpe.vocabSize, bpe.bos, bpe.eos, bpe.addBos, bpe.chatTemplate]).toEqual([
      128256,
      128000,
      128009,
      true,
      null,
    ]);
    expect([...bpe.stopIds].sort()).toEqual([128001, 128008, 128009]);
    expect(bpe.encode("Hello world")).toEqual([128000, 9906, 1917]);
  });

  it("parseSpecial turns control-token text into the token, and only then", () => {
    expect(bpe.encode("<|eot_id|>", { addBos: false, parseSpecial: true })).toEqual([128009]);
    expect(bpe.encode("<|eot_id|>", { addBos: false })).not.toContain(128009);
  });

  it("tokenizer.ggml.add_bos_token overrides the default", async () => {
    const noBos = fromVocab({ ...(await llama3Vocab()), addBos: false });
    expect(noBos.addBos).toBe(false);
    expect(noBos.encode("Hi")).toEqual(bpe.encode("Hi", { addBos: false }));
  });

  it("an unknown tokenizer.ggml.model is an UnsupportedError naming the supported ones", () => {
    const bad = () => fromVocab({ model: "t5", tokens: ["a", "b"] });
    expect(bad).toThrow(UnsupportedError);
    expect(bad).toThrow(/"llama".*"gpt2"/);
  });

  it("an unknown tokenizer.ggml.pre is an UnsupportedError naming the supported ones", () => {
    const bad = () => fromVocab({ model: "gpt2", pre: "tekken", tokens: ["a", "b"], merges: ["a b"] });
    expect(bad).toThrow(UnsupportedError);
    expect(bad).toThrow(/"llama-bpe"/);
  });

  it("tokens and scores of different lengths are a FormatError", () => {
    const bad = () => fromVocab({ model: "llama", tokens: ["<unk>", "<s>", "</s>"], scores: [0, 0] });
    expect(bad).toThrow(FormatError);
    expect(bad).toThrow(/tokenizer\.ggml\.scores has 2 entries but tokenizer\.ggml\.tokens has 3/);
  });

  it("missing tokens, missing merges and wrongly typed arrays are FormatErrors", () => {
    expect(() => tokenizerFromGguf(new Map([["tokenizer.ggml.model", "llama"]]))).toThrow(FormatError);
    expect(() => fromVocab({ model: "gpt2", tokens: ["a"] })).toThrow(/tokenizer\.ggml\.merges/);
    const wrong = metadataMap(tokenizerEntries({ model: "llama", tokens: ["a"] }));
    wrong.set("tokenizer.ggml.scores", ["x"]);
    expect(() => tokenizerFromGguf(wrong)).toThrow(FormatError);
  });
});

describe("stream decoder", () => {
  /** Pushes ids one by one; checks no push ends inside a character and returns the concatenation. */
  function streamed(tok: TextTokenizer, ids: number[], skipSpecial = true): string {
    const stream = tok.createStreamDecoder({ skipSpecial });
    let text = "";
    for (const id of ids) {
      const piece = stream.push(id);
      expect(piece).not.toMatch(/\p{Cs}/u); // no half of a surrogate pair
      text += piece;
    }
    return text + stream.flush();
  }

  it("holds a 4-byte character split over Llama 2 byte tokens until its last byte", () => {
    const ids = spm.encode("🙂", { addBos: false }); // ▁ then <0xF0> <0x9F> <0x99> <0x82>
    expect(ids.slice(1)).toEqual([0xf0 + 3, 0x9f + 3, 0x99 + 3, 0x82 + 3]);
    const stream = spm.createStreamDecoder();
    expect(ids.map((id) => stream.push(id))).toEqual(["", "", "", "", "🙂"]);
    expect(stream.flush()).toBe("");
  });

  it("holds a space that Llama 3's clean-up may still remove, and releases it when it stays", () => {
    const [space, comma, word] = [" ", ",", "world"].map((t) => bpe.encode(t, { addBos: false })[0]);
    const stream = bpe.createStreamDecoder();
    expect([stream.push(word), stream.push(space), stream.push(comma), stream.push(space), stream.push(word)]).toEqual([
      "world",
      "",
      ",",
      "",
      " world",
    ]);
    expect(bpe.decode([word, space, comma, space, word])).toBe("world, world");
  });

  for (const [name, get, bytes] of [
    ["Llama 2", () => spm, [3, 259]],
    ["Llama 3", () => bpe, [0, 256]],
  ] as const) {
    it(`${name}: pushes + flush equal decode for 300 random id sequences (bytes, text, specials)`, () => {
      const tok = get();
      const id = fc.oneof(fc.integer({ min: bytes[0], max: bytes[1] - 1 }), fc.nat({ max: tok.vocabSize - 1 }));
      fc.assert(
        fc.property(fc.array(id, { maxLength: 20 }), fc.boolean(), (ids, skipSpecial) => {
          expect(streamed(tok, ids, skipSpecial)).toBe(tok.decode(ids, { skipSpecial }));
        }),
        { numRuns: 300, seed: 3 },
      );
    });
  }

  it("Llama 3: pushes + flush equal decode for 500 random sequences of clean-up-prone pieces", () => {
    const pieces = [" ", "'", " '", "r", "e", "v", "s", "m", "re", ",", ".", "?", "n", "'t", "é", "world"];
    const ids = [...new Set(pieces.flatMap((p) => bpe.encode(p, { addBos: false })))];
    fc.assert(
      fc.property(fc.array(fc.constantFrom(...ids), { maxLength: 24 }), (seq) => {
        expect(streamed(bpe, seq)).toBe(bpe.decode(seq));
      }),
      { numRuns: 500, seed: 5 },
    );
  });

  it("Llama 2: strips the prefix space of the first token only, as decode does", () => {
    const ids = spm.encode(" a b", { addBos: false });
    expect(streamed(spm, ids)).toBe(spm.decode(ids));
    expect(spm.decode(ids)).toBe(" a b");
    expect(streamed(spm, [1, ...ids])).toBe("  a b"); // after BOS llama.cpp keeps the space
  });
});

describe("chat templates", () => {
  const messages: ChatMessage[] = [
    { role: "system", content: "Be brief." },
    { role: "user", content: "Hi!" },
    { role: "assistant", content: "Hello." },
    { role: "user", content: "Bye?" },
  ];
  const LLAMA3 =
    "{{ bos_token }}{% for m in messages %}{{ '<|start_header_id|>' + m['role'] + '<|end_header_id|>\\n\\n' + m['content'] | trim + '<|eot_id|>' }}" +
    "{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}";
  const CHATML =
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}" +
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

  it("renders a Llama 3 template with BOS and the generation prompt", () => {
    const text = renderChat(LLAMA3, messages.slice(0, 2), {
      bosToken: "<|begin_of_text|>",
      eosToken: "<|eot_id|>",
      addGenerationPrompt: true,
    });
    expect(text).toBe(
      "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>" +
        "<|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
    );
    const ids = bpe.encode(text, { addBos: false, parseSpecial: true });
    expect(ids.slice(0, 2)).toEqual([128000, 128006]);
    expect(ids.filter((id) => id === 128009)).toHaveLength(2);
  });

  it("renders a ChatML conversation without the generation prompt", () => {
    const text = renderChat(CHATML, messages, { bosToken: "", eosToken: "<|im_end|>", addGenerationPrompt: false });
    expect(text).toBe(
      "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n" +
        "<|im_start|>assistant\nHello.<|im_end|>\n<|im_start|>user\nBye?<|im_end|>\n",
    );
  });

  it("a template that does not parse, or raises, is a FormatError", () => {
    const options = { bosToken: "", eosToken: "", addGenerationPrompt: true };
    expect(() => renderChat("{% for m in messages %}{{ m.content }}", messages, options)).toThrow(FormatError);
    expect(() => renderChat("{{ raise_exception('no system role') }}", messages, options)).toThrow(/no system role/);
  });
});
