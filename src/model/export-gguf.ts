/**
 * Export a Hugging Face llama (or qwen2) directory — config.json, model.safetensors, tokenizer.json,
 * tokenizer_config.json, what kvslim's training writes — to one GGUF file that llama.cpp runs.
 *
 * Steps:
 *   1. Open the directory with the model loader's own code (openModelSource, checkTensors), so the
 *      export holds exactly the weights `kvslim generate -m DIR` runs, checked the same way.
 *   2. Refuse what GGUF cannot say: CLA models (model_type "kvslim", layers without their own K/V, or
 *      per-producer kv norms); llama.cpp has no cross-layer K/V sharing.
 *   3. Tensors: HF names -> GGUF names (tensor-names.ts). Llama Q/K rows (and biases) go from HF's
 *      "halves" RoPE pairing to GGUF's interleaved one (interleaveRowOrder, the row permutation llama.cpp's
 *      convert_hf_to_gguf.py applies). Matrices are encoded in the file type's dtype for them (file-types.ts:
 *      one dtype, or llama-quantize's mix); vectors stay f32, as llama.cpp's converter keeps them. Llama-3 RoPE scaling becomes the rope_freqs tensor.
 *   4. Model metadata: ggufMetadataFor (the keys configFromGguf reads back) and general.file_type.
 *   5. Tokenizer: byte-level BPE only, written as tokenizer.ggml.model "gpt2" with tokenizer.ggml.pre
 *      "gpt-2", whose regex is the one @huggingface/tokenizers' ByteLevel pre-tokenizer uses (llama.cpp
 *      keeps unmatched whitespace as pieces, which is what the ByteLevel regex's final \s+ matches).
 *      Tokens keep their byte-alphabet spelling from tokenizer.json; special added tokens become control
 *      tokens (type 3), other added tokens user-defined (4), ids the tokenizer does not use "[PAD<id>]" (5).
 *   6. Write atomically (writeGguf); an existing file is replaced only with `force`.
 * The tensors are held in memory, encoded, until the write: fine for the small models kvslim trains.
 */
import fs from "node:fs";
import path from "node:path";
import {
  FileExistsError,
  FormatError,
  ModelMismatchError,
  UnsupportedError,
  UsageError,
  formatBytes,
} from "../errors.js";
import { decode, encode, type DType } from "../memory/dtype.js";
import { FILE_TYPES, type FileType, isFileType, tensorDTypes } from "./file-types.js";
import type { ModelConfig } from "./config.js";
import { ggufMetadataFor } from "./files.js";
import { llama3FreqFactors } from "./rope.js";
import { openModelSource, type ModelSource } from "./source.js";
import { interleaveRowOrder, type TensorSpec } from "./tensor-names.js";
import { checkTensors } from "./weights.js";
import { gguf, writeGguf, type GgufEntry, type TensorToWrite } from "../io/gguf-writer.js";
import { readTensorBytes } from "../io/tensor-file.js";

/** The file types export writes: every one kvslim knows (file-types.ts). */
export const EXPORT_DTYPES = Object.keys(FILE_TYPES) as FileType[];
export type ExportDType = FileType;

export interface ExportOptions {
  /** File type: the matrices' dtype or llama-quantize's mix (file-types.ts); vectors are always f32. Default f32. */
  dtype?: ExportDType;
  /** Replace an existing output file. Default false (FileExistsError). */
  force?: boolean;
}

export interface ExportSummary {
  path: string;
  config: ModelConfig;
  dtype: ExportDType;
  tensors: number;
  bytes: number;
  /** tokenizer.ggml.pre written. */
  pre: string;
}

/** The llama.cpp pre-tokenizer whose regex equals the ByteLevel pre-tokenizer's (use_regex true). */
export const BYTE_LEVEL_PRE = "gpt-2";

/** llama.h LLAMA_TOKEN_TYPE_*: the values of tokenizer.ggml.token_type. */
const TOKEN_TYPE = { normal: 1, control: 3, userDefined: 4, unused: 5 } as const;

