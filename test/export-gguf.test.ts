/**
 * kvslim export: Hugging Face llama directories of the kind kvslim's training writes (random weights in
 * f32 safetensors, a tokenizer trained by trainBpe) exported to GGUF, then checked against
 *   (a) kvslim on the directory itself: bit-identical logits from the GGUF (f32);
 *   (b) llama.cpp (node-llama-cpp) on the GGUF: next-token log-probabilities as close as the llama.cpp
 *       tests require of any kvslim model (f32, f16: max |Δ log p| ≤ 1e-5; q8_0: median ≤ 1e-5, max ≤ 0.05);
 *   (c) llama.cpp's tokenizer on the GGUF: the ids of tokenizer.json (@huggingface/tokenizers);
 * and the refusals: (d) CLA directories, (e) existing output files without --force. (a) and (b) also on a
 * trained model (the shipped kvslim-tiny-mqa) laid out as a training run directory, through the CLI.
 *
 * Known tokenizer differences, inherent to llama.cpp's Unicode tables (so no tokenizer.ggml.pre avoids
 * them) and left out of the random strings: U+0085 is whitespace to llama.cpp but not to JavaScript's \s,
 * U+FEFF the other way round, and code points assigned after Unicode 15.1 are letters to JavaScript but
 * undefined to llama.cpp. Decoding differs by llama.cpp's space clean-up for "gpt-2" (" ," -> ",").
 */
import fs from "node:fs";
import path from "node:path";
import type { LlamaModel, Token } from "node-llama-cpp";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { main } from "../src/cli/main.js";
import { FileExistsError, UnsupportedError } from "../src/errors.js";
import { FILE_TYPES, tensorDTypes } from "../src/model/file-types.js";
import { expectedTensors } from "../src/model/tensor-names.js";
import { exportGguf, type ExportDType } from "../src/model/export-gguf.js";
import { readGguf } from "../src/io/gguf.js";
import { writeSafetensors } from "../src/io/safetensors.js";
import { readTensorBytes } from "../src/io/tensor-file.js";
import { decode, encode } from "../src/memory/dtype.js";
import { claShare, type ModelConfig } from "../src/model/config.js";
import { hfConfigFor } from "../src/model/files.js";
import { loadModel, type LoadOptions } from "../src/model/model.js";
import { llamaConfig, randomWeights, tensorsToWrite } from "../src/model/synthetic.js";
import { loadHfTokenizer, tokenizerFromGguf, type TextTokenizer } from "../src/tokenizer/tokenizer.js";
import { saveTokenizer, trainBpe, type TrainedBpe } from "../src/tokenizer/train-bpe.js";
import {
  errorsBySequence,
  expectErrorsByPosition,
  expectErrorsBySequence,
  expectF16Mode,
  f16ErrorsBySequence,
  llamaCppLogits,
  loadLlamaCppModel,
  logSoftmax,
  maxAbsDiff,
  type F16Mode,
} from "./helpers/llama-cpp.js";
import { tempDir } from "./helpers/models.js";

/** A small, varied corpus: words, contractions, digits, punctuation runs, whitespace runs, several scripts. */
const CORPUS = [
  "The quick brown fox jumps over the lazy dog. It's a dog's life, isn't it? We'll see; they've gone home.",
  "Numbers: 0 1 12 123 1234 3.14159 1,000,000 2024-06-01 x86_64 v2.0-rc1 $5 & 10% #tag @user",
  "Punctuation!!! ... ??? --- *** (parens) [brackets] {braces} <angles> \"quotes\" 'single' a+b=c; x*y/z",
  "Spaces:  two   three    four\ttab\t\tdouble\nnewline\n\nblank\r\ncrlf   trailing   ",
  "Café naïve résumé über straße Ελληνικά русский текст 中文字符 日本語のテキスト 한국어 🙂👍🏽 emoji🙂text",
];
const VOCAB = 360;

