/**
 * ModelConfig to and from the files people have: GGUF metadata and Hugging Face config.json.
 *
 * GGUF keys (prefix = general.architecture): context_length, embedding_length, block_count,
 * feed_forward_length, attention.head_count, attention.head_count_kv, attention.key_length,
 * attention.layer_norm_rms_epsilon, rope.dimension_count, rope.freq_base; Llama-3 RoPE scaling
 * travels as the tensor rope_freqs.weight. kvslim's own CLA keys: kvslim.kv_source (int32 array)
 * and kvslim.kv_norm (bool).
 *
 * config.json keys: model_type (llama, mistral, qwen2, kvslim), hidden_size, intermediate_size,
 * num_hidden_layers, num_attention_heads, num_key_value_heads, head_dim, rms_norm_eps, rope_theta,
 * rope_scaling, max_position_embeddings, vocab_size, tie_word_embeddings, attention_bias.
 * kvslim's CLA keys (model_type "kvslim", architectures ["KvslimForCausalLM"], so tools that only
 * know Llama refuse the file instead of inventing K/V weights for consumer layers):
 *   kv_source          list of L layer indices: the layer whose K/V each layer reads
 *   cla_share_factor   shorthand for uniform groups of s adjacent layers (used when kv_source is absent)
 *   cla_kv_norm        producers have their own K/V-input RMSNorm (self_attn.kv_norm.weight)
 */
import { FormatError, ModelMismatchError, UnsupportedError, shownValue } from "../errors.js";
import type { GgufFile, GgufValue } from "../io/gguf.js";
import type { GgufEntry } from "../io/gguf-writer.js";
import { gguf } from "../io/gguf-writer.js";
import { type Architecture, type ModelConfig, ARCHITECTURES, claShare, claShareOf, validateConfig } from "./config.js";

/** Upper bounds for counts read from files: far above any real model, low enough to size nothing absurd. */
const LIMITS = { layers: 4096, heads: 4096, dim: 1 << 20, vocab: 1 << 24, context: 1 << 24 };

/**
 * A number read from a file at `where` ("FILE: key"), checked for type and range: an integer in [min, max]
 * when `integer`, else a finite number > 0 (epsilons, RoPE bases, factors).
 */
function checked(v: unknown, where: string, range: IntegerRange | RealRange): number {
  const n = typeof v === "bigint" ? Number(v) : v;
  if (range.integer) {
    if (typeof n !== "number" || !Number.isInteger(n) || n < range.min || n > range.max) {
      throw new FormatError(`${where} must be an integer from ${range.min} to ${range.max}, found ${shownValue(v)}`);
    }
  } else if (
    typeof n !== "number" ||
    !Number.isFinite(n) ||
    !(range.above !== undefined ? n > range.above : n >= range.min!) ||
    !(range.below !== undefined ? n < range.below : n <= range.max!)
  ) {
    throw new FormatError(`${where} must be ${range.text}, found ${shownValue(v)}`);
  }
  return n;
}

const INTEGER_TYPES = new Set(["uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64", "int64"]);
const FLOAT_TYPES = new Set(["float32", "float64"]);

/**
 * A number from GGUF metadata, checked for its stored type (an integer type for counts, a float type for
 * epsilons and bases, as llama.cpp requires) and its range.
 */
function num(file: GgufFile, key: string, range: Parameters<typeof checked>[2], fallback?: number): number {
  const v = file.metadata.get(key);
  if (v === undefined) {
    if (fallback !== undefined) return fallback;
    throw new FormatError(`${file.path}: metadata key ${key} is missing; a model file needs it`);
  }
  const type = file.types.get(key) ?? "";
  const wanted = range.integer ? INTEGER_TYPES : FLOAT_TYPES;
  if (!wanted.has(type)) {
    throw new FormatError(
      `${file.path}: metadata key ${key} must be stored as ${range.integer ? "an integer (uint32)" : "a float (float32)"}, ` +
        `found ${type || "no type"} ${shownValue(v)}`,
    );
  }
  return checked(v, `${file.path}: metadata key ${key}`, range);
}

