/**
 * Safetensors reader and writer (Hugging Face's tensor file format).
 *
 * Byte layout:
 *   1. N (u64, little endian): the byte length of the header, at most 100 MB (as in the reference library).
 *   2. The header: N bytes of UTF-8 JSON, one object mapping
 *        tensor name -> { "dtype": "F32", "shape": [d0, d1, ...] (outermost first), "data_offsets": [begin, end] }
 *      plus an optional "__metadata__": { string: string }. Writers pad it with spaces to a multiple of 8,
 *      so the data section starts 8-byte aligned.
 *   3. The data section, from byte 8 + N: each tensor's bytes (row-major, little endian) at [begin, end)
 *      relative to the section start, with end - begin = numel * element size.
 * A sharded model is model-0000i-of-0000n.safetensors plus model.safetensors.index.json, whose
 * "weight_map" maps each tensor name to the shard file holding it.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { FormatError, UnsupportedError, formatBytes, shownValue } from "../errors.js";
import { bytesFor, type DType } from "../memory/dtype.js";
import { writeAll, writeFileAtomic } from "./atomic.js";
import type { TensorToWrite } from "./gguf-writer.js";
import { formatShape, numElements, type TensorInfo } from "./tensor-file.js";

export interface SafetensorsFile {
  metadata: Record<string, string>;
  tensors: TensorInfo[];
}

const MAX_HEADER_BYTES = 100_000_000;

/** Bits per element of every dtype the reference library knows (F4 and F6 pack several per byte). */
const DTYPE_BITS: Record<string, number> = {
  BOOL: 8,
  U8: 8,
  I8: 8,
  F8_E5M2: 8,
  F8_E4M3: 8,
  F8_E8M0: 8,
  F4: 4,
  F6_E2M3: 6,
  F6_E3M2: 6,
  I16: 16,
  U16: 16,
  F16: 16,
  BF16: 16,
  I32: 32,
  U32: 32,
  F32: 32,
  I64: 64,
  U64: 64,
  F64: 64,
  C64: 64,
};

/** The safetensors dtypes kvslim computes with. */
const KVSLIM_DTYPES: Record<string, DType> = { F32: "f32", F16: "f16", BF16: "bf16" };

/** Reads the header of one .safetensors file (the tensor data stays on disk). */
export function readSafetensors(file: string): SafetensorsFile {
  const full = path.resolve(file);
  const fd = fs.openSync(full, "r");
  try {
    const fileSize = fs.fstatSync(fd).size;
    const fail = (message: string) => new FormatError(`${full}: ${message}`);
    if (fileSize < 8) {
      throw fail(`the file is ${fileSize} bytes; a safetensors file starts with an 8-byte header length`);
    }
    // 1. Header length.
    const headerLength = Buffer.from(readExactly(fd, 0, 8)).readBigUInt64LE(0);
    const limit = Math.min(MAX_HEADER_BYTES, fileSize - 8);
    if (headerLength > BigInt(limit)) {
      throw fail(
        `the header length field says ${headerLength} bytes; expected at most ${limit} ` +
          `(100 MB, and no more than the ${fileSize - 8} bytes after the field): this is not a safetensors ` +
          `file or it is truncated`,
      );
    }
    // 2. Header JSON.
    let header: unknown;
    try {
      const text = new TextDecoder("utf-8", { fatal: true }).decode(readExactly(fd, 8, Number(headerLength)));
      header = JSON.parse(text);
    } catch (error) {
      throw fail(`the ${headerLength}-byte header is not valid UTF-8 JSON: ${(error as Error).message}`);
    }
    // 3. Tensors in the data section.
    return parseHeader(full, header, 8 + Number(headerLength), fileSize);
  } finally {
    fs.closeSync(fd);
  }
}

