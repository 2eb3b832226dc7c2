/**
 * The GGUF file types kvslim writes (`kvslim synth --dtype`, `kvslim export --dtype`) and which dtype each
 * tensor gets in them: llama-quantize's choices for a dense (non-MoE) llama or qwen2 model without an
 * importance matrix, so that a file kvslim writes holds the same mix as one people download.
 *
 *   uniform types   f32, f16, bf16, q8_0, q6_k: every matrix in that type.
 *   legacy types    q4_0, q4_1, q5_0, q5_1: every matrix in that type except the output matrix, which is q6_k.
 *   k-quant mixes   q4_k_s, q4_k_m, q5_k_s, q5_k_m: q4_k or q5_k, the output matrix q6_k, and some V and FFN-down
 *                   matrices one step up (see tensorDType).
 * The output matrix is output.weight, or token_embd.weight when the model ties its embeddings. Vectors (norms,
 * biases) stay f32. A matrix whose rows are not a whole number of blocks of its chosen type falls back as
 * llama-quantize does: q4_k → q5_0, q5_k → q5_1, q6_k → q8_0, and to f16 when rows are not whole 32-element
 * blocks either (the output matrix of a quantized file goes straight to q8_0); the other types have none.
 */
import { UnsupportedError } from "../errors.js";
import { blockSize, type DType } from "../memory/dtype.js";
import type { TensorSpec } from "./tensor-names.js";

/** llama.cpp's general.file_type (enum llama_ftype) of each file type kvslim writes. */
export const FILE_TYPES = {
  f32: 0,
  f16: 1,
  q4_0: 2,
  q4_1: 3,
  q8_0: 7,
  q5_0: 8,
  q5_1: 9,
  q4_k_s: 14,
  q4_k_m: 15,
  q5_k_s: 16,
  q5_k_m: 17,
  q6_k: 18,
  bf16: 32,
} as const;
export type FileType = keyof typeof FILE_TYPES;

export function isFileType(s: string): s is FileType {
  return Object.hasOwn(FILE_TYPES, s);
}

/** The dtype most matrices of a file type get. */
export function defaultDType(fileType: FileType): DType {
  switch (fileType) {
    case "q4_k_s":
    case "q4_k_m":
      return "q4_k";
    case "q5_k_s":
    case "q5_k_m":
      return "q5_k";
    default:
      return fileType;
  }
}

/** llama-quantize's use_more_bits: the first and last eighth of the layers and every third one between. */
export function usesMoreBits(i: number, n: number): boolean {
  const eighth = Math.floor(n / 8);
  return i < eighth || i >= Math.floor((7 * n) / 8) || (i - eighth) % 3 === 2;
}

/**
 * The dtype of every tensor of `specs` (in the model's order) in a file of `fileType`; `tiedEmbeddings` says
 * token_embd.weight is also the output matrix. Throws UnsupportedError for a matrix no type of the file fits.
 */
export function tensorDTypes(fileType: FileType, specs: TensorSpec[], tiedEmbeddings: boolean): Map<string, DType> {
  const base = defaultDType(fileType);
  const quantized = !["f32", "f16", "bf16"].includes(fileType);
  const nLayers = 1 + Math.max(-1, ...specs.map((s) => layerOf(s.name)));
  const nV = specs.filter((s) => s.name.endsWith("attn_v.weight")).length;
  let iV = 0;
  const out = new Map<string, DType>();
  for (const spec of specs) {
    if (spec.vector) {
      out.set(spec.name, "f32");
      continue;
    }
    const rowLength = spec.shape[spec.shape.length - 1];
    const isOutput = spec.name === "output.weight" || (tiedEmbeddings && spec.name === "token_embd.weight");
    let chosen: DType = base;
    if (quantized && isOutput && base !== "q8_0") {
      chosen = rowLength % blockSize(base) !== 0 ? "q8_0" : "q6_k";
    } else if (spec.name.endsWith("attn_v.weight")) {
      if ((fileType === "q4_k_m" || fileType === "q5_k_m") && usesMoreBits(iV, nV)) chosen = "q6_k";
      if (fileType === "q4_k_s" && iV < 4) chosen = "q5_k";
      iV++;
    } else if (spec.name.endsWith("ffn_down.weight")) {
      const i = layerOf(spec.name);
      if ((fileType === "q4_k_m" || fileType === "q5_k_m") && usesMoreBits(i, nLayers)) chosen = "q6_k";
      if (fileType === "q4_k_s" && i < Math.floor(nLayers / 8)) chosen = "q5_k";
    }
    out.set(spec.name, fitRows(chosen, rowLength, spec.name, fileType));
  }
  return out;
}

/** The layer of a "blk.N." tensor name, or -1. */
function layerOf(name: string): number {
  const m = /^blk\.(\d+)\./.exec(name);
  return m ? Number(m[1]) : -1;
}

/**
 * `chosen`, or llama-quantize's fallback when rows of rowLength are not whole blocks of it: a k-quant falls
 * back to a 32-element type, then to f16; the other types have no fallback (llama-quantize stops too).
 */
function fitRows(chosen: DType, rowLength: number, name: string, fileType: FileType): DType {
  if (rowLength % blockSize(chosen) === 0) return chosen;
  const fallback: Partial<Record<DType, DType>> = { q4_k: "q5_0", q5_k: "q5_1", q6_k: "q8_0" };
  const next = fallback[chosen];
  if (next !== undefined) return rowLength % blockSize(next) === 0 ? next : "f16";
  throw new UnsupportedError(
    `tensor ${name} has rows of ${rowLength} elements, not a multiple of the ${chosen} block size ` +
      `${blockSize(chosen)}; a ${fileType} file cannot hold it (choose --dtype f16 or f32)`,
  );
}
