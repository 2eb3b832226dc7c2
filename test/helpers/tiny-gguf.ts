/**
 * Tiny llama-architecture GGUF models for tests: a real or synthetic vocabulary and small random f32
 * weights (default 1 layer, D = 32, H = G = 2), enough for llama.cpp (node-llama-cpp) to load the file,
 * tokenize and evaluate. The metadata helpers also serve tests that only need a tokenizer.
 */
import { writeGguf, gguf, type GgufEntry, type TensorToWrite } from "../../src/io/gguf-writer.js";
import type { GgufValue } from "../../src/io/gguf.js";
import { makeRandom } from "./kernels-helpers.js";

/** llama.h LLAMA_TOKEN_TYPE_*, the values of tokenizer.ggml.token_type. */
export const TOKEN_TYPE = { normal: 1, unknown: 2, control: 3, userDefined: 4, unused: 5, byte: 6 } as const;

export interface TinyVocab {
  /** tokenizer.ggml.model: "llama" (SentencePiece) or "gpt2" (byte-level BPE), or anything to test rejection. */
  model: string;
  /** tokenizer.ggml.pre (BPE only). */
  pre?: string;
  tokens: string[];
  scores?: number[];
  tokenTypes?: number[];
  merges?: string[];
  bos?: number;
  eos?: number;
  unk?: number;
  addBos?: boolean;
  chatTemplate?: string;
}

export interface TinyModelOptions {
  dModel?: number; // D
  nHeads?: number; // H
  nKvHeads?: number; // G
  nLayers?: number; // L
  ffn?: number; // feed-forward width
  contextLength?: number;
  seed?: number;
}

/** The tokenizer.ggml.* entries for a vocabulary. */
export function tokenizerEntries(v: TinyVocab): [string, GgufEntry][] {
  const entries: [string, GgufEntry][] = [
    ["tokenizer.ggml.model", gguf.str(v.model)],
    ["tokenizer.ggml.tokens", gguf.arr("string", v.tokens)],
  ];
  if (v.pre !== undefined) entries.push(["tokenizer.ggml.pre", gguf.str(v.pre)]);
  if (v.scores !== undefined) entries.push(["tokenizer.ggml.scores", gguf.arr("float32", v.scores)]);
  if (v.tokenTypes !== undefined) entries.push(["tokenizer.ggml.token_type", gguf.arr("int32", v.tokenTypes)]);
  if (v.merges !== undefined) entries.push(["tokenizer.ggml.merges", gguf.arr("string", v.merges)]);
  if (v.bos !== undefined) entries.push(["tokenizer.ggml.bos_token_id", gguf.u32(v.bos)]);
  if (v.eos !== undefined) entries.push(["tokenizer.ggml.eos_token_id", gguf.u32(v.eos)]);
  if (v.unk !== undefined) entries.push(["tokenizer.ggml.unknown_token_id", gguf.u32(v.unk)]);
  if (v.addBos !== undefined) entries.push(["tokenizer.ggml.add_bos_token", gguf.bool(v.addBos)]);
  if (v.chatTemplate !== undefined) entries.push(["tokenizer.chat_template", gguf.str(v.chatTemplate)]);
  return entries;
}

/** Metadata entries as readGguf would return them (float32 values rounded as the file stores them). */
export function metadataMap(entries: [string, GgufEntry][]): Map<string, GgufValue> {
  const value = (type: string, v: unknown): GgufValue =>
    type === "float32" ? Math.fround(v as number) : (v as GgufValue);
  return new Map(
    entries.map(([key, e]) => [
      key,
      e.type === "array" ? e.value.map((v) => value(e.itemType, v)) : value(e.type, e.value),
    ]),
  );
}