const count = (max: number) => ({ integer: true, min: 1, max }) as const;
interface IntegerRange {
  integer: true;
  min: number;
  max: number;
}
/** A finite real number above `above` (or from `min`) and below `below` (or up to `max`); `text` says so. */
interface RealRange {
  integer: false;
  above?: number;
  min?: number;
  below?: number;
  max?: number;
  text: string;
}
const F32_MAX = 3.4028234663852886e38;
/** Factors (partial rotary, RoPE scaling): positive and finite in float32. */
const POSITIVE: RealRange = { integer: false, above: 0, max: F32_MAX, text: "a number > 0 (and finite in float32)" };
/** RMSNorm epsilons keep a division finite: tiny by design (1e-6, 1e-5); 1 or more would swamp the activations. */
const EPSILON: RealRange = { integer: false, above: 0, below: 1, text: "a number between 0 and 1 (such as 1e-5)" };
/** RoPE bases: below 1 the rotation frequencies exceed one radian per position (and overflow near 0). */
const ROPE_BASE: RealRange = {
  integer: false,
  min: 1,
  max: F32_MAX,
  text: "a number ≥ 1 (such as 10000), finite in float32",
};

/** kvslim's CLA map from a file: a list of L layer indices, each an integer in [0, L). */
function kvSourceList(v: unknown, where: string, nLayers: number): number[] {
  if (!Array.isArray(v))
    throw new FormatError(`${where} must be a list of ${nLayers} layer indices, found ${shownValue(v)}`);
  return v.map((x, l) => checked(x, `${where}[${l}]`, { integer: true, min: 0, max: nLayers - 1 }));
}

export function configFromGguf(file: GgufFile): ModelConfig {
  const meta = file.metadata;
  const source = file.path;
  const arch = meta.get("general.architecture");
  if (arch === undefined)
    throw new FormatError(`${source}: metadata key general.architecture is missing; a model file needs it`);
  if (typeof arch !== "string")
    throw new FormatError(`${source}: metadata key general.architecture must be a string, found ${shownValue(arch)}`);
  if (!(ARCHITECTURES as readonly string[]).includes(arch)) {
    throw new UnsupportedError(
      `${source}: architecture "${arch}" is not supported; kvslim runs: ${ARCHITECTURES.join(", ")} ` +
        `(llama covers Mistral, TinyLlama and SmolLM files)`,
    );
  }
  const p = `${arch}.`;
  const names = new Set(file.tensors.map((t) => t.name));
  const embd = file.tensors.find((t) => t.name === "token_embd.weight");
  if (embd === undefined)
    throw new ModelMismatchError(`${source}: tensor token_embd.weight (the token embedding) is missing`);
  const dModel = num(file, p + "embedding_length", count(LIMITS.dim));
  const nHeads = num(file, p + "attention.head_count", count(LIMITS.heads));
  const nLayers = num(file, p + "block_count", count(LIMITS.layers));
  const headDim = num(file, p + "attention.key_length", count(LIMITS.dim), Math.floor(dModel / nHeads));
  const scalingType = meta.get(p + "rope.scaling.type");
  if (scalingType !== undefined && typeof scalingType !== "string") {
    throw new FormatError(
      `${source}: metadata key ${p}rope.scaling.type must be a string, found ${shownValue(scalingType)}`,
    );
  }
  if (scalingType !== undefined && scalingType !== "none" && !names.has("rope_freqs.weight")) {
    throw new UnsupportedError(
      `${source}: RoPE scaling "${scalingType}" is not supported (only none and Llama-3 frequency factors)`,
    );
  }
  const kvSourceMeta = meta.get("kvslim.kv_source");
  const kvSourceType = file.types.get("kvslim.kv_source");
  if (kvSourceType !== undefined && !INTEGER_TYPES.has(kvSourceType.replace("array of ", ""))) {
    throw new FormatError(
      `${source}: metadata key kvslim.kv_source must be an array of integers, found ${kvSourceType} ${shownValue(kvSourceMeta)}`,
    );
  }
  const kvNorm = meta.get("kvslim.kv_norm");
  if (kvNorm !== undefined && typeof kvNorm !== "boolean") {
    throw new FormatError(`${source}: metadata key kvslim.kv_norm must be a bool, found ${shownValue(kvNorm)}`);
  }
  const config: ModelConfig = {
    architecture: arch as Architecture,
    vocabSize: embd.shape[0],
    dModel,
    nLayers,
    nHeads,
    nKvHeads: num(file, p + "attention.head_count_kv", count(LIMITS.heads), nHeads),
    headDim,
    ffnDim: num(file, p + "feed_forward_length", count(LIMITS.dim)),
    contextLength: num(file, p + "context_length", count(LIMITS.context)),
    normEps: num(file, p + "attention.layer_norm_rms_epsilon", EPSILON),
    ropeTheta: num(file, p + "rope.freq_base", ROPE_BASE, 10000),
    ropeDim: num(file, p + "rope.dimension_count", count(LIMITS.dim), headDim),
    ropeStyle: arch === "qwen2" ? "halves" : "interleaved",
    ropeScaling: null,
    qkvBias: names.has("blk.0.attn_q.bias"),
    tiedEmbeddings: !names.has("output.weight"),
    kvSource:
      kvSourceMeta !== undefined
        ? kvSourceList(kvSourceMeta, `${source}: metadata key kvslim.kv_source`, nLayers)
        : claShare(nLayers, 1),
    kvNorm: kvNorm === true,
  };
  validateConfig(config, source);
  return config;
}

