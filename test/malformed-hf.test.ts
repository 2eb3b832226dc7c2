/**
 * Malformed Hugging Face directories, generated from a valid one: every config.json key kvslim reads given
 * values of the wrong type or range, tokenizer_config.json chat templates of the wrong type or that do not
 * parse, a tokenizer larger than the embedding, a padded embedding sampled with temperature, and outputs in
 * directories that do not exist. Each must end in exit 0 with the original's output or one named error line
 * (never a stack trace, "internal error", "undefined" or a dependency's words), checked in process.
 */
import fs from "node:fs";
import path from "node:path";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { llamaConfig } from "../src/model/synthetic.js";
import { runCli } from "./helpers/cli.js";
import { tempDir, writeTestHf } from "./helpers/models.js";

/** Every key of config.json kvslim reads (src/model/files.ts). */
const CONFIG_KEYS = [
  "model_type",
  "vocab_size",
  "hidden_size",
  "intermediate_size",
  "num_hidden_layers",
  "num_attention_heads",
  "num_key_value_heads",
  "head_dim",
  "max_position_embeddings",
  "rms_norm_eps",
  "rope_theta",
  "partial_rotary_factor",
  "rope_scaling",
  "tie_word_embeddings",
  "attention_bias",
  "kv_source",
  "cla_share_factor",
  "cla_kv_norm",
] as const;

