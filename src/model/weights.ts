/**
 * Model weights in the arena, in their file dtype.
 *
 * Matrices (projections, embeddings) keep their file dtype (f32, f16, bf16, q8_0, q4_0 … q6_k) and are converted
 * inside the kernels; small vectors (norm weights, biases) are converted to f32 at load.
 * checkTensors() compares a file's tensors with what the config requires, before anything is read.
 */
import { ModelMismatchError, UnsupportedError } from "../errors.js";
import type { Arena, Ptr } from "../memory/arena.js";
import { allocSize } from "../memory/arena.js";
import { type DType, DTYPES, blockSize, bytesFor, decode } from "../memory/dtype.js";
import { readTensorBytes, type TensorInfo } from "../io/tensor-file.js";
import { derive, type ModelConfig } from "./config.js";
import type { ModelSource } from "./source.js";
import { expectedTensors, interleaveRowOrder, isIgnorableTensor, type TensorSpec } from "./tensor-names.js";

/** A weight matrix W (rows, cols) in the arena; y = W x maps cols features to rows features. */
export interface Matrix {
  ptr: Ptr;
  dtype: DType;
  rows: number;
  cols: number;
}

export interface LayerWeights {
  attnNorm: Ptr; // (D) f32
  kvNorm: Ptr | null; // (D) f32, producers of kvNorm models only
  wq: Matrix; // (H*Hd, D)
  bq: Ptr | null; // (H*Hd)
  wk: Matrix | null; // (G*Hd, D), producers only
  bk: Ptr | null; // (G*Hd)
  wv: Matrix | null; // (G*Hd, D), producers only
  bv: Ptr | null; // (G*Hd)
  wo: Matrix; // (D, H*Hd)
  ffnNorm: Ptr; // (D) f32
  wGate: Matrix; // (F, D)
  wUp: Matrix; // (F, D)
  wDown: Matrix; // (D, F)
}

export interface Weights {
  tokEmbd: Matrix; // (V, D)
  layers: LayerWeights[];
  outputNorm: Ptr; // (D) f32
  output: Matrix; // (V, D); the token embedding when tied
  /** (ropeDim/2) Llama-3 frequency divisors from the file's rope_freqs tensor, if any. */
  ropeFreqFactors: Float32Array | null;
}

/** Throws a ModelMismatchError / UnsupportedError if the file's tensors disagree with the config. */
export function checkTensors(source: ModelSource): TensorSpec[] {
  const { config, tensors } = source;
  const specs = expectedTensors(config);
  const expected = new Set(specs.map((s) => s.name));
  const { isProducer } = derive(config);
  for (const name of tensors.keys()) {
    if (expected.has(name) || isIgnorableTensor(name)) continue;
    const m = /^blk\.(\d+)\.(attn_k|attn_v|attn_kv_norm)\.(weight|bias)$/.exec(name);
    if (m && !isProducer[Number(m[1])]) {
      throw new ModelMismatchError(
        `${source.path}: layer ${m[1]} is a CLA consumer (kv_source[${m[1]}] = ${config.kvSource[Number(m[1])]}) ` +
          `and must not carry K/V weights, but the file has ${name}`,
      );
    }
    throw new ModelMismatchError(`${source.path}: unexpected tensor ${name}; the config does not use it`);
  }
  for (const spec of specs) {
    const t = tensors.get(spec.name);
    if (!t) {
      const layer = /^blk\.(\d+)\.attn_[kv]\./.exec(spec.name);
      const why = layer ? ` (layer ${layer[1]} is a K/V producer)` : "";
      throw new ModelMismatchError(`${source.path}: tensor ${spec.name} is missing${why}; the config requires it`);
    }
    if (t.shape.length !== spec.shape.length || t.shape.some((v, i) => v !== spec.shape[i])) {
      throw new ModelMismatchError(
        `${source.path}: tensor ${spec.name} has shape [${t.shape}], expected [${spec.shape}] from the config`,
      );
    }
    if (t.dtype === null) {
      throw new UnsupportedError(
        `${source.path}: tensor ${spec.name} has type ${t.type}; kvslim computes with ${DTYPES.join(", ")}`,
      );
    }
    const cols = spec.shape[spec.shape.length - 1];
    if (cols % blockSize(t.dtype) !== 0) {
      throw new ModelMismatchError(
        `${source.path}: tensor ${spec.name} is ${t.dtype} but its rows (${cols}) are not whole blocks`,
      );
    }
  }
  return specs;
}

/** Arena bytes the weights take (what planMemory adds up). */
export function weightBytes(source: ModelSource, specs: TensorSpec[]): number {
  let total = 0;
  for (const spec of specs) {
    const t = source.tensors.get(spec.name)!;
    const n = spec.shape.reduce((a, b) => a * b, 1);
    total += allocSize(spec.vector ? 4 * n : bytesFor(t.dtype!, n));
  }
  return total;
}