function parseHeader(full: string, header: unknown, dataStart: number, fileSize: number): SafetensorsFile {
  const fail = (message: string) => new FormatError(`${full}: ${message}`);
  if (!isObject(header)) throw fail(`the header should be a JSON object, found ${kind(header)}`);
  const metadata: Record<string, string> = {};
  const tensors: TensorInfo[] = [];
  for (const [name, entry] of Object.entries(header)) {
    if (name === "__metadata__") {
      if (!isObject(entry)) throw fail(`__metadata__ should be an object of strings, found ${kind(entry)}`);
      for (const [key, value] of Object.entries(entry)) {
        if (typeof value !== "string") throw fail(`__metadata__.${key} should be a string, found ${kind(value)}`);
        metadata[key] = value;
      }
      continue;
    }
    if (!isObject(entry))
      throw fail(`tensor ${name} should be an object {dtype, shape, data_offsets}, found ${kind(entry)}`);
    const { dtype, shape, data_offsets: offsets } = entry;
    if (typeof dtype !== "string")
      throw fail(
        `tensor ${name} has ${dtype === undefined ? "no dtype" : `dtype ${kind(dtype)}`}; expected a string such as "F32"`,
      );
    if (!Array.isArray(shape) || !shape.every(isCount)) {
      throw fail(
        `tensor ${name} has ${shape === undefined ? "no shape" : `shape ${shownValue(shape)}`}; expected an array of non-negative integers`,
      );
    }
    if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isCount) || offsets[0] > offsets[1]) {
      throw fail(
        `tensor ${name} has ${offsets === undefined ? "no data_offsets" : `data_offsets ${shownValue(offsets)}`}; expected [begin, end] with 0 <= begin <= end`,
      );
    }
    const [begin, end] = offsets as [number, number];
    const numel = numElements(shape);
    const bits = DTYPE_BITS[dtype];
    // A dtype newer than this table is recorded (dtype null) and only its range is checked.
    if (bits !== undefined && numel * bits !== (end - begin) * 8) {
      throw fail(
        `tensor ${name} has data_offsets [${begin}, ${end}) = ${end - begin} bytes, but shape ${formatShape(shape)} ` +
          `of ${dtype} needs ${(numel * bits) / 8} bytes`,
      );
    }
    if (dataStart + end > fileSize) {
      throw fail(
        `tensor ${name} needs bytes [${dataStart + begin}, ${dataStart + end}) but the file is only ${fileSize} ` +
          `bytes (${formatBytes(fileSize)}); the file is truncated`,
      );
    }
    tensors.push({
      name,
      type: dtype.toLowerCase(),
      dtype: KVSLIM_DTYPES[dtype] ?? null,
      shape: [...shape],
      file: full,
      offset: dataStart + begin,
      byteLength: end - begin,
    });
  }
  // Zero-size tensors occupy no bytes and cannot overlap anything.
  const sorted = tensors.filter((t) => t.byteLength > 0).sort((a, b) => a.offset - b.offset);
  for (let i = 1; i < sorted.length; i++) {
    const [a, b] = [sorted[i - 1], sorted[i]];
    if (a.offset + a.byteLength > b.offset) {
      const range = (t: TensorInfo) => `[${t.offset - dataStart}, ${t.offset - dataStart + t.byteLength})`;
      throw fail(
        `tensors ${a.name} (data_offsets ${range(a)}) and ${b.name} (${range(b)}) overlap; expected disjoint data`,
      );
    }
  }
  return { metadata, tensors };
}

/**
 * Reads a Hugging Face model directory: model.safetensors, or the shards listed by
 * model.safetensors.index.json, merged into one list.
 */
export function readSafetensorsModel(dir: string): SafetensorsFile {
  const full = path.resolve(dir);
  const indexPath = path.join(full, "model.safetensors.index.json");
  if (!fs.existsSync(indexPath)) {
    const single = path.join(full, "model.safetensors");
    if (fs.existsSync(single)) return readSafetensors(single);
    const found = fs.existsSync(full) ? fs.readdirSync(full).filter((f) => f.endsWith(".safetensors")) : [];
    throw new FormatError(
      `expected model.safetensors or model.safetensors.index.json in ${full}, found neither` +
        (found.length > 0 ? ` (it has ${found.join(", ")})` : ""),
    );
  }
  const weightMap = readWeightMap(indexPath);
  // Read every shard once, in the order the index first names it.
  const shards = new Map<string, SafetensorsFile>();
  for (const [tensor, shard] of Object.entries(weightMap)) {
    if (shards.has(shard)) continue;
    const shardPath = path.join(full, shard);
    if (!fs.existsSync(shardPath)) {
      throw new FormatError(
        `${indexPath} maps tensor ${tensor} to ${shard}, but ${shardPath} does not exist; ` +
          `download all the shards the index lists`,
      );
    }
    shards.set(shard, readSafetensors(shardPath));
  }
  const merged: SafetensorsFile = { metadata: {}, tensors: [] };
  const home = new Map<string, string>();
  for (const [shard, file] of shards) {
    Object.assign(merged.metadata, file.metadata);
    for (const t of file.tensors) {
      const other = home.get(t.name);
      if (other !== undefined)
        throw new FormatError(
          `tensor ${t.name} is in both ${other} and ${shard} (in ${full}); expected it in one shard`,
        );
      home.set(t.name, shard);
      merged.tensors.push(t);
    }
  }
  for (const [tensor, shard] of Object.entries(weightMap)) {
    if (home.get(tensor) !== shard) {
      throw new FormatError(
        `${indexPath} maps tensor ${tensor} to ${shard}, but ` +
          (home.has(tensor) ? `it is in ${home.get(tensor)}` : `${shard} has no tensor ${tensor}`) +
          `; the index and shards disagree`,
      );
    }
  }
  return merged;
}