let dir: string;
let good: string;
let goodInfo: string;
beforeAll(async () => {
  dir = tempDir("kvslim-malformed-");
  const config = llamaConfig({
    dModel: 64,
    nLayers: 2,
    nHeads: 4,
    nKvHeads: 2,
    ffnDim: 128,
    vocabSize: 384,
    contextLength: 256,
  });
  good = writeTestHf(dir, "good", config).path;
  const r = await runCli("info", good);
  expect(r.code, r.err).toBe(0);
  goodInfo = r.out;
});
afterAll(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

let serial = 0;
/** A copy of the good directory (weights and tokenizer linked) with config.json / tokenizer files edited. */
function variant(edit: {
  config?: (c: Record<string, unknown>) => void;
  tokenizerConfig?: (c: Record<string, unknown>) => void;
  tokenizer?: (t: Record<string, unknown>) => void;
}): string {
  const out = path.join(dir, `v${serial++}`);
  fs.mkdirSync(out);
  for (const file of fs.readdirSync(good)) {
    const edits = {
      "config.json": edit.config,
      "tokenizer_config.json": edit.tokenizerConfig,
      "tokenizer.json": edit.tokenizer,
    } as Record<string, ((c: Record<string, unknown>) => void) | undefined>;
    const change = edits[file];
    if (change) {
      const json = JSON.parse(fs.readFileSync(path.join(good, file), "utf8")) as Record<string, unknown>;
      change(json);
      fs.writeFileSync(path.join(out, file), JSON.stringify(json));
    } else fs.symlinkSync(path.join(good, file), path.join(out, file));
  }
  return out;
}

/** The property every run on bad input must have: exit 0 with `expected` output, or one clean named error line. */
function expectCleanOutcome(r: { code: number; out: string; err: string }, expected?: string): void {
  if (r.code === 0) {
    if (expected !== undefined) expect(r.out).toBe(expected);
    return;
  }
  expect(r.code).toBeGreaterThan(0);
  expect(r.code).not.toBe(70); // 70: an internal error (a bug)
  const lines = r.err.trim().split("\n");
  expect(lines, r.err).toHaveLength(1);
  expect(r.err).toMatch(/^kvslim: [A-Z]\w+Error: /);
  expect(r.err).not.toMatch(/\n\s+at |internal error|undefined|Cannot read properties|is not a function/);
}

describe("config.json", () => {
  const cases: [string, unknown, RegExp][] = [
    ["num_hidden_layers", 1e9, /"num_hidden_layers" must be an integer from 1 to 4096, found 1000000000/],
    ["num_hidden_layers", 2 ** 32, /"num_hidden_layers" must be an integer from 1 to 4096, found 4294967296/],
    ["max_position_embeddings", 0, /"max_position_embeddings" must be an integer from 1 to \d+, found 0/],
    ["model_type", 42, /"model_type" must be a string naming the architecture, found 42/],
    ["model_type", "toString", /model_type "toString" is not supported; kvslim runs: llama/],
    ["kv_source", "x", /"kv_source" must be a list of 2 layer indices, found "x"/],
    ["kv_source", [0, 5], /"kv_source"\[1\] must be an integer from 0 to 1, found 5/],
    ["cla_share_factor", 0, /"cla_share_factor" must be an integer from 1 to 2, found 0/],
    ["hidden_size", 1.5, /"hidden_size" must be an integer from 1 to \d+, found 1.5/],
    ["rms_norm_eps", -1, /"rms_norm_eps" must be a number between 0 and 1 \(such as 1e-5\), found -1/],
    ["tie_word_embeddings", "yes", /"tie_word_embeddings" must be true or false, found "yes"/],
    ["rope_scaling", [1], /"rope_scaling" must be an object, found \[1\]/],
    ["num_key_value_heads", 3, /query heads \(4\) must be a multiple of the KV heads \(3\)/],
  ];
  test.each(cases)(
    "%s = %j: FormatError / UnsupportedError naming the key, the value and what is allowed, one line, exit 1",
    async (key, value, message) => {
      const r = await runCli("info", variant({ config: (c) => (c[key] = value) }));
      expectCleanOutcome(r);
      expect(r.code).toBe(1);
      expect(r.err).toMatch(/config\.json/);
      expect(r.err).toMatch(message);
    },
  );

  test("config.json holding null, a list or a string: FormatError naming the file", async () => {
    for (const text of ["null", "[]", '"llama"']) {
      const out = variant({});
      fs.rmSync(path.join(out, "config.json"));
      fs.writeFileSync(path.join(out, "config.json"), text);
      const r = await runCli("info", out);
      expectCleanOutcome(r);
      expect(r.err).toMatch(/config\.json must hold a JSON object of model settings/);
    }
  });

  test(`property: any JSON value for any key kvslim reads (${CONFIG_KEYS.length} keys, 300 runs) gives exit 0 with the original's output or one named error line`, async () => {
    await fc.assert(
      fc.asyncProperty(fc.constantFrom(...CONFIG_KEYS), fc.jsonValue({ maxDepth: 2 }), async (key, value) => {
        const out = variant({ config: (c) => (c[key] = value) });
        const r = await runCli("info", out);
        fs.rmSync(out, { recursive: true });
        // A value equal to what the file had (or a harmless one) runs; the output may differ only if the value changed the model.
        expectCleanOutcome(r);
        if (
          r.code === 0 &&
          JSON.stringify(value) ===
            JSON.stringify(JSON.parse(fs.readFileSync(path.join(good, "config.json"), "utf8"))[key])
        ) {
          expect(r.out.split("\n").slice(1)).toEqual(goodInfo.split("\n").slice(1)); // all but the line naming the directory
        }
      }),
      { numRuns: 300, seed: 18 },
    );
  });
});

describe("tokenizer files", () => {
  test.each([
    [["a", null], /"chat_template" must be a string or a list of \{"name", "template"\} strings, found \["a",null\]/],
    [42, /"chat_template" must be a string or a list of .* found 42/],
    ["{% for m in messages %}x", /chat template does not parse as Jinja: a tag or block is unclosed or malformed/],
  ])("tokenizer_config.json chat_template %j with --chat: one named error line, exit 1", async (template, message) => {
    const out = variant({ tokenizerConfig: (c) => (c.chat_template = template) });
    const r = await runCli("generate", "-m", out, "-p", "hi", "--chat", "-n", "2");
    expectCleanOutcome(r);
    expect(r.code).toBe(1);
    expect(r.err).toMatch(message);
  });

  test("a Unigram tokenizer.json missing its vocab: FormatError in kvslim's words, not the library's", async () => {
    const r = await runCli("info", variant({ tokenizer: (t) => (t.model = { type: "Unigram" }) }));
    expectCleanOutcome(r);
    expect(r.err).toMatch(
      /tokenizer\.json: "model" "vocab" must be an object of token ids \(or a list of \[token, score\] for Unigram\), found nothing \(the key is missing\)/,
    );
  });

  test("added tokens past the embedding: FormatError naming both sizes", async () => {
    const out = variant({
      tokenizer: (t) => (t.added_tokens as unknown[]).push({ id: 384, content: "<extra>", special: true }),
    });
    const r = await runCli("info", out);
    expectCleanOutcome(r);
    expect(r.err).toMatch(/the tokenizer has 385 tokens but the model's embedding has 384 rows/);
    const gap = await runCli(
      "info",
      variant({ tokenizer: (t) => (t.added_tokens as unknown[]).push({ id: 500, content: "<extra>", special: true }) }),
    );
    expectCleanOutcome(gap);
    expect(gap.err).toMatch(/token ids run to 500, but id 384 has no token/);
  });

  test("an embedding padded beyond the tokenizer (384 rows, fewer tokens), sampled at temperature 5 for 200 tokens: exit 0, never a padding id", async () => {
    // The same model with the tokenizer of a 300-token model: embedding rows 300–383 have no text.
    const small = writeTestHf(
      dir,
      "small",
      llamaConfig({ dModel: 64, nLayers: 1, nHeads: 4, nKvHeads: 2, ffnDim: 128, vocabSize: 300 }),
    ).path;
    const out = variant({});
    for (const file of ["tokenizer.json", "tokenizer_config.json"]) {
      fs.rmSync(path.join(out, file));
      fs.symlinkSync(path.join(small, file), path.join(out, file));
    }
    const r = await runCli("generate", "-m", out, "-p", "hi", "-n", "200", "--temperature", "5", "--seed", "2");
    expect(r.code, r.err).toBe(0);
    expect(r.err).toMatch(/generated \d+ tokens/);
  });
});

describe("output paths", () => {
  test.each(["export", "synth"])(
    "%s -o in a directory that does not exist: UsageError naming the directory, no file left",
    async (command) => {
      const target = path.join(dir, "no", "such", "dir", "x.gguf");
      const r = await runCli(
        ...(command === "export" ? ["export", "-m", good, "-o", target] : ["synth", "--preset", "tiny", "-o", target]),
      );
      expectCleanOutcome(r);
      expect(r.code).toBe(2);
      expect(r.err).toContain(`directory ${path.dirname(target)} does not exist`);
      expect(fs.existsSync(path.join(dir, "no"))).toBe(false);
    },
  );
});

/** Paths into tokenizer.json that kvslim or the library reads, with the library's own keys under "model". */
const TOKENIZER_PATHS = [
  ["model"],
  ["model", "type"],
  ["model", "vocab"],
  ["model", "merges"],
  ["model", "byte_fallback"],
  ["model", "unk_token"],
  ["model", "ignore_merges"],
  ["model", "fuse_unk"],
  ["added_tokens"],
  ["normalizer"],
  ["pre_tokenizer"],
  ["post_processor"],
  ["decoder"],
  ["truncation"],
  ["padding"],
  ["version"],
] as const;
/** Keys of tokenizer_config.json and generation_config.json kvslim reads. */
const TOKENIZER_CONFIG_KEYS = [
  "bos_token",
  "eos_token",
  "add_bos_token",
  "clean_up_tokenization_spaces",
  "chat_template",
] as const;

describe("tokenizer files: types", () => {
  const generate = (model: string) =>
    runCli("generate", "-m", model, "-p", "hi", "-n", "3", "--temperature", "0", "--threads", "1");

  test(`property: any JSON value at any of ${TOKENIZER_PATHS.length} places in tokenizer.json (300 runs): exit 0 or one named error line in kvslim's words`, async () => {
    await fc.assert(
      fc.asyncProperty(fc.constantFrom(...TOKENIZER_PATHS), fc.jsonValue({ maxDepth: 2 }), async (at, value) => {
        const out = variant({
          tokenizer: (t) => {
            const parent = at
              .slice(0, -1)
              .reduce<Record<string, unknown>>((o, k) => o[k] as Record<string, unknown>, t);
            parent[at[at.length - 1]] = value;
          },
        });
        const r = await generate(out);
        fs.rmSync(out, { recursive: true });
        expectCleanOutcome(r);
      }),
      { numRuns: 300, seed: 18 },
    );
  });

  test("tokenizer.json added_tokens with an id that is not an integer, a content that is not a string, or a duplicate id: FormatError naming the entry", async () => {
    for (const bad of [
      { id: "7", content: "<x>", special: true },
      { id: 1.5, content: "<x>", special: true },
      { id: 7, content: 7, special: true },
      { id: -1, content: "<x>", special: true },
      null,
      "x",
    ]) {
      const r = await generate(variant({ tokenizer: (t) => (t.added_tokens as unknown[]).push(bad) }));
      expectCleanOutcome(r);
      expect(r.code, r.err).not.toBe(0);
      expect(r.err).toMatch(/tokenizer\.json.*added_tokens/);
    }
  });

  test(`property: any JSON value for any of ${TOKENIZER_CONFIG_KEYS.length} tokenizer_config.json keys, and generation_config.json eos_token_id (300 runs, with --chat): exit 0 or one named error line`, async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom<string>(...TOKENIZER_CONFIG_KEYS, "generation_config.json"),
        fc.jsonValue({ maxDepth: 2 }),
        async (key, value) => {
          let out: string;
          if (key === "generation_config.json") {
            out = variant({});
            fs.writeFileSync(path.join(out, "generation_config.json"), JSON.stringify({ eos_token_id: value }));
          } else out = variant({ tokenizerConfig: (c) => (c[key] = value) });
          for (const chat of [false, true]) {
            const r = await runCli(
              "generate",
              "-m",
              out,
              "-p",
              "hi",
              "-n",
              "3",
              "--temperature",
              "0",
              "--threads",
              "1",
              ...(chat ? ["--chat"] : []),
            );
            expectCleanOutcome(r);
          }
          fs.rmSync(out, { recursive: true });
        },
      ),
      { numRuns: 300, seed: 18 },
    );
  });

  test.each([
    ["tokenizer.json", /tokenizer\.json/],
    ["tokenizer_config.json", /tokenizer_config\.json/],
    ["generation_config.json", /generation_config\.json/],
  ])("%s that is not JSON, null, a list or a number: FormatError naming the file", async (file, message) => {
    for (const text of ["{", "null", "[]", "42", ""]) {
      const out = variant({});
      fs.rmSync(path.join(out, file), { force: true });
      fs.writeFileSync(path.join(out, file), text);
      const r = await generate(out);
      expectCleanOutcome(r);
      expect(r.code, `${file} = ${JSON.stringify(text)}`).not.toBe(0);
      expect(r.err).toMatch(message);
    }
  });
});