/** Reads every tensor from its file into the arena. */
export function loadWeights(source: ModelSource, specs: TensorSpec[], arena: Arena): Weights {
  const { config } = source;
  const placed = new Map<string, Matrix>();
  for (const spec of specs) placed.set(spec.name, placeTensor(source, spec, arena));
  const mat = (name: string) => placed.get(name)!;
  const vec = (name: string) => placed.get(name)?.ptr ?? null;
  const layers: LayerWeights[] = [];
  for (let l = 0; l < config.nLayers; l++) {
    const p = `blk.${l}.`;
    layers.push({
      attnNorm: vec(p + "attn_norm.weight")!,
      kvNorm: vec(p + "attn_kv_norm.weight"),
      wq: mat(p + "attn_q.weight"),
      bq: vec(p + "attn_q.bias"),
      wk: placed.get(p + "attn_k.weight") ?? null,
      bk: vec(p + "attn_k.bias"),
      wv: placed.get(p + "attn_v.weight") ?? null,
      bv: vec(p + "attn_v.bias"),
      wo: mat(p + "attn_output.weight"),
      ffnNorm: vec(p + "ffn_norm.weight")!,
      wGate: mat(p + "ffn_gate.weight"),
      wUp: mat(p + "ffn_up.weight"),
      wDown: mat(p + "ffn_down.weight"),
    });
  }
  const tokEmbd = mat("token_embd.weight");
  const freqs = source.tensors.get("rope_freqs.weight");
  return {
    tokEmbd,
    layers,
    outputNorm: vec("output_norm.weight")!,
    output: config.tiedEmbeddings ? tokEmbd : mat("output.weight"),
    ropeFreqFactors: freqs ? readVector(freqs) : null,
  };
}

function placeTensor(source: ModelSource, spec: TensorSpec, arena: Arena): Matrix {
  const t = source.tensors.get(spec.name)!;
  const dtype = t.dtype!;
  const n = spec.shape.reduce((a, b) => a * b, 1);
  const rows = spec.shape.length === 2 ? spec.shape[0] : 1;
  const cols = spec.shape[spec.shape.length - 1];
  const order = source.permuteQk && spec.ropeRows ? ropeRowOrder(source.config, spec) : null;
  if (spec.vector) {
    const values = readVector(t);
    const ptr = arena.alloc(4 * n);
    const out = arena.f32View(ptr, n);
    if (order) order.forEach((from, i) => (out[i] = values[from]));
    else out.set(values);
    return { ptr, dtype: "f32", rows, cols };
  }
  const ptr = arena.alloc(t.byteLength);
  const dest = arena.bytes(ptr, t.byteLength);
  if (!order) {
    readTensorBytes(t, dest);
  } else {
    // Whole rows move, so this works for every dtype (a row is a whole number of blocks).
    const staged = new Uint8Array(t.byteLength);
    readTensorBytes(t, staged);
    const rowBytes = t.byteLength / rows;
    order.forEach((from, i) => dest.set(staged.subarray(from * rowBytes, (from + 1) * rowBytes), i * rowBytes));
  }
  return { ptr, dtype, rows, cols };
}

/**
 * One tensor of the model as f32 in the engine's layout (Q/K rows interleaved for RoPE, whatever the file's
 * order): what training starts from when it continues a model.
 */
export function readTensorF32(source: ModelSource, spec: TensorSpec): Float32Array {
  const t = source.tensors.get(spec.name)!;
  const n = spec.shape.reduce((a, b) => a * b, 1);
  const bytes = new Uint8Array(t.byteLength);
  readTensorBytes(t, bytes);
  const values = decode(t.dtype!, bytes, n);
  if (!(source.permuteQk && spec.ropeRows)) return values;
  const order = ropeRowOrder(source.config, spec);
  const rows = spec.shape.length === 2 ? spec.shape[0] : 1;
  const cols = n / rows;
  const out = new Float32Array(n);
  order.forEach((from, i) => out.set(values.subarray(from * cols, (from + 1) * cols), i * cols));
  return out;
}

function readVector(t: TensorInfo): Float32Array {
  const bytes = new Uint8Array(t.byteLength);
  readTensorBytes(t, bytes);
  const n = t.shape.reduce((a, b) => a * b, 1);
  return decode(t.dtype!, bytes, n);
}

function ropeRowOrder(c: ModelConfig, spec: TensorSpec): Int32Array {
  return interleaveRowOrder(spec.ropeRows === "q" ? c.nHeads : c.nKvHeads, c.headDim);
}