/** Strings for the tokenizer comparison: ASCII, punctuation, digits, spaces, non-ASCII. */
const STRINGS = [
  "",
  " ",
  "Hello world",
  "The quick brown fox jumps over the lazy dog.",
  " leading",
  "trailing   ",
  "many     inner   spaces",
  "line\nbreak\n\n\nand\r\ncrlf",
  "\ttab\tseparated",
  "It's",
  "don't",
  "we'LL",
  "rock 'n' roll",
  "Hello, world!",
  "wait... what?!",
  "(parens) [brackets] {braces} <angles>",
  "a+b=c; x*y/z",
  "$5 & 10%",
  "#tag @user",
  "email@example.com",
  "snake_case kebab-case",
  "0",
  "12",
  "123",
  "1234567",
  "3.14159",
  "1,000,000",
  "2024-06-01",
  "x86_64",
  "café naïve résumé",
  "straße",
  "Ελληνικά",
  "русский текст",
  "中文字符",
  "日本語のテキスト",
  "한국어",
  "🙂",
  "👍🏽",
  "🙂text🙂",
  "e\u0301",
  "\u00a0nbsp\u3000",
  "\u200b",
  "<s>",
  "</s>",
  "<pad>",
  "Ġ",
  "Ċ",
];

/** Random strings over risky pieces (none of the known differences above). */
const PIECES = [
  " ",
  "  ",
  "\n",
  "\t",
  "\r\n",
  "\u00a0",
  "\u3000",
  "'s",
  "'ll",
  "'",
  "é",
  "e\u0301",
  "中",
  "🙂",
  ".",
  ",",
  "!",
  "...",
  "7",
  "123",
  "½",
  "Ⅻ",
  "a",
  "the",
  "quick",
  "Dog",
  "_",
  "-",
  "$",
  "<s>",
  "\u00ad",
  "\x00",
];
const RANDOM_STRINGS = 300;

function randomStrings(n: number, seed = 5): string[] {
  let s = seed;
  const next = (k: number) => (s = (Math.imul(s, 1664525) + 1013904223) >>> 0) % k;
  return Array.from({ length: n }, () => Array.from({ length: next(10) }, () => PIECES[next(PIECES.length)]).join(""));
}

/** An HF directory as kvslim's training writes it: config.json, f32 model.safetensors, the trained tokenizer. */
function writeHfDir(dir: string, config: ModelConfig, bpe: TrainedBpe, seed = 1): void {
  fs.mkdirSync(dir, { recursive: true });
  const weights = randomWeights(config, { seed });
  writeSafetensors(path.join(dir, "model.safetensors"), tensorsToWrite(config, weights, "f32", true), { format: "pt" });
  fs.writeFileSync(path.join(dir, "config.json"), JSON.stringify(hfConfigFor(config, "f32"), null, 2));
  saveTokenizer(bpe, dir, { force: true });
}

async function kvslimLogits(modelPath: string, tokens: number[], options: LoadOptions = {}): Promise<Float32Array> {
  const model = await loadModel(modelPath, { contextSize: tokens.length, ...options });
  const session = model.createSession();
  try {
    return session.evaluate(tokens, true).slice();
  } finally {
    session.dispose();
    model.dispose();
  }
}

/** Runs the CLI in process, capturing its output. */
async function cli(...argv: string[]): Promise<{ code: number; err: string }> {
  let err = "";
  const write = process.stderr.write.bind(process.stderr);
  process.stderr.write = ((s: string) => ((err += s), true)) as typeof process.stderr.write;
  try {
    return { code: await main(argv), err };
  } finally {
    process.stderr.write = write;
  }
}

/** A clean CLI failure: the exit code, one line naming the error, no stack trace. */
function expectFailure(r: { code: number; err: string }, code: number, name: string, mention: RegExp): void {
  expect(r.code, r.err).toBe(code);
  expect(r.err.trim().split("\n"), r.err).toHaveLength(1);
  expect(r.err).toContain(name);
  expect(r.err).toMatch(mention);
  expect(r.err).not.toMatch(/\n\s+at /);
}