export function isExportDType(s: string): s is ExportDType {
  return isFileType(s);
}

export function exportGguf(hfDir: string, outFile: string, options: ExportOptions = {}): ExportSummary {
  const dtype = options.dtype ?? "f32";
  const force = options.force ?? false;
  if (!isExportDType(dtype))
    throw new UsageError(`GGUF export dtype must be one of ${EXPORT_DTYPES.join(", ")}, got "${dtype}"`);
  checkDirectory(hfDir);
  // Checked here so a refusal costs nothing; writeGguf checks again when it moves the file into place.
  if (!force && fs.existsSync(outFile)) {
    throw new FileExistsError(
      `expected no file at ${path.resolve(outFile)}, found one (${formatBytes(fs.statSync(outFile).size)}); ` +
        `kvslim does not overwrite files silently: choose another output path or overwrite explicitly (--force)`,
    );
  }

  // Steps 1 and 2: the directory as the loader sees it; refuse what GGUF cannot express.
  const source = openModelSource(hfDir);
  refuseCla(hfDir, source);
  const specs = checkTensors(source);
  const { config } = source;
  // Each tensor's dtype in this file type; a matrix no type of the file fits is refused here, before any work.
  const dtypes = tensorDTypes(dtype, specs, config.tiedEmbeddings);

  // Step 3: tensors under GGUF names and row order.
  const tensors = specs.map((spec) => convertTensor(source, spec, dtypes.get(spec.name)!));
  const freqFactors = llama3FreqFactors(config);
  if (freqFactors)
    tensors.push({
      name: "rope_freqs.weight",
      dtype: "f32",
      shape: [freqFactors.length],
      data: encode("f32", freqFactors),
    });

  // Steps 4 and 5: metadata, then write (step 6).
  const metadata: [string, GgufEntry][] = [
    ...ggufMetadataFor(config, source.name),
    ["general.file_type", gguf.u32(FILE_TYPES[dtype])],
    ["general.quantization_version", gguf.u32(2)],
    ...tokenizerMetadata(hfDir, source),
  ];
  writeGguf(outFile, metadata, tensors, { overwrite: force });
  return {
    path: outFile,
    config,
    dtype,
    tensors: tensors.length,
    bytes: fs.statSync(outFile).size,
    pre: BYTE_LEVEL_PRE,
  };
}

function checkDirectory(hfDir: string): void {
  let stat: fs.Stats;
  try {
    stat = fs.statSync(hfDir);
  } catch {
    throw new UsageError(
      `model path ${hfDir} does not exist; expected a Hugging Face model directory (config.json + model.safetensors + tokenizer.json)`,
    );
  }
  if (!stat.isDirectory()) {
    throw new UsageError(
      `expected a Hugging Face model directory (config.json + model.safetensors + tokenizer.json), found the file ${hfDir}` +
        (hfDir.endsWith(".gguf") ? `; it is GGUF already` : ""),
    );
  }
}

/** Step 2: CLA models have layers without K/V projections; no GGUF architecture has a slot for that. */
function refuseCla(hfDir: string, source: ModelSource): void {
  const { config } = source;
  const consumers = config.kvSource.flatMap((src, l) => (src === l ? [] : [l]));
  const modelType = readModelType(hfDir);
  if (modelType !== "kvslim" && consumers.length === 0 && !config.kvNorm) return;
  const one = consumers.length === 1;
  const what =
    consumers.length > 0
      ? `${one ? "layer" : "layers"} ${consumers.join(", ")} ${one ? "has" : "have"} no K/V of ${one ? "its" : "their"} own: ` +
        `kv_source [${config.kvSource.join(", ")}]`
      : config.kvNorm
        ? `its K/V producers carry their own kv_norm weights`
        : `model_type "kvslim" marks it as a kvslim-only model`;
  throw new UnsupportedError(
    `${hfDir} is a Cross-Layer Attention model (${what}); GGUF and llama.cpp have no cross-layer K/V sharing, ` +
      `so no GGUF file can hold it. Run it with kvslim (kvslim generate -m ${hfDir}), or train without CLA ` +
      `(share factor 1, model_type "llama") to get a model you can export`,
  );
}

