/**
 * Synthetic models: random weights for any config, and a byte-level BPE vocabulary of any size, written
 * as GGUF or as a Hugging Face directory. Tests use them against llama.cpp, the benchmark uses the
 * reference shape, and the build writes a tiny one so the CLI has something to run on a fresh clone.
 *
 * The vocabulary: the 256 byte symbols of GPT-2's byte-level alphabet, then merged tokens, each the
 * concatenation of two earlier tokens (so the merge list is valid by construction), then <s> and </s>.
 */
import fs from "node:fs";
import path from "node:path";
import { writeGguf, gguf, type GgufEntry, type TensorToWrite } from "../io/gguf-writer.js";
import { writeSafetensors } from "../io/safetensors.js";
import { encode } from "../memory/dtype.js";
import { llama3FreqFactors } from "./rope.js";
import { FILE_TYPES, type FileType, tensorDTypes } from "./file-types.js";
import { Rng } from "./sampler.js";
import { derive, type ModelConfig } from "./config.js";
import { ggufMetadataFor, hfConfigFor } from "./files.js";
import { expectedTensors, interleaveRowOrder } from "./tensor-names.js";

/** GPT-2's byte -> printable character map. */
export function byteToUnicode(): string[] {
  const keep: number[] = [];
  for (let b = 33; b <= 126; b++) keep.push(b);
  for (let b = 161; b <= 172; b++) keep.push(b);
  for (let b = 174; b <= 255; b++) keep.push(b);
  const map: string[] = new Array(256);
  let extra = 0;
  for (let b = 0; b < 256; b++) map[b] = keep.includes(b) ? String.fromCharCode(b) : String.fromCharCode(256 + extra++);
  return map;
}

export interface SyntheticVocab {
  tokens: string[]; // V, byte-level strings
  merges: string[]; // "a b"
  bos: number;
  eos: number;
}

/** A byte-level BPE vocabulary of exactly `size` tokens (size ≥ 258). */
export function syntheticVocab(size: number, seed = 1): SyntheticVocab {
  const bytes = byteToUnicode();
  const tokens = [...bytes];
  const seen = new Set(tokens);
  const merges: string[] = [];
  const rng = new Rng(seed);
  // Favour lowercase letters and space (Ġ) so merged tokens look like word pieces.
  const common = [..."etaoinshrdlucmfwypvbgkjqxz", "Ġ"];
  while (tokens.length < size - 2) {
    const pick = () =>
      rng.next() < 0.5
        ? common[Math.floor(rng.next() * common.length)]
        : tokens[Math.floor(rng.next() * tokens.length)];
    const a = pick();
    const b = pick();
    if (a.length + b.length > 12 || seen.has(a + b)) continue;
    seen.add(a + b);
    tokens.push(a + b);
    merges.push(`${a} ${b}`);
  }
  tokens.push("<s>", "</s>");
  return { tokens, merges, bos: size - 2, eos: size - 1 };
}

export function ggufTokenizerMetadata(v: SyntheticVocab): [string, GgufEntry][] {
  const types = v.tokens.map((_, i) => (i === v.bos || i === v.eos ? 3 : 1));
  return [
    ["tokenizer.ggml.model", gguf.str("gpt2")],
    ["tokenizer.ggml.pre", gguf.str("default")],
    ["tokenizer.ggml.tokens", gguf.arr("string", v.tokens)],
    ["tokenizer.ggml.token_type", gguf.arr("int32", types)],
    ["tokenizer.ggml.merges", gguf.arr("string", v.merges)],
    ["tokenizer.ggml.bos_token_id", gguf.u32(v.bos)],
    ["tokenizer.ggml.eos_token_id", gguf.u32(v.eos)],
    ["tokenizer.ggml.add_bos_token", gguf.bool(true)],
  ];
}

/** tokenizer.json (+ tokenizer_config.json) for the same vocabulary. */
export function hfTokenizerFiles(v: SyntheticVocab): { tokenizer: object; tokenizerConfig: object } {
  const vocab: Record<string, number> = {};
  v.tokens.forEach((t, i) => (vocab[t] = i));
  const special = (id: number) => ({
    id,
    content: v.tokens[id],
    single_word: false,
    lstrip: false,
    rstrip: false,
    normalized: false,
    special: true,
  });
  return {
    tokenizer: {
      version: "1.0",
      added_tokens: [special(v.bos), special(v.eos)],
      normalizer: null,
      pre_tokenizer: { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: true },
      post_processor: {
        type: "TemplateProcessing",
        single: [{ SpecialToken: { id: "<s>", type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } }],
        pair: [
          { SpecialToken: { id: "<s>", type_id: 0 } },
          { Sequence: { id: "A", type_id: 0 } },
          { Sequence: { id: "B", type_id: 1 } },
        ],
        special_tokens: { "<s>": { id: "<s>", ids: [v.bos], tokens: ["<s>"] } },
      },
      decoder: { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: true },
      model: {
        type: "BPE",
        dropout: null,
        unk_token: null,
        continuing_subword_prefix: null,
        end_of_word_suffix: null,
        fuse_unk: false,
        byte_fallback: false,
        ignore_merges: false,
        vocab,
        merges: v.merges,
      },
    },
    tokenizerConfig: {
      bos_token: "<s>",
      eos_token: "</s>",
      add_bos_token: true,
      tokenizer_class: "PreTrainedTokenizerFast",
    },
  };
}

export interface RandomWeightsOptions {
  seed?: number;
  /** Standard deviation of matrix entries; default 1/sqrt(fan-in) keeps activations O(1). */
  std?: number;
}