function readWeightMap(indexPath: string): Record<string, string> {
  let index: unknown;
  try {
    index = JSON.parse(fs.readFileSync(indexPath, "utf8"));
  } catch (error) {
    throw new FormatError(`${indexPath} is not valid JSON: ${(error as Error).message}`);
  }
  const weightMap = isObject(index) ? index.weight_map : undefined;
  if (!isObject(weightMap))
    throw new FormatError(`${indexPath} should have a "weight_map" object, found ${kind(weightMap)}`);
  for (const [tensor, shard] of Object.entries(weightMap)) {
    // Shards sit next to the index; a path elsewhere is refused rather than followed.
    if (typeof shard !== "string" || shard === "" || path.basename(shard) !== shard) {
      throw new FormatError(
        `${indexPath}: weight_map.${tensor} should be a file name in the same directory, found ${shownValue(shard)}`,
      );
    }
  }
  return weightMap as Record<string, string>;
}

/** Writes `tensors` (f32, f16 or bf16), contiguous in the given order, atomically. */
export function writeSafetensors(
  file: string,
  tensors: TensorToWrite[],
  metadata?: Record<string, string>,
  options: { overwrite?: boolean } = {},
): void {
  const header: Record<string, unknown> = {};
  if (metadata !== undefined) {
    for (const [key, value] of Object.entries(metadata)) {
      if (typeof value !== "string")
        throw new FormatError(`cannot write safetensors __metadata__.${key}: expected a string, got ${kind(value)}`);
    }
    header.__metadata__ = metadata;
  }
  let offset = 0;
  for (const t of tensors) {
    const dtype = Object.keys(KVSLIM_DTYPES).find((k) => KVSLIM_DTYPES[k] === t.dtype);
    if (dtype === undefined) {
      throw new UnsupportedError(
        `cannot write tensor ${t.name} as ${t.dtype} to safetensors, which has no ${t.dtype}; use f32, f16 or bf16, or write GGUF`,
      );
    }
    if (t.name === "__metadata__" || Object.hasOwn(header, t.name))
      throw new FormatError(`cannot write tensor ${t.name}: the name is taken`);
    if (!t.shape.every(isCount))
      throw new FormatError(
        `cannot write tensor ${t.name}: shape ${formatShape(t.shape)} has a non-integer or negative dimension`,
      );
    const expected = bytesFor(t.dtype, numElements(t.shape));
    if (t.data.length !== expected) {
      throw new FormatError(
        `cannot write tensor ${t.name}: shape ${formatShape(t.shape)} in ${t.dtype} needs ${expected} bytes, the data has ${t.data.length}`,
      );
    }
    header[t.name] = { dtype, shape: t.shape, data_offsets: [offset, offset + t.data.length] };
    offset += t.data.length;
  }
  const json = Buffer.from(JSON.stringify(header), "utf8");
  const padded = Buffer.alloc(Math.ceil(json.length / 8) * 8, " ");
  json.copy(padded);
  const length = Buffer.alloc(8);
  length.writeBigUInt64LE(BigInt(padded.length));
  writeFileAtomic(
    file,
    (fd) => {
      writeAll(fd, length);
      writeAll(fd, padded);
      for (const t of tensors) writeAll(fd, t.data);
    },
    { overwrite: options.overwrite },
  );
}

/** Reads exactly `length` bytes at `position` (the caller checked they are inside the file). */
function readExactly(fd: number, position: number, length: number): Uint8Array {
  const out = new Uint8Array(length);
  let done = 0;
  while (done < length) {
    const got = fs.readSync(fd, out, done, length - done, position + done);
    if (got === 0) throw new FormatError(`the file ended at byte ${position + done} while reading its header`);
    done += got;
  }
  return out;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function isCount(v: unknown): v is number {
  return typeof v === "number" && Number.isSafeInteger(v) && v >= 0;
}

function kind(v: unknown): string {
  if (v === undefined) return "nothing (the key is missing)";
  if (v === null) return "null";
  if (Array.isArray(v)) return "an array";
  return typeof v === "object" ? "an object" : `${typeof v} ${JSON.stringify(v)}`;
}