let dir: string;
let bpe: TrainedBpe;
beforeAll(() => {
  dir = tempDir("kvslim-export-");
  bpe = trainBpe(Array.from({ length: 20 }, () => CORPUS).flat(), { vocabSize: VOCAB });
});
afterAll(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

/**
 * Shapes (V = the trained tokenizer's size): kvslim's training presets (tied embeddings, MQA), GQA with
 * Hd ≠ D/H and a vocabulary padded beyond the tokenizer, qwen2.
 *
 * The f16 case uses GQA (G·Hd = 32) and V = 384, every matrix a multiple of 32 rows: with AMX, llama.cpp
 * keeps f32 activations for such matrices only (docs/llama-cpp.md), so one kvslim mode matches every
 * matrix on every CPU. The f16 export itself is checked bit for bit for any V below.
 */
const SHAPES: Record<string, (V: number) => ModelConfig> = {
  "llama tied MQA": (V) =>
    llamaConfig({
      dModel: 64,
      nLayers: 2,
      nHeads: 4,
      nKvHeads: 1,
      ffnDim: 128,
      vocabSize: V,
      tiedEmbeddings: true,
      contextLength: 256,
    }),
  "llama tied GQA, vocab padded to 384": () =>
    llamaConfig({
      dModel: 64,
      nLayers: 2,
      nHeads: 4,
      nKvHeads: 2,
      ffnDim: 128,
      vocabSize: 384,
      tiedEmbeddings: true,
      contextLength: 256,
    }),
  "llama GQA Hd 24, vocab padded to 384": () =>
    llamaConfig({ dModel: 64, nLayers: 2, nHeads: 4, nKvHeads: 2, headDim: 24, ffnDim: 96, vocabSize: 384 }),
  "qwen2 with biases": (V) =>
    llamaConfig({
      architecture: "qwen2",
      dModel: 64,
      nLayers: 2,
      nHeads: 4,
      nKvHeads: 2,
      ffnDim: 128,
      vocabSize: V,
      qkvBias: true,
      ropeTheta: 1e6,
      normEps: 1e-6,
    }),
};

const TOLERANCE = 1e-5;
/** A rounding flip's reach with rounded activations (see test/llama-cpp.test.ts); a wrong kernel moves them by ~1. */
const FLIP_BOUND = 0.05;
const POSITIONS = [0, 1, 2, 17, 40, 63, 64];
const CASES: [string, ExportDType][] = [
  ["llama tied MQA", "f32"],
  ["llama GQA Hd 24, vocab padded to 384", "f32"],
  ["qwen2 with biases", "f32"],
  ["llama tied GQA, vocab padded to 384", "f16"],
  ["llama tied MQA", "q8_0"],
];

/** Tokens of real text from the directory's tokenizer (BOS first), at least the last position + 1. */
function promptTokens(tok: TextTokenizer): number[] {
  const tokens = tok.encode(CORPUS.join(" "));
  expect(tokens.length).toBeGreaterThan(POSITIONS[POSITIONS.length - 1]);
  return tokens.slice(0, POSITIONS[POSITIONS.length - 1] + 1);
}

describe("exported GGUF runs like the directory", () => {
  for (const [shape, dtype] of CASES) {
    const how =
      dtype === "f32"
        ? `max |Δ log p| ≤ ${TOLERANCE}`
        : dtype === "f16"
          ? `llama.cpp's f16 dot type found on two-token sequences (median ≤ ${TOLERANCE}, max ≤ ${FLIP_BOUND}), the other ≥ 10× off; then max ≤ ${TOLERANCE} with f32 activations, ≤ ${FLIP_BOUND} with f16-rounded ones`
          : `two-token sequences median ≤ ${TOLERANCE}, max ≤ ${FLIP_BOUND}; then max ≤ ${FLIP_BOUND}`;
    test(`${shape} ${dtype}: ${dtype === "f32" ? "kvslim logits bit-identical to the directory; " : ""}llama.cpp log-probabilities at ${POSITIONS.length} positions (${how})`, async () => {
      const config = SHAPES[shape](bpe.tokens.length);
      const hf = path.join(dir, `${shape}-${dtype}`.replace(/\W+/g, "-"));
      writeHfDir(hf, config, bpe);
      const out = `${hf}.gguf`;
      const summary = exportGguf(hf, out, { dtype });
      expect(summary.pre).toBe("gpt-2");
      const tokens = promptTokens(loadHfTokenizer(hf));

      if (dtype === "f32") {
        // (a) The same weights, the same kernels: every logit equal.
        expect(maxAbsDiff(await kvslimLogits(out, tokens), await kvslimLogits(hf, tokens))).toBe(0);
      }

      // (b) llama.cpp on the exported file. Rounded activations (q8_0; f16 on most CPUs, found by the probe)
      // are compared exactly on two-token sequences, where a rounding flip cannot have spread (errorsBySequence).
      const ref = await loadLlamaCppModel(out);
      const V = config.vocabSize;
      const sequences = Array.from({ length: Math.floor(tokens.length / 2) }, (_, i) => tokens.slice(2 * i, 2 * i + 2));
      let expected: Map<number, Float32Array>;
      let f16Activations: F16Mode = "f32";
      try {
        if (dtype === "f16")
          f16Activations = expectF16Mode(await f16ErrorsBySequence(ref, out, sequences, V), {
            median: TOLERANCE,
            max: FLIP_BOUND,
          });
        if (dtype === "q8_0")
          expectErrorsBySequence(await errorsBySequence(ref, out, sequences, V), {
            median: TOLERANCE,
            max: FLIP_BOUND,
          });
        expected = await llamaCppLogits(ref, tokens, POSITIONS, V);
      } finally {
        await ref.dispose();
      }
      const fromGguf = await kvslimLogits(out, tokens, { f16Activations });
      const errors = POSITIONS.map((p) =>
        maxAbsDiff(logSoftmax(fromGguf.subarray(p * V, (p + 1) * V)), expected.get(p)!),
      );
      const exact = dtype !== "q8_0" && f16Activations === "f32";
      expectErrorsByPosition(errors, { median: exact ? TOLERANCE : FLIP_BOUND, max: exact ? TOLERANCE : FLIP_BOUND });
    });
  }

  test("a trained model behind a run directory's links (models/kvslim-tiny-mqa's files in ckpt-000001/, current, top-level links): f32 export, kvslim logits bit-identical to the directory, llama.cpp median |Δ log p| ≤ 3e-5, max ≤ 1e-4", async () => {
    const shipped = path.join(import.meta.dirname, "..", "models", "kvslim-tiny-mqa");
    const run = path.join(dir, "run");
    const files = ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"];
    fs.mkdirSync(path.join(run, "ckpt-000001"), { recursive: true });
    for (const file of files) {
      fs.symlinkSync(path.join(shipped, file), path.join(run, "ckpt-000001", file));
      fs.symlinkSync(path.join("current", file), path.join(run, file));
    }
    fs.symlinkSync("ckpt-000001", path.join(run, "current"));
    const out = path.join(dir, "run.gguf");
    const r = await cli("export", "-m", run, "-o", out);
    expect(r.code, r.err).toBe(0);
    const tokens = promptTokens(loadHfTokenizer(run));
    const fromGguf = await kvslimLogits(out, tokens);
    expect(maxAbsDiff(fromGguf, await kvslimLogits(run, tokens))).toBe(0);
    const V = (JSON.parse(fs.readFileSync(path.join(run, "config.json"), "utf8")) as { vocab_size: number }).vocab_size;
    const ref = await loadLlamaCppModel(out);
    let expected: Map<number, Float32Array>;
    try {
      expected = await llamaCppLogits(ref, tokens, POSITIONS, V);
    } finally {
      await ref.dispose();
    }
    // A trained model's log-probabilities reach −15 to −27 nats (random weights' stay near −ln V ≈ −8), and
    // the two engines' f32 rounding, summed in different orders, grows with them (one f32 rounding of 27 is
    // 3.2e-6): by position 4.1e-6 to 1.8e-5 (median 9.6e-6) on one x86 CPU, 3.1e-6 to 1.4e-5 (median 1.0e-5)
    // on an AVX2-only one, whose ggml variant sums in another order. The bounds sit 2–5× above both and 10×
    // below the smallest real difference seen (f16-rounded activations: 1e-3).
    const errors = POSITIONS.map((p) =>
      maxAbsDiff(logSoftmax(fromGguf.subarray(p * V, (p + 1) * V)), expected.get(p)!),
    );
    expectErrorsByPosition(errors, { median: 3e-5, max: 1e-4 });
  });

  test("f16, q8_0, q4_0 and q4_k_m exports hold exactly the f32 export's matrices encoded in the type llama-quantize's mix gives each; vectors stay f32", () => {
    const config = SHAPES["llama tied MQA"](bpe.tokens.length);
    const hf = path.join(dir, "encodings");
    writeHfDir(hf, config, bpe);
    const types = ["f32", "f16", "q8_0", "q4_0", "q4_k_m"] as const;
    const files = Object.fromEntries(
      types.map((d) => [d, readGguf(exportGguf(hf, `${hf}-${d}.gguf`, { dtype: d }).path)]),
    );
    const bytes = (t: { byteLength: number }) => {
      const b = new Uint8Array(t.byteLength);
      readTensorBytes(t as Parameters<typeof readTensorBytes>[0], b);
      return b;
    };
    for (const d of types.slice(1)) {
      expect(files[d].tensors.map((t) => t.name)).toEqual(files.f32.tensors.map((t) => t.name));
      const mix = tensorDTypes(d, expectedTensors(config), config.tiedEmbeddings);
      expect(files[d].metadata.get("general.file_type")).toBe(FILE_TYPES[d]);
      for (const [i, t] of files[d].tensors.entries()) {
        const f32 = files.f32.tensors[i];
        const values = decode("f32", bytes(f32), f32.byteLength / 4);
        const want = mix.get(t.name)!;
        if (t.shape.length === 1) expect(want).toBe("f32");
        expect({ name: t.name, type: t.type }).toEqual({ name: t.name, type: want });
        expect(Buffer.from(bytes(t)).equals(Buffer.from(encode(want, values))), t.name).toBe(true);
      }
    }
  });
});

describe("exported tokenizer tokenizes like tokenizer.json", () => {
  let hfTok: TextTokenizer;
  let ggufTok: TextTokenizer;
  let model: LlamaModel;
  beforeAll(async () => {
    const config = SHAPES["llama tied MQA"](bpe.tokens.length);
    const hf = path.join(dir, "tokenizer");
    writeHfDir(hf, config, bpe);
    const out = exportGguf(hf, `${hf}.gguf`).path;
    hfTok = loadHfTokenizer(hf);
    ggufTok = tokenizerFromGguf(readGguf(out).metadata);
    model = await loadLlamaCppModel(out);
  });
  afterAll(async () => model?.dispose());

  const strings = [...STRINGS, ...randomStrings(RANDOM_STRINGS)];
  test(`(c) llama.cpp and kvslim's GGUF tokenizer give tokenizer.json's ids on ${STRINGS.length} chosen and ${RANDOM_STRINGS} random strings (exact)`, () => {
    const merged = strings.filter(
      (s) => hfTok.encode(s, { addBos: false }).length < new TextEncoder().encode(s).length,
    );
    expect(merged.length, "strings where merges apply").toBeGreaterThan(strings.length / 3);
    for (const text of strings) {
      const want = hfTok.encode(text, { addBos: false });
      expect({ text, ids: Array.from(model.tokenize(text, false)) }).toEqual({ text, ids: want });
      expect({ text, ids: ggufTok.encode(text, { addBos: false }) }).toEqual({ text, ids: want });
    }
  });

  test("special ids and BOS default agree; decoding agrees where llama.cpp's space clean-up does not apply", () => {
    expect(model.tokens.bos).toBe(hfTok.bos);
    expect(model.tokens.eos).toBe(hfTok.eos);
    expect(model.tokens.shouldPrependBosToken).toBe(hfTok.addBos);
    expect([ggufTok.bos, ggufTok.eos, ggufTok.addBos]).toEqual([hfTok.bos, hfTok.eos, hfTok.addBos]);
    for (const text of strings.filter((s) => !/ [,.!?']/.test(s))) {
      const ids = hfTok.encode(text, { addBos: false });
      expect({ text, decoded: model.detokenize(ids as Token[]) }).toEqual({ text, decoded: hfTok.decode(ids) });
    }
  });
});

describe("refusals leave no output file", () => {
  test("(d) a CLA directory (model_type kvslim, consumer layers) is refused with UnsupportedError, in the API and the CLI", async () => {
    const config = llamaConfig({
      dModel: 64,
      nLayers: 2,
      nHeads: 4,
      nKvHeads: 1,
      ffnDim: 128,
      vocabSize: bpe.tokens.length,
      kvSource: claShare(2, 2),
      kvNorm: true,
    });
    const hf = path.join(dir, "cla");
    writeHfDir(hf, config, bpe);
    expect(JSON.parse(fs.readFileSync(path.join(hf, "config.json"), "utf8")).model_type).toBe("kvslim");
    const out = path.join(dir, "cla-out", "cla.gguf");
    fs.mkdirSync(path.dirname(out));
    expect(() => exportGguf(hf, out)).toThrow(UnsupportedError);
    expect(() => exportGguf(hf, out)).toThrow(/cross-layer K\/V sharing/);
    expectFailure(
      await cli("export", "-m", hf, "-o", out),
      1,
      "UnsupportedError",
      /layer 1 has no K\/V of its own.*train without CLA/,
    );
    expect(fs.readdirSync(path.dirname(out))).toEqual([]);

    // model_type "kvslim" alone (no sharing) is refused too: it marks a kvslim-only file.
    const plain = path.join(dir, "kvslim-type");
    writeHfDir(plain, SHAPES["llama tied MQA"](bpe.tokens.length), bpe);
    const json = JSON.parse(fs.readFileSync(path.join(plain, "config.json"), "utf8"));
    fs.writeFileSync(path.join(plain, "config.json"), JSON.stringify({ ...json, model_type: "kvslim" }));
    expect(() => exportGguf(plain, out)).toThrow(/model_type "kvslim"/);
    expect(fs.readdirSync(path.dirname(out))).toEqual([]);
  });

  test("(e) an existing output is kept without --force (FileExistsError) and replaced with it; bad flags fail in one line", async () => {
    const hf = path.join(dir, "overwrite");
    writeHfDir(hf, SHAPES["llama tied MQA"](bpe.tokens.length), bpe);
    const outDir = path.join(dir, "overwrite-out");
    fs.mkdirSync(outDir);
    const out = path.join(outDir, "model.gguf");
    fs.writeFileSync(out, "keep me");

    expect(() => exportGguf(hf, out)).toThrow(FileExistsError);
    expectFailure(await cli("export", "-m", hf, "-o", out), 1, "FileExistsError", /--force/);
    expect(fs.readFileSync(out, "utf8")).toBe("keep me");
    expectFailure(
      await cli("export", "-m", hf, "-o", out, "--dtype", "q3_k", "--force"),
      2,
      "UsageError",
      /--dtype expects f32, f16, q4_0, .*q4_k_m.*, got "q3_k"/,
    );
    expectFailure(
      await cli("export", "-m", path.join(dir, "missing"), "-o", out, "--force"),
      2,
      "UsageError",
      /does not exist/,
    );
    expect(fs.readFileSync(out, "utf8")).toBe("keep me");
    expect(fs.readdirSync(outDir)).toEqual(["model.gguf"]);

    const r = await cli("export", "-m", hf, "-o", out, "--dtype", "q8_0", "--force");
    expect(r.code, r.err).toBe(0);
    expect(r.err).toMatch(/wrote .*model\.gguf \(llama, 2 layers.*q8_0/);
    expect(readGguf(out).tensors.find((t) => t.name === "token_embd.weight")?.type).toBe("q8_0");
    expect(fs.readdirSync(outDir)).toEqual(["model.gguf"]);
  });
});