/** Random weights for `config`, in GGUF layout and names (Q/K rows interleaved for llama). */
export function randomWeights(
  config: ModelConfig,
  options: RandomWeightsOptions = {},
): Map<string, { shape: number[]; values: Float32Array }> {
  const rng = new Rng(options.seed ?? 1);
  const gauss = () => {
    const u = Math.max(rng.next(), 1e-12);
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * rng.next());
  };
  const out = new Map<string, { shape: number[]; values: Float32Array }>();
  for (const spec of expectedTensors(config)) {
    const n = spec.shape.reduce((a, b) => a * b, 1);
    const values = new Float32Array(n);
    const isNorm = spec.name.endsWith("norm.weight");
    const std = options.std ?? 1 / Math.sqrt(spec.shape[spec.shape.length - 1]);
    for (let i = 0; i < n; i++) values[i] = isNorm ? 1 + 0.1 * gauss() : spec.vector ? 0.1 * gauss() : std * gauss();
    out.set(spec.name, { shape: spec.shape, values });
  }
  return out;
}

/** The weights encoded for writing, under GGUF names (hf = false) or HF names with HF's Q/K row order. */
export function tensorsToWrite(
  config: ModelConfig,
  weights: ReturnType<typeof randomWeights>,
  fileType: FileType,
  hf: boolean,
): TensorToWrite[] {
  const specs = expectedTensors(config);
  const byName = new Map(specs.map((s) => [s.name, s]));
  const dtypes = tensorDTypes(fileType, specs, config.tiedEmbeddings);
  return [...weights].map(([name, { shape, values }]) => {
    const spec = byName.get(name)!;
    let data = values;
    // HF llama checkpoints pair RoPE dims as halves: undo the interleaving for them.
    if (hf && config.architecture === "llama" && spec.ropeRows) {
      const order = interleaveRowOrder(spec.ropeRows === "q" ? config.nHeads : config.nKvHeads, config.headDim);
      const rowLen = spec.vector ? 1 : shape[1];
      data = new Float32Array(values.length);
      order.forEach((hfRow, ggufRow) =>
        data.set(values.subarray(ggufRow * rowLen, (ggufRow + 1) * rowLen), hfRow * rowLen),
      );
    }
    const d = dtypes.get(name)!;
    return { name: hf ? spec.hfName : name, dtype: d, shape, data: encode(d, data) };
  });
}

/** Full GGUF metadata (model + tokenizer) for a synthetic model. */
export function ggufModelMetadata(
  config: ModelConfig,
  vocab: SyntheticVocab,
  fileType: FileType,
): [string, GgufEntry][] {
  return [
    ...ggufMetadataFor(config),
    ["general.file_type", gguf.u32(FILE_TYPES[fileType])],
    ["general.quantization_version", gguf.u32(2)],
    ...ggufTokenizerMetadata(vocab),
  ];
}

export function writeGgufModel(
  file: string,
  config: ModelConfig,
  weights: ReturnType<typeof randomWeights>,
  vocab: SyntheticVocab,
  fileType: FileType = "f32",
  overwrite = false,
): void {
  const tensors = tensorsToWrite(config, weights, fileType, false);
  // Llama-3 RoPE scaling travels in GGUF as the rope_freqs tensor (as llama.cpp's converter writes it).
  const freqFactors = llama3FreqFactors(config);
  if (freqFactors) {
    tensors.push({
      name: "rope_freqs.weight",
      dtype: "f32",
      shape: [freqFactors.length],
      data: encode("f32", freqFactors),
    });
  }
  writeGguf(file, ggufModelMetadata(config, vocab, fileType), tensors, { overwrite });
}

export function writeHfModel(
  dir: string,
  config: ModelConfig,
  weights: ReturnType<typeof randomWeights>,
  vocab: SyntheticVocab,
  dtype: "f32" | "f16" | "bf16" = "f32",
  overwrite = false,
): void {
  fs.mkdirSync(dir, { recursive: true });
  writeSafetensors(
    path.join(dir, "model.safetensors"),
    tensorsToWrite(config, weights, dtype, true),
    { format: "pt" },
    { overwrite },
  );
  const { tokenizer, tokenizerConfig } = hfTokenizerFiles(vocab);
  fs.writeFileSync(path.join(dir, "config.json"), JSON.stringify(hfConfigFor(config, dtype), null, 2));
  fs.writeFileSync(path.join(dir, "tokenizer.json"), JSON.stringify(tokenizer));
  fs.writeFileSync(path.join(dir, "tokenizer_config.json"), JSON.stringify(tokenizerConfig, null, 2));
}

/** A plain Llama config with sensible defaults; override what you need. */
export function llamaConfig(
  overrides: Partial<ModelConfig> & Pick<ModelConfig, "dModel" | "nLayers" | "nHeads">,
): ModelConfig {
  const headDim = overrides.headDim ?? overrides.dModel / overrides.nHeads;
  const nLayers = overrides.nLayers;
  const config: ModelConfig = {
    architecture: "llama",
    vocabSize: 512,
    nKvHeads: overrides.nHeads,
    headDim,
    ffnDim: 4 * overrides.dModel,
    contextLength: 2048,
    normEps: 1e-5,
    ropeTheta: 10000,
    ropeDim: headDim,
    ropeStyle: "interleaved",
    ropeScaling: null,
    qkvBias: false,
    tiedEmbeddings: false,
    kvSource: Array.from({ length: nLayers }, (_, l) => l),
    kvNorm: false,
    ...overrides,
  };
  if (config.architecture === "qwen2") config.ropeStyle = "halves";
  derive(config);
  return config;
}