/** GGUF metadata describing `config` (the tokenizer keys are added by the caller). */
export function ggufMetadataFor(config: ModelConfig, name = "kvslim model"): [string, GgufEntry][] {
  const p = `${config.architecture}.`;
  const entries: [string, GgufEntry][] = [
    ["general.architecture", gguf.str(config.architecture)],
    ["general.name", gguf.str(name)],
    [p + "context_length", gguf.u32(config.contextLength)],
    [p + "embedding_length", gguf.u32(config.dModel)],
    [p + "block_count", gguf.u32(config.nLayers)],
    [p + "feed_forward_length", gguf.u32(config.ffnDim)],
    [p + "attention.head_count", gguf.u32(config.nHeads)],
    [p + "attention.head_count_kv", gguf.u32(config.nKvHeads)],
    [p + "attention.key_length", gguf.u32(config.headDim)],
    [p + "attention.value_length", gguf.u32(config.headDim)],
    [p + "attention.layer_norm_rms_epsilon", gguf.f32(config.normEps)],
    [p + "rope.dimension_count", gguf.u32(config.ropeDim)],
    [p + "rope.freq_base", gguf.f32(config.ropeTheta)],
  ];
  if (claShareOf(config.kvSource) !== 1) entries.push(["kvslim.kv_source", gguf.arr("int32", config.kvSource)]);
  if (config.kvNorm) entries.push(["kvslim.kv_norm", gguf.bool(true)]);
  return entries;
}

type Json = Record<string, unknown>;

function field(
  json: Json,
  key: string,
  source: string,
  range: Parameters<typeof checked>[2],
  fallback?: number,
): number {
  const v = json[key];
  if (v === undefined || v === null) {
    if (fallback !== undefined) return fallback;
    throw new FormatError(`${source}: "${key}" is missing; a config.json for a causal LM needs it`);
  }
  return checked(v, `${source}: "${key}"`, range);
}

/** A true/false key of config.json (absent: undefined). */
function flag(json: Json, key: string, source: string): boolean | undefined {
  const v = json[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "boolean")
    throw new FormatError(`${source}: "${key}" must be true or false, found ${shownValue(v)}`);
  return v;
}

const HF_TYPES: Record<string, Architecture> = { llama: "llama", mistral: "llama", qwen2: "qwen2", kvslim: "llama" };

