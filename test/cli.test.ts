/**
 * The CLI end to end, in process: info and generate work, and every kind of bad input ends in one line
 * naming the error class with expected vs found, a non-zero exit, and no stack trace.
 */
import fs from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { writeGguf } from "../src/io/gguf-writer.js";
import { claShare } from "../src/model/config.js";
import {
  llamaConfig,
  ggufModelMetadata,
  randomWeights,
  syntheticVocab,
  tensorsToWrite,
} from "../src/model/synthetic.js";
import { gguf } from "../src/io/gguf-writer.js";
import { expectFailure, runCli } from "./helpers/cli.js";
import { SHAPES, tempDir, writeTestGguf, writeTestHf } from "./helpers/models.js";

let dir: string;
let good: string;
beforeAll(() => {
  dir = tempDir();
  good = writeTestGguf(dir, "good", SHAPES["llama-gqa"]).path;
});
afterAll(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

const run = runCli;

function writeVariant(
  name: string,
  edit: (t: ReturnType<typeof tensorsToWrite>) => ReturnType<typeof tensorsToWrite>,
  config = SHAPES["llama-gqa"],
  meta?: (m: ReturnType<typeof ggufModelMetadata>) => ReturnType<typeof ggufModelMetadata>,
): string {
  const file = path.join(dir, `${name}.gguf`);
  const tensors = edit(tensorsToWrite(config, randomWeights(config), "f32", false));
  const metadata = ggufModelMetadata(config, syntheticVocab(config.vocabSize), "f32");
  writeGguf(file, meta ? meta(metadata) : metadata, tensors);
  return file;
}

/** A prompt file of about 150 tokens. */
function prompt150(): string {
  const file = path.join(dir, "prompt150.txt");
  fs.writeFileSync(file, "the quick brown fox jumps over the lazy dog ".repeat(30));
  return file;
}

describe("working commands", () => {
  test("generate prints text and a stats line with tokens/s and KV bytes", async () => {
    const r = await run("generate", "-m", good, "-p", "hello world", "-n", "8", "--seed", "3");
    expect(r.code, r.err).toBe(0);
    expect(r.out.length).toBeGreaterThan(1);
    expect(r.err).toMatch(
      /prompt \d+ tokens at [\d.]+ tok\/s · generated 8 tokens at [\d.]+ tok\/s · KV [\d.]+ \w+ stored/,
    );
  });

  test.each([
    ["sparq", "--compression", "2"],
    ["sparq", "--sparq-r", "4", "--sparq-k", "16", "--sparq-layout", "single", "--sparq-reallocation", "on"],
    ["h2o", "--kv-budget", "24"],
    ["streaming", "--kv-budget", "24", "--sinks", "4"],
  ])("generate --attention %s … --kv-dtype bf16 prints the method's KV traffic vs dense", async (method, ...flags) => {
    const r = await run(
      "generate",
      "-m",
      good,
      "-f",
      prompt150(),
      "-n",
      "6",
      "--temperature",
      "0",
      "--attention",
      method,
      ...flags,
      "--kv-dtype",
      "bf16",
    );
    expect(r.code, r.err).toBe(0);
    expect(r.err).toMatch(
      new RegExp(`attention ${method}: KV read\\+written [\\d.]+ \\w+/token vs dense [\\d.]+ \\w+/token \\(0\\.\\d+×`),
    );
    expect(r.err).toContain("bf16");
  });

  // llama-gqa: Hd 16, g = 2, f32. H2O adds, per row, g reads and writes of its f32 score: 1 + 2·g·4 / (2·Hd·4) = 1.125.
  test.each([
    ["h2o", "4096", [], 1.125],
    ["streaming", "1200", ["-c", "1200"], 1],
  ] as const)(
    "generate --attention %s --kv-budget %s ≥ the context: runs, says it never evicts, and moves what dense moves plus its bookkeeping (the ratio expected, to +0.01)",
    async (method, budget, context, expected) => {
      const r = await run(
        "generate",
        "-m",
        good,
        "-f",
        prompt150(),
        "-n",
        "4",
        "--temperature",
        "0",
        "--attention",
        method,
        "--kv-budget",
        budget,
        ...context,
      );
      expect(r.code, r.err).toBe(0);
      expect(r.err).toMatch(
        new RegExp(
          `note: --kv-budget ${budget} is at least the \\d+-token context: ${method} never evicts, attention is dense`,
        ),
      );
      // Every row read, as dense reads them; H2O adds its scores, both a position per new row.
      const ratio = Number(/vs dense [\d.]+ \w+\/token \(([\d.]+)×/.exec(r.err)?.[1]);
      expect(ratio).toBeGreaterThanOrEqual(expected);
      expect(ratio).toBeLessThanOrEqual(expected + 0.01);
    },
  );

  test("generate -c beyond the model's trained context runs and notes it on stderr (once); within it, no note", async () => {
    const trained = SHAPES["llama-gqa"].contextLength;
    const beyond = await run("generate", "-m", good, "-p", "hello", "-n", "2", "-c", String(2 * trained));
    expect(beyond.code, beyond.err).toBe(0);
    expect(beyond.err.match(/^note: /gm)).toHaveLength(1);
    expect(beyond.err).toContain(
      `note: --context ${2 * trained} is longer than the ${trained} positions the model was trained on`,
    );
    const within = await run("generate", "-m", good, "-p", "hello", "-n", "2", "-c", String(trained));
    expect(within.code, within.err).toBe(0);
    expect(within.err).not.toContain("note:");
  });

  test("generate with the same seed is reproducible; greedy ignores the seed", async () => {
    const a = await run("generate", "-m", good, "-p", "abc", "-n", "12", "--seed", "5");
    const b = await run("generate", "-m", good, "-p", "abc", "-n", "12", "--seed", "5");
    expect(a.out).toBe(b.out);
    const g1 = await run("generate", "-m", good, "-p", "abc", "-n", "12", "--temperature", "0", "--seed", "1");
    const g2 = await run("generate", "-m", good, "-p", "abc", "-n", "12", "--temperature", "0", "--seed", "2");
    expect(g1.out).toBe(g2.out);
  });

  test("generate runs on a Hugging Face directory", async () => {
    const hf = writeTestHf(dir, "hf", SHAPES["qwen2-bias"]).path;
    const r = await run("generate", "-m", hf, "-p", "once", "-n", "4", "--temperature", "0");
    expect(r.code, r.err).toBe(0);
  });

  test("--chat renders the file's template and reads its special tokens as tokens", async () => {
    const template = "{{ bos_token }}{% for m in messages %}[{{ m.role }}] {{ m.content }}{{ eos_token }}{% endfor %}";
    const file = writeVariant(
      "chat",
      (t) => t,
      SHAPES["llama-gqa"],
      (m) => [...m, ["tokenizer.chat_template", gguf.str(template)]],
    );
    const r = await run(
      "generate",
      "-m",
      file,
      "--chat",
      "--system",
      "be brief",
      "-p",
      "hi",
      "-n",
      "2",
      "--temperature",
      "0",
    );
    expect(r.code, r.err).toBe(0);
    const { tokenizerFromGguf } = await import("../src/tokenizer/tokenizer.js");
    const { readGguf } = await import("../src/io/gguf.js");
    const tok = tokenizerFromGguf(readGguf(file).metadata);
    const ids = tok.encode("<s>[system] be brief</s>[user] hi</s>", { addBos: false, parseSpecial: true });
    expect(ids.filter((id) => id === tok.eos)).toHaveLength(2); // "</s>" became the EOS token, twice
    expect(r.err).toContain(`prompt ${ids.length} tokens`);
  });

  test("info reports KV bytes/token = 2 × producers × G × Hd × 4 and the fit in a budget", async () => {
    const config = {
      ...llamaConfig({ dModel: 64, nLayers: 4, nHeads: 4, nKvHeads: 1, ffnDim: 128, vocabSize: 512 }),
      kvSource: claShare(4, 2),
    };
    const cla = writeTestHf(dir, "cla-info", config).path;
    const r = await run("info", cla, "--json", "--memory", "64MiB", "--context", "1000");
    expect(r.code, r.err).toBe(0);
    const info = JSON.parse(r.out);
    expect(info.kvBytesPerToken.f32).toBe(2 * 2 * 1 * 16 * 4);
    expect(info.attention).toBe("H16-MQA-CLA2");
    expect(info.fit.tokens).toBe(Math.floor((64 * 2 ** 20 - info.weightBytes - info.activationBytes) / 256));
    expect(info.fit.sequences).toBe(Math.floor(info.fit.tokens / 1000));
    expect(info.training).toBeUndefined(); // a model directory, not a training run
    const text = await run("info", cla);
    expect(text.out).toContain("2 of 4 layers hold K/V");
    expect(text.out).toContain("no q8_0/q4_0: head dim 16 is not a multiple of 32");
    const bad = await run("info", cla, "--kv-dtype", "q8_0");
    expect(bad.code).toBe(2);
    expect(bad.err).toContain("a q8_0 KV cache needs a head dimension that is a multiple of 32");
  });

  test("info counts q8_0 / q4_0 KV bytes per token with their scales (34 and 18 bytes per 32 values) and fits with them", async () => {
    const config = llamaConfig({ dModel: 128, nLayers: 2, nHeads: 4, nKvHeads: 2, ffnDim: 128, vocabSize: 512 });
    const model = writeTestHf(dir, "kv-info", config).path;
    const r = await run("info", model, "--json", "--memory", "64MiB", "--context", "1000", "--kv-dtype", "q4_0");
    expect(r.code, r.err).toBe(0);
    const info = JSON.parse(r.out);
    const elements = 2 * 2 * 2 * 32; // K and V × layers × KV heads × head dim
    expect(info.kvBytesPerToken).toEqual({
      f32: elements * 4,
      bf16: elements * 2,
      q8_0: (elements / 32) * 34,
      q4_0: (elements / 32) * 18,
      "16-bit": elements * 2,
    });
    expect(info.fit.kvDtype).toBe("q4_0");
    expect(info.fit.tokens).toBe(
      Math.floor((64 * 2 ** 20 - info.weightBytes - info.activationBytes) / ((elements / 32) * 18)),
    );
  });
});

describe("demo", () => {
  test("demo -m DIR: retrieval prompts answered with dense and SparQ, a row each with tok/s, KV stored and KV read vs dense", async () => {
    const model = writeTestHf(dir, "demo-model", { ...SHAPES["llama-gqa"], contextLength: 1024 }).path;
    const r = await run("demo", "-m", model, "--prompts", "2", "--chars", "400", "--threads", "1");
    expect(r.code, r.err).toBe(0);
    expect(r.out).toMatch(/2 retrieval prompts \(key-value, needle\), answers: \d{4}, \d{4}/);
    expect(r.out).toMatch(/dense\s+[0-2]\/2\s+\d+\s+[\d.]+ (B|KiB)\s+[\d.]+ (B|KiB|MiB) \(1\/1\.0\)/);
    expect(r.out).toMatch(/sparq\s+[0-2]\/2\s+\d+\s+[\d.]+ (B|KiB)\s+[\d.]+ (B|KiB|MiB) \(1\/[2-9]\.\d\)/);
  });

  test("demo (the shipped models/kvslim-tiny and its twin): dense and SparQ 1/4 answer both prompts on both models (measured); CLA keeps 1/2.0 of the twin's KV per token, SparQ reads 1/3.9–1/4.x (k + 1 rows counted)", async () => {
    const r = await run("demo", "--prompts", "2", "--threads", "1");
    expect(r.code, r.err).toBe(0);
    expect(r.out).toContain("2 retrieval prompts (key-value, needle), answers: 7550, 4883");
    expect(r.out).toMatch(
      /kvslim-tiny \(H64-MQA-CLA2\)\s+dense\s+2\/2\s+\d+\s+768 B\s+[\d.]+ KiB \(1\/1\.0\)\s+7550 4883\n/,
    );
    // Greedy decoding on fixed weights and prompts is deterministic: this is the models' measured output.
    expect(r.out).toMatch(/kvslim-tiny \(H64-MQA-CLA2\)\s+sparq\s+2\/2\s+.*\(1\/[34]\.\d\)\s+7550 4883\n/);
    expect(r.out).toMatch(
      /kvslim-tiny-mqa \(H64-MQA\)\s+dense\s+2\/2\s+\d+\s+1\.50 KiB\s+[\d.]+ KiB \(1\/1\.0\)\s+7550 4883\n/,
    );
    expect(r.out).toMatch(/kvslim-tiny-mqa \(H64-MQA\)\s+sparq\s+2\/2\s+.*\(1\/[34]\.\d\)\s+7550 4883\n/);
    expect(r.out).toMatch(/CLA keeps 1\/2\.0\); with SparQ each decode step reads 1\/(3\.9|4\.\d)/);
  });

  test("demo --compression 2: SparQ reads 1/2 of the KV and answers both prompts on both shipped models", async () => {
    const r = await run("demo", "--prompts", "2", "--compression", "2", "--threads", "1");
    expect(r.code, r.err).toBe(0);
    expect(r.out).toMatch(/kvslim-tiny \(H64-MQA-CLA2\)\s+sparq\s+2\/2\s+.*\(1\/2\.0\)\s+7550 4883\n/);
    expect(r.out).toMatch(/kvslim-tiny-mqa \(H64-MQA\)\s+sparq\s+2\/2\s+.*\(1\/2\.0\)\s+7550 4883\n/);
    expect(r.out).toMatch(/with SparQ each decode step reads 1\/2\.0 of that/);
  });

  test("demo --compression 0.5: one-line error naming the flag, what it expects and what it got", async () => {
    expectFailure(await run("demo", "--compression", "0.5"), 2, "", /--compression expects a number ≥ 1, got "0.5"/);
  });

  test("demo --chars too long for the model's 2,048-token context: UsageError naming --chars, the context and a length that fits, one line", async () => {
    expectFailure(
      await run("demo", "--chars", "12000", "--prompts", "1", "--threads", "1"),
      2,
      "UsageError",
      /--chars 12000 makes prompts of up to \d+ tokens, .* exceed the 2048-token context of kvslim-tiny; use --chars [4-7][0-9]{3} or less/,
    );
  });

  test("demo -m with no model there: named error, one line", async () => {
    expectFailure(
      await run("demo", "-m", path.join(dir, "nothing-here")),
      2,
      "UsageError",
      /no model at .*nothing-here/,
    );
  });
});

describe("bad input: one line, named error, non-zero exit", () => {
  test("missing model file", async () => {
    expectFailure(await run("info", path.join(dir, "nope.gguf")), 2, "UsageError", /does not exist/);
  });

  test("truncated GGUF", async () => {
    const bytes = fs.readFileSync(good);
    const file = path.join(dir, "truncated.gguf");
    fs.writeFileSync(file, bytes.subarray(0, bytes.length - 1000));
    expectFailure(await run("generate", "-m", file, "-p", "x"), 1, "FormatError", /truncated/);
  });

  test("wrong magic", async () => {
    const bytes = Buffer.from(fs.readFileSync(good));
    bytes.write("GGML", 0);
    const file = path.join(dir, "magic.gguf");
    fs.writeFileSync(file, bytes);
    expectFailure(await run("info", file), 1, "FormatError", /GGML|magic/);
  });

  test("unsupported architecture names the supported ones", async () => {
    const file = writeVariant(
      "arch",
      (t) => t,
      SHAPES["llama-gqa"],
      (m) => m.map(([k, v]) => (k === "general.architecture" ? [k, gguf.str("gpt2")] : [k, v])),
    );
    expectFailure(await run("info", file), 1, "UnsupportedError", /"gpt2"/, /llama, qwen2/);
  });

  test("missing tensor", async () => {
    const file = writeVariant("missing", (t) => t.filter((x) => x.name !== "blk.1.ffn_up.weight"));
    expectFailure(await run("info", file), 1, "ModelMismatchError", /blk\.1\.ffn_up\.weight is missing/);
  });

  test("extra tensor", async () => {
    const file = writeVariant("extra", (t) => [...t, { ...t[1], name: "blk.0.mystery.weight" }]);
    expectFailure(await run("info", file), 1, "ModelMismatchError", /unexpected tensor blk\.0\.mystery\.weight/);
  });

  test("shape that disagrees with the config", async () => {
    const file = writeVariant("shape", (t) =>
      t.map((x) => (x.name === "blk.0.attn_q.weight" ? { ...x, shape: [32, 128] } : x)),
    );
    expectFailure(await run("info", file), 1, "ModelMismatchError", /shape \[32,128\], expected \[64,64\]/);
  });

  test("CLA consumer carrying K/V weights", async () => {
    const config = { ...SHAPES["llama-gqa"], kvSource: claShare(2, 2) };
    const full = tensorsToWrite(SHAPES["llama-gqa"], randomWeights(SHAPES["llama-gqa"]), "f32", false);
    const file = writeVariant("consumer-kv", () => full, config);
    expectFailure(await run("info", file), 1, "ModelMismatchError", /layer 1 is a CLA consumer/);
  });

  test("CLA producer lacking K/V weights", async () => {
    const file = writeVariant("producer-no-kv", (t) => t.filter((x) => x.name !== "blk.1.attn_v.weight"));
    expectFailure(
      await run("info", file),
      1,
      "ModelMismatchError",
      /blk\.1\.attn_v\.weight is missing \(layer 1 is a K\/V producer\)/,
    );
  });

  test("prompt longer than the context", async () => {
    expectFailure(
      await run("generate", "-m", good, "-p", "word ".repeat(200), "-c", "32", "-n", "1"),
      1,
      "ContextOverflowError",
      /exceed the context size of 32/,
    );
  });

  test("a context that does not fit in 4 GiB", async () => {
    expectFailure(await run("generate", "-m", good, "-p", "x", "-c", "50000000"), 1, "OutOfMemoryError", /4\.00 GiB/);
  });

  test("bad flag values and unknown flags exit 2", async () => {
    expect((await run("generate", "-m", good, "-p", "x", "--temperature", "hot")).code).toBe(2);
    expect((await run("generate", "-m", good, "-p", "x", "--frobnicate")).code).toBe(2);
    expect((await run("generate", "-p", "x")).code).toBe(2);
    expectFailure(await run("generate", "-m", good), 2, "UsageError", /no prompt/);
    expectFailure(await run("info", good, "--memory", "lots"), 2, "", /--memory expects a size like/);
  });

  test.each([
    [["--attention", "fancy"], /--attention expects one of dense, sparq, h2o, streaming, got "fancy"/],
    [["--attention", "sparq"], /sparq needs --compression C, or both --sparq-r and --sparq-k/],
    [["--attention", "h2o"], /h2o needs a KV budget/],
    [["--attention", "h2o", "--kv-budget", "8", "--sparq-r", "4"], /--sparq-r does not apply to --attention h2o/],
    [["--kv-budget", "8"], /--kv-budget does not apply to --attention dense/],
    [
      ["--attention", "streaming", "--kv-budget", "4"],
      /--kv-budget expects more rows than the default 16 sink tokens \(--sinks\) for --attention streaming, got "4"/,
    ],
    [
      ["--attention", "sparq", "--sparq-r", "99", "--sparq-k", "8"],
      /--sparq-r expects at most the model's head dimension \(16\), got "99"/,
    ],
    [
      ["--attention", "sparq", "--compression", "4", "--sparq-layout", "triple"],
      /--sparq-layout expects double or single/,
    ],
    [["--kv-dtype", "f16"], /--kv-dtype expects one of f32, bf16, q8_0, q4_0, got "f16"/],
    // llama-gqa's head dim is 16: no whole blocks of 32.
    [["--kv-dtype", "q4_0"], /a q4_0 KV cache needs a head dimension that is a multiple of 32, but this model's is 16/],
  ])("bad attention flags %j: UsageError, exit 2", async (flags, message) => {
    expectFailure(await run("generate", "-m", good, "-p", "x", ...flags), 2, "UsageError", message);
  });
});