/** Writes a llama-architecture GGUF with vocabulary `v` and random weights to `path` (overwriting). */
export function writeTinyGguf(path: string, v: TinyVocab, options: TinyModelOptions = {}): void {
  const D = options.dModel ?? 32;
  const H = options.nHeads ?? 2;
  const G = options.nKvHeads ?? H;
  const L = options.nLayers ?? 1;
  const F = options.ffn ?? 2 * D;
  const V = v.tokens.length;
  const Hd = D / H;
  const metadata: [string, GgufEntry][] = [
    ["general.architecture", gguf.str("llama")],
    ["general.name", gguf.str("kvslim-tiny")],
    ["llama.context_length", gguf.u32(options.contextLength ?? 128)],
    ["llama.embedding_length", gguf.u32(D)],
    ["llama.block_count", gguf.u32(L)],
    ["llama.feed_forward_length", gguf.u32(F)],
    ["llama.attention.head_count", gguf.u32(H)],
    ["llama.attention.head_count_kv", gguf.u32(G)],
    ["llama.rope.dimension_count", gguf.u32(Hd)],
    ["llama.attention.layer_norm_rms_epsilon", gguf.f32(1e-5)],
    ...tokenizerEntries(v),
  ];
  const random = makeRandom(options.seed ?? 1);
  const tensor = (name: string, shape: number[], fill: "random" | "ones"): TensorToWrite => {
    const n = shape.reduce((a, b) => a * b, 1);
    const scale = 1 / Math.sqrt(shape[shape.length - 1]);
    const values = Float32Array.from({ length: n }, () => (fill === "ones" ? 1 : (2 * random() - 1) * scale));
    return { name, dtype: "f32", shape, data: new Uint8Array(values.buffer) };
  };
  const tensors: TensorToWrite[] = [
    tensor("token_embd.weight", [V, D], "random"), // (V, D)
    tensor("output_norm.weight", [D], "ones"), // (D)
    tensor("output.weight", [V, D], "random"), // (V, D)
  ];
  for (let l = 0; l < L; l++) {
    tensors.push(
      tensor(`blk.${l}.attn_norm.weight`, [D], "ones"), // (D)
      tensor(`blk.${l}.attn_q.weight`, [H * Hd, D], "random"), // (H*Hd, D)
      tensor(`blk.${l}.attn_k.weight`, [G * Hd, D], "random"), // (G*Hd, D)
      tensor(`blk.${l}.attn_v.weight`, [G * Hd, D], "random"), // (G*Hd, D)
      tensor(`blk.${l}.attn_output.weight`, [D, H * Hd], "random"), // (D, H*Hd)
      tensor(`blk.${l}.ffn_norm.weight`, [D], "ones"), // (D)
      tensor(`blk.${l}.ffn_gate.weight`, [F, D], "random"), // (F, D)
      tensor(`blk.${l}.ffn_up.weight`, [F, D], "random"), // (F, D)
      tensor(`blk.${l}.ffn_down.weight`, [D, F], "random"), // (D, F)
    );
  }
  writeGguf(path, metadata, tensors, { overwrite: true });
}

/**
 * The real Llama 2 SentencePiece vocabulary (32000 tokens, from the llama-tokenizer-js package), with
 * token types as in Llama 2 GGUF files. The package ships merges, not scores, so each token's score is
 * minus the rank of the first merge that makes it (what llama.cpp's highest-score-first merging needs);
 * tokens no merge makes score 0 (specials, bytes, single characters) or -1e6.
 */
export async function llama2Vocab(): Promise<TinyVocab> {
  const { default: llama } = await import("llama-tokenizer-js");
  const tokens = [...llama.vocabById];
  const idOf = new Map(tokens.map((t, i) => [t, i]));
  const scores: number[] = tokens.map((t, i) => (i < 259 || Array.from(t).length === 1 ? 0 : -1e6));
  const made = new Set<number>();
  [...llama.merges.keys()].forEach((merge, rank) => {
    const id = idOf.get(merge.replace(" ", ""))!;
    if (!made.has(id)) scores[id] = -rank;
    made.add(id);
  });
  const tokenTypes = tokens.map((t, i) =>
    i === 0
      ? TOKEN_TYPE.unknown
      : i <= 2
        ? TOKEN_TYPE.control
        : /^<0x[0-9A-F]{2}>$/.test(t)
          ? TOKEN_TYPE.byte
          : TOKEN_TYPE.normal,
  );
  return { model: "llama", tokens, scores, tokenTypes, bos: 1, eos: 2, unk: 0, addBos: true };
}

/** The real Llama 3 byte-level BPE vocabulary (128256 tokens, 280147 merges, from llama3-tokenizer-js). */
export async function llama3Vocab(pre = "llama-bpe"): Promise<TinyVocab> {
  const { default: llama3 } = await import("llama3-tokenizer-js");
  const tokens = [...llama3.vocabById];
  const tokenTypes = tokens.map((_, i) => (i >= 128000 ? TOKEN_TYPE.control : TOKEN_TYPE.normal));
  return { model: "gpt2", pre, tokens, tokenTypes, merges: [...llama3.merges.keys()], bos: 128000, eos: 128001 };
}