export function configFromHf(json: Json, source: string): ModelConfig {
  if (typeof json.model_type !== "string")
    throw new FormatError(
      `${source}: "model_type" must be a string naming the architecture, found ${shownValue(json.model_type)}`,
    );
  const modelType = json.model_type;
  const arch = Object.hasOwn(HF_TYPES, modelType) ? HF_TYPES[modelType] : undefined;
  if (!arch) {
    throw new UnsupportedError(
      `${source}: model_type "${modelType}" is not supported; kvslim runs: ${Object.keys(HF_TYPES).join(", ")}`,
    );
  }
  const dModel = field(json, "hidden_size", source, count(LIMITS.dim));
  const nHeads = field(json, "num_attention_heads", source, count(LIMITS.heads));
  const nLayers = field(json, "num_hidden_layers", source, count(LIMITS.layers));
  const headDim = field(json, "head_dim", source, count(LIMITS.dim), Math.floor(dModel / nHeads));
  const kvSource =
    json.kv_source !== undefined
      ? kvSourceList(json.kv_source, `${source}: "kv_source"`, nLayers)
      : claShare(nLayers, field(json, "cla_share_factor", source, count(nLayers), 1));
  const config: ModelConfig = {
    architecture: arch,
    vocabSize: field(json, "vocab_size", source, count(LIMITS.vocab)),
    dModel,
    nLayers,
    nHeads,
    nKvHeads: field(json, "num_key_value_heads", source, count(LIMITS.heads), nHeads),
    headDim,
    ffnDim: field(json, "intermediate_size", source, count(LIMITS.dim)),
    contextLength: field(json, "max_position_embeddings", source, count(LIMITS.context), 2048),
    normEps: field(json, "rms_norm_eps", source, EPSILON, 1e-6),
    ropeTheta: field(json, "rope_theta", source, ROPE_BASE, 10000),
    ropeDim: Math.floor(headDim * field(json, "partial_rotary_factor", source, POSITIVE, 1)),
    // The files keep HF's halves pairing; the loader permutes llama Q/K rows to interleaved (tensor-names.ts).
    ropeStyle: arch === "qwen2" ? "halves" : "interleaved",
    ropeScaling: hfRopeScaling(json.rope_scaling, source),
    qkvBias: arch === "qwen2" || flag(json, "attention_bias", source) === true,
    tiedEmbeddings: flag(json, "tie_word_embeddings", source) ?? arch === "qwen2",
    kvSource,
    kvNorm: flag(json, "cla_kv_norm", source) === true,
  };
  validateConfig(config, source);
  return config;
}

function hfRopeScaling(raw: unknown, source: string): ModelConfig["ropeScaling"] {
  if (raw === undefined || raw === null) return null;
  if (typeof raw !== "object" || Array.isArray(raw))
    throw new FormatError(`${source}: "rope_scaling" must be an object, found ${shownValue(raw)}`);
  const r = raw as Json;
  const type = r.rope_type ?? r.type;
  if (type === "default") return null;
  if (typeof type !== "string")
    throw new FormatError(
      `${source}: "rope_scaling" needs a "rope_type" string ("llama3" or "default"), found ${shownValue(raw)}`,
    );
  if (type !== "llama3") {
    throw new UnsupportedError(`${source}: rope_scaling type "${type}" is not supported (only "llama3")`);
  }
  return {
    type: "llama3",
    factor: field(r, "factor", `${source} rope_scaling`, POSITIVE),
    lowFreqFactor: field(r, "low_freq_factor", `${source} rope_scaling`, POSITIVE),
    highFreqFactor: field(r, "high_freq_factor", `${source} rope_scaling`, POSITIVE),
    originalContext: field(r, "original_max_position_embeddings", `${source} rope_scaling`, count(LIMITS.context)),
  };
}

/** config.json for `config`; CLA models get kvslim's own model_type so Llama-only tools refuse them. */
export function hfConfigFor(config: ModelConfig, dtype: string): Json {
  const share = claShareOf(config.kvSource);
  const cla = share !== 1 || config.kvNorm;
  const json: Json = {
    architectures: [
      cla ? "KvslimForCausalLM" : config.architecture === "qwen2" ? "Qwen2ForCausalLM" : "LlamaForCausalLM",
    ],
    model_type: cla ? "kvslim" : config.architecture,
    vocab_size: config.vocabSize,
    hidden_size: config.dModel,
    intermediate_size: config.ffnDim,
    num_hidden_layers: config.nLayers,
    num_attention_heads: config.nHeads,
    num_key_value_heads: config.nKvHeads,
    head_dim: config.headDim,
    max_position_embeddings: config.contextLength,
    rms_norm_eps: config.normEps,
    rope_theta: config.ropeTheta,
    tie_word_embeddings: config.tiedEmbeddings,
    attention_bias: config.qkvBias,
    hidden_act: "silu",
    torch_dtype: dtype === "f16" ? "float16" : dtype === "bf16" ? "bfloat16" : "float32",
  };
  if (config.ropeDim !== config.headDim) json.partial_rotary_factor = config.ropeDim / config.headDim;
  if (config.ropeScaling) {
    const s = config.ropeScaling;
    json.rope_scaling = {
      rope_type: "llama3",
      factor: s.factor,
      low_freq_factor: s.lowFreqFactor,
      high_freq_factor: s.highFreqFactor,
      original_max_position_embeddings: s.originalContext,
    };
  }
  if (cla) {
    json.kv_source = config.kvSource;
    if (share !== null) json.cla_share_factor = share;
    json.cla_kv_norm = config.kvNorm;
  }
  return json;
}