describe("model.safetensors", () => {
  let valid: Buffer;
  let headerEnd: number;
  let expected: string;
  const generate = (model: string) =>
    runCli("generate", "-m", model, "-p", "hi", "-n", "3", "--temperature", "0", "--threads", "1");
  async function runWith(bytes: Uint8Array) {
    const out = variant({});
    fs.rmSync(path.join(out, "model.safetensors"));
    fs.writeFileSync(path.join(out, "model.safetensors"), bytes);
    const r = await generate(out);
    fs.rmSync(out, { recursive: true });
    return r;
  }
  beforeAll(async () => {
    valid = fs.readFileSync(path.join(good, "model.safetensors"));
    headerEnd = 8 + Number(valid.readBigUInt64LE(0));
    const r = await generate(good);
    expect(r.code, r.err).toBe(0);
    expected = r.out;
  });

  test("truncated at every structural boundary (inside the length, inside the header, at each tensor's first and last byte): FormatError naming the file", async () => {
    const header = JSON.parse(valid.subarray(8, headerEnd).toString("utf8")) as Record<
      string,
      { data_offsets?: [number, number] }
    >;
    const cuts = [0, 4, 7, 8, 9, Math.floor(headerEnd / 2), headerEnd - 1, headerEnd];
    for (const entry of Object.values(header))
      if (entry.data_offsets) cuts.push(headerEnd + entry.data_offsets[0] + 1, headerEnd + entry.data_offsets[1] - 1);
    for (const at of cuts) {
      const r = await runWith(valid.subarray(0, at));
      expectCleanOutcome(r);
      expect(r.code, `cut at ${at}`).not.toBe(0);
      expect(r.err).toMatch(/model\.safetensors/);
    }
  });

  test("the header length set to 0, 1, one byte less or more, the file size and 2^64-1: one named error line", async () => {
    for (const v of [0n, 1n, BigInt(headerEnd - 9), BigInt(headerEnd - 7), BigInt(valid.length), 2n ** 64n - 1n]) {
      const bytes = Buffer.from(valid);
      bytes.writeBigUInt64LE(v, 0);
      const r = await runWith(bytes);
      expectCleanOutcome(r);
      expect(r.code, `header length ${v}`).not.toBe(0);
    }
  });

  test("property: 1-4 random bytes of the JSON header changed (names, dtypes, shapes, offsets, padding; 300 runs): the original's output or one named error line", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.tuple(fc.integer({ min: 8, max: headerEnd - 1 }), fc.integer({ min: 0, max: 255 })), {
          minLength: 1,
          maxLength: 4,
        }),
        async (edits) => {
          const bytes = Buffer.from(valid);
          for (const [at, v] of edits) bytes[at] = v;
          expectCleanOutcome(await runWith(bytes), expected);
        },
      ),
      { numRuns: 300, seed: 18 },
    );
  });
});