function readModelType(hfDir: string): unknown {
  // openModelSource has parsed this file already, so it exists and is valid JSON.
  return (JSON.parse(fs.readFileSync(path.join(hfDir, "config.json"), "utf8")) as Record<string, unknown>).model_type;
}

/** Step 3 for one tensor: read, decode to f32, interleave llama Q/K rows, encode. */
function convertTensor(source: ModelSource, spec: TensorSpec, target: DType): TensorToWrite {
  const info = source.tensors.get(spec.name)!;
  const bytes = new Uint8Array(info.byteLength);
  readTensorBytes(info, bytes);
  const n = spec.shape.reduce((a, b) => a * b, 1);
  let values = decode(info.dtype!, bytes, n);
  if (source.permuteQk && spec.ropeRows) {
    const c = source.config;
    const order = interleaveRowOrder(spec.ropeRows === "q" ? c.nHeads : c.nKvHeads, c.headDim);
    values = permuteRows(values, order, spec.vector ? 1 : spec.shape[1]);
  }
  return { name: spec.name, dtype: target, shape: spec.shape, data: encode(target, values) };
}

/** Row i of the result is row order[i] of `values` (rows of rowLength elements). */
function permuteRows(values: Float32Array, order: Int32Array, rowLength: number): Float32Array {
  const out = new Float32Array(values.length);
  order.forEach((from, i) => out.set(values.subarray(from * rowLength, (from + 1) * rowLength), i * rowLength));
  return out;
}

type Json = Record<string, unknown>;

/** Step 5: tokenizer.ggml.* (and the chat template) from tokenizer.json and tokenizer_config.json. */
function tokenizerMetadata(hfDir: string, source: ModelSource): [string, GgufEntry][] {
  const file = path.join(hfDir, "tokenizer.json");
  const json = readJson(file) ?? {};
  const config = readJson(path.join(hfDir, "tokenizer_config.json")) ?? {};
  const model = checkByteLevelBpe(file, json);
  const V = source.config.vocabSize;

  // Step 5a: id -> token text and type; every id below V gets one.
  const tokens: string[] = new Array(V);
  const types: number[] = new Array(V).fill(TOKEN_TYPE.unused);
  const place = (id: number, text: string, type: number) => {
    if (!Number.isInteger(id) || id < 0 || id >= V) {
      throw new ModelMismatchError(
        `${file}: token ${JSON.stringify(text)} has id ${id}, but config.json's vocab_size is ${V}; ` +
          `the tokenizer and the model disagree`,
      );
    }
    if (tokens[id] !== undefined && tokens[id] !== text) {
      throw new FormatError(
        `${file}: id ${id} is both ${JSON.stringify(tokens[id])} and ${JSON.stringify(text)}; expected one token per id`,
      );
    }
    tokens[id] = text;
    types[id] = type;
  };
  for (const [text, id] of Object.entries(model.vocab as Record<string, number>)) place(id, text, TOKEN_TYPE.normal);
  for (const t of (json.added_tokens ?? []) as Json[]) {
    place(Number(t.id), String(t.content), t.special === true ? TOKEN_TYPE.control : TOKEN_TYPE.userDefined);
  }
  for (let id = 0; id < V; id++) tokens[id] ??= `[PAD${id}]`; // ids the model has but the tokenizer never emits

  // Step 5b: merges as "left right" (tokenizer.json has that form or [left, right]).
  const merges = (model.merges as unknown[]).map((m, rank) => {
    const pair = typeof m === "string" ? m.split(" ") : m;
    if (
      !Array.isArray(pair) ||
      pair.length !== 2 ||
      pair.some((p) => typeof p !== "string" || p === "" || p.includes(" "))
    ) {
      throw new FormatError(
        `${file}: merge #${rank} is ${JSON.stringify(m)}; expected "left right" or [left, right] without spaces in either part`,
      );
    }
    return `${pair[0]} ${pair[1]}`;
  });

  // Step 5c: special ids and flags, as kvslim's HF tokenizer resolves them.
  const tok = source.tokenizer;
  const entries: [string, GgufEntry][] = [
    ["tokenizer.ggml.model", gguf.str("gpt2")],
    ["tokenizer.ggml.pre", gguf.str(BYTE_LEVEL_PRE)],
    ["tokenizer.ggml.tokens", gguf.arr("string", tokens)],
    ["tokenizer.ggml.token_type", gguf.arr("int32", types)],
    ["tokenizer.ggml.merges", gguf.arr("string", merges)],
  ];
  if (tok.bos !== null) entries.push(["tokenizer.ggml.bos_token_id", gguf.u32(tok.bos)]);
  if (tok.eos !== null) entries.push(["tokenizer.ggml.eos_token_id", gguf.u32(tok.eos)]);
  const padText =
    typeof config.pad_token === "string" ? config.pad_token : (config.pad_token as Json | undefined)?.content;
  const pad = typeof padText === "string" ? tokens.indexOf(padText) : -1;
  if (pad >= 0) entries.push(["tokenizer.ggml.padding_token_id", gguf.u32(pad)]);
  entries.push(
    ["tokenizer.ggml.add_bos_token", gguf.bool(tok.addBos)],
    ["tokenizer.ggml.add_eos_token", gguf.bool(config.add_eos_token === true)],
  );
  if (tok.chatTemplate !== null) entries.push(["tokenizer.chat_template", gguf.str(tok.chatTemplate)]);
  return entries;
}

