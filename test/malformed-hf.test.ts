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
  "model_type", "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
  "num_key_value_heads", "head_dim", "max_position_embeddings", "rms_norm_eps", "rope_theta", "partial_rotary_factor",
  "rope_scaling", "tie_word_embeddings", "attention_bias", "kv_source", "cla_share_factor", "cla_kv_norm",
] as const;

let dir: string;
let good: string;
let goodInfo: string;
beforeAll(async () => {
  dir = tempDir("kvslim-malformed-");
  const config = llamaConfig({ dModel: 64, nLayers: 2, nHeads: 4, nKvHeads: 2, ffnDim: 128, vocabSize: 384, contextLength: 256 });
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
function variant(edit: { config?: (c: Record<string, unknown>) => void; tokenizerConfig?: (c: Record<string, unknown>) => void; tokenizer?: (t: Record<string, unknown>) => void }): string {
  const out = path.join(dir, `v${serial++}`);
  fs.mkdirSync(out);
  for (const file of fs.readdirSync(good)) {
    const edits = { "config.json": edit.config, "tokenizer_config.json": edit.tokenizerConfig, "tokenizer.json": edit.tokenizer } as Record<string, ((c: Record<string, unknown>) => void) | undefined>;
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
  test.each(cases)("%s = %j: FormatError / UnsupportedError naming the key, the value and what is allowed, one line, exit 1", async (key, value, message) => {
    const r = await runCli("info", variant({ config: (c) => (c[key] = value) }));
    expectCleanOutcome(r);
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/config\.json/);
    expect(r.err).toMatch(message);
  });

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
        if (r.code === 0 && JSON.stringify(value) === JSON.stringify(JSON.parse(fs.readFileSync(path.join(good, "config.json"), "utf8"))[key])) {
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

  test("a Unigram tokenizer.json missing its vocab: UnsupportedError in kvslim's words, not the library's", async () => {
    const r = await runCli("info", variant({ tokenizer: (t) => (t.model = { type: "Unigram" }) }));
    expectCleanOutcome(r);
    expect(r.err).toMatch(/tokenizer\.json: @huggingface\/tokenizers cannot load it \(a Unigram model whose fields are missing or of the wrong type\)/);
  });

  test("added tokens past the embedding: FormatError naming both sizes", async () => {
    const out = variant({ tokenizer: (t) => (t.added_tokens as unknown[]).push({ id: 500, content: "<extra>", special: true }) });
    const r = await runCli("info", out);
    expectCleanOutcome(r);
    expect(r.err).toMatch(/the tokenizer has 501 tokens but the model's embedding has 384 rows/);
  });

  test("an embedding padded beyond the tokenizer (384 rows, fewer tokens), sampled at temperature 5 for 200 tokens: exit 0, never a padding id", async () => {
    // The same model with the tokenizer of a 300-token model: embedding rows 300–383 have no text.
    const small = writeTestHf(dir, "small", llamaConfig({ dModel: 64, nLayers: 1, nHeads: 4, nKvHeads: 2, ffnDim: 128, vocabSize: 300 })).path;
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
  test.each(["export", "synth"])("%s -o in a directory that does not exist: UsageError naming the directory, no file left", async (command) => {
    const target = path.join(dir, "no", "such", "dir", "x.gguf");
    const r = await runCli(...(command === "export" ? ["export", "-m", good, "-o", target] : ["synth", "--preset", "tiny", "-o", target]));
    expectCleanOutcome(r);
    expect(r.code).toBe(2);
    expect(r.err).toContain(`directory ${path.dirname(target)} does not exist`);
    expect(fs.existsSync(path.join(dir, "no"))).toBe(false);
  });
});