/**
 * The tokenizer.json model, if it is what llama.cpp's "gpt2" vocabulary with pre "gpt-2" reproduces:
 * BPE over GPT-2's byte alphabet, no normalizer, a ByteLevel pre-tokenizer with its regex and no prefix space.
 */
function checkByteLevelBpe(file: string, json: Json): Json {
  const model = json.model as Json | undefined;
  const pre = json.pre_tokenizer as Json | null | undefined;
  const problems: string[] = [];
  if (model?.type !== "BPE") problems.push(`model type ${JSON.stringify(model?.type)} (expected "BPE")`);
  if (json.normalizer) problems.push(`a ${JSON.stringify((json.normalizer as Json).type)} normalizer (expected none)`);
  if (pre?.type !== "ByteLevel")
    problems.push(`pre-tokenizer ${JSON.stringify(pre?.type ?? null)} (expected "ByteLevel")`);
  else if (pre.add_prefix_space === true || pre.use_regex === false)
    problems.push(`ByteLevel with add_prefix_space true or use_regex false`);
  if (model?.byte_fallback === true || model?.ignore_merges === true)
    problems.push(`byte_fallback or ignore_merges set`);
  if (model?.continuing_subword_prefix || model?.end_of_word_suffix) problems.push(`a subword prefix or suffix`);
  if (problems.length === 0 && (typeof model!.vocab !== "object" || !Array.isArray(model!.merges))) {
    problems.push(`no "vocab" object or "merges" list`);
  }
  if (problems.length > 0) {
    throw new UnsupportedError(
      `${file} has ${problems.join(", ")}; kvslim exports byte-level BPE tokenizers with GPT-2's pre-tokenizer ` +
        `(what kvslim tokenizer train writes); convert other models with llama.cpp's convert_hf_to_gguf.py`,
    );
  }
  return model!;
}

function readJson(file: string): Json | null {
  if (!fs.existsSync(file)) return null;
  // kvslim's HF tokenizer (loaded by openModelSource) has parsed these files already.
  return JSON.parse(fs.readFileSync(file, "utf8")) as Json;
}
