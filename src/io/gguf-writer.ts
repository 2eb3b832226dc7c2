/**
 * GGUF writer: version 3, little endian, the byte layout documented at the top of gguf.ts.
 *
 * The header (magic, counts, metadata, tensor infos) is built in memory; it is small next to the
 * tensor data, which is streamed from the callers' buffers straight to the file, each tensor padded
 * with zeros to the alignment as llama.cpp does. The file appears atomically (see atomic.ts).
 */
import { FormatError, UsageError } from "../errors.js";
import { blockSize, bytesFor, type DType } from "../memory/dtype.js";
import { writeAll, writeFileAtomic } from "./atomic.js";
import { GGUF_DEFAULT_ALIGNMENT, GGUF_MAGIC, GGUF_VALUE_TYPES, ggmlTypeId } from "./gguf.js";
import { formatShape, numElements } from "./tensor-file.js";

export type GgufScalarType =
  | "uint8"
  | "int8"
  | "uint16"
  | "int16"
  | "uint32"
  | "int32"
  | "float32"
  | "bool"
  | "string"
  | "uint64"
  | "int64"
  | "float64";

type Scalar = number | bigint | boolean | string;

export type GgufEntry =
  { type: GgufScalarType; value: Scalar } | { type: "array"; itemType: GgufScalarType; value: Scalar[] };

/** Shorthands for metadata entries: gguf.u32(4096), gguf.arr("string", tokens). */
export const gguf = {
  u8: (v: number): GgufEntry => ({ type: "uint8", value: v }),
  i8: (v: number): GgufEntry => ({ type: "int8", value: v }),
  u16: (v: number): GgufEntry => ({ type: "uint16", value: v }),
  i16: (v: number): GgufEntry => ({ type: "int16", value: v }),
  u32: (v: number): GgufEntry => ({ type: "uint32", value: v }),
  i32: (v: number): GgufEntry => ({ type: "int32", value: v }),
  f32: (v: number): GgufEntry => ({ type: "float32", value: v }),
  bool: (v: boolean): GgufEntry => ({ type: "bool", value: v }),
  str: (v: string): GgufEntry => ({ type: "string", value: v }),
  u64: (v: number | bigint): GgufEntry => ({ type: "uint64", value: v }),
  i64: (v: number | bigint): GgufEntry => ({ type: "int64", value: v }),
  f64: (v: number): GgufEntry => ({ type: "float64", value: v }),
  arr: (itemType: GgufScalarType, v: any[]): GgufEntry => ({ type: "array", itemType, value: v }),
};

export interface TensorToWrite {
  name: string;
  dtype: DType;
  /** Outermost first; written to GGUF reversed (ne[0] = shape[last]). */
  shape: number[];
  /** Already encoded in dtype. */
  data: Uint8Array;
}

/** ggml's GGML_MAX_NAME is 64 including the terminating NUL. */
const MAX_TENSOR_NAME_BYTES = 63;
const VALUE_TYPES: readonly string[] = GGUF_VALUE_TYPES;

export function writeGguf(
  path: string,
  metadata: [string, GgufEntry][] | Record<string, GgufEntry>,
  tensors: TensorToWrite[],
  options: { overwrite?: boolean; alignment?: number } = {},
): void {
  const entries = Array.isArray(metadata) ? [...metadata] : Object.entries(metadata);
  const alignment = resolveAlignment(entries, options.alignment);

  // Header: 1-4. magic, version, counts.
  const w = new ByteWriter();
  w.bytes(Uint8Array.from(GGUF_MAGIC));
  w.u32(3);
  w.u64(BigInt(tensors.length));
  w.u64(BigInt(entries.length));
  // 5. Metadata.
  const keys = new Set<string>();
  for (const [key, entry] of entries) {
    if (key === "") throw new FormatError(`cannot write GGUF metadata with an empty key`);
    if (keys.has(key)) throw new FormatError(`cannot write GGUF metadata key "${key}" twice`);
    keys.add(key);
    const itemType: string = entry.type === "array" ? entry.itemType : "uint8";
    if (!VALUE_TYPES.includes(entry.type) || itemType === "array" || !VALUE_TYPES.includes(itemType)) {
      throw new FormatError(`cannot write GGUF metadata "${key}": unknown value type ${entry.type}/${itemType}`);
    }
    w.string(key);
    w.u32(GGUF_VALUE_TYPES.indexOf(entry.type));
    if (entry.type === "array") {
      w.u32(GGUF_VALUE_TYPES.indexOf(entry.itemType));
      w.u64(BigInt(entry.value.length));
      entry.value.forEach((v, i) => w.scalar(entry.itemType, v, `${key}[${i}]`));
    } else {
      w.scalar(entry.type, entry.value, key);
    }
  }
  // 6. Tensor infos, each tensor at the next multiple of the alignment in the data section.
  const names = new Set<string>();
  let offset = 0;
  for (const t of tensors) {
    checkTensor(t, names);
    w.string(t.name);
    w.u32(t.shape.length);
    for (const d of [...t.shape].reverse()) w.u64(BigInt(d));
    w.u32(ggmlTypeId(t.dtype));
    w.u64(BigInt(offset));
    offset = alignUp(offset + t.data.length, alignment);
  }

  // 7. Padding, then the data.
  const padding = new Uint8Array(alignment);
  writeFileAtomic(
    path,
    (fd) => {
      const header = w.finish();
      writeAll(fd, header);
      writeAll(fd, padding.subarray(0, alignUp(header.length, alignment) - header.length));
      for (const t of tensors) {
        writeAll(fd, t.data);
        writeAll(fd, padding.subarray(0, alignUp(t.data.length, alignment) - t.data.length));
      }
    },
    { overwrite: options.overwrite },
  );
}

/** The alignment to use, adding general.alignment to `entries` when it is not the default. */
function resolveAlignment(entries: [string, GgufEntry][], requested: number | undefined): number {
  const entry = entries.find(([key]) => key === "general.alignment")?.[1];
  if (entry !== undefined && entry.type !== "uint32") {
    throw new FormatError(`general.alignment must be a uint32 entry (llama.cpp requires it), found ${entry.type}`);
  }
  const given = entry === undefined ? undefined : Number(entry.value);
  if (requested !== undefined && given !== undefined && requested !== given) {
    throw new UsageError(`alignment option ${requested} disagrees with the general.alignment entry ${given}`);
  }
  const alignment = requested ?? given ?? GGUF_DEFAULT_ALIGNMENT;
  if (!Number.isInteger(alignment) || alignment < 1 || (alignment & (alignment - 1)) !== 0 || alignment > 2 ** 30) {
    throw new UsageError(`GGUF alignment must be a power of two (such as 32), got ${alignment}`);
  }
  if (given === undefined && alignment !== GGUF_DEFAULT_ALIGNMENT) {
    entries.push(["general.alignment", gguf.u32(alignment)]);
  }
  return alignment;
}

function checkTensor(t: TensorToWrite, names: Set<string>): void {
  const nameBytes = Buffer.byteLength(t.name, "utf8");
  if (nameBytes > MAX_TENSOR_NAME_BYTES) {
    throw new FormatError(`cannot write tensor ${t.name}: its name is ${nameBytes} bytes; llama.cpp allows at most 63`);
  }
  if (names.has(t.name)) throw new FormatError(`cannot write tensor ${t.name} twice`);
  names.add(t.name);
  if (t.shape.length < 1 || t.shape.length > 4 || !t.shape.every((d) => Number.isSafeInteger(d) && d > 0)) {
    throw new FormatError(
      `cannot write tensor ${t.name}: shape ${formatShape(t.shape)}; expected 1 to 4 positive dimensions`,
    );
  }
  const rowLength = t.shape[t.shape.length - 1];
  if (rowLength % blockSize(t.dtype) !== 0) {
    throw new FormatError(
      `cannot write tensor ${t.name} as ${t.dtype}: its last dimension ${rowLength} is not a multiple of ` +
        `the block size ${blockSize(t.dtype)}`,
    );
  }
  const expected = bytesFor(t.dtype, numElements(t.shape));
  if (t.data.length !== expected) {
    throw new FormatError(
      `cannot write tensor ${t.name}: shape ${formatShape(t.shape)} in ${t.dtype} needs ${expected} bytes, ` +
        `the data has ${t.data.length}`,
    );
  }
}

function alignUp(n: number, alignment: number): number {
  return Math.ceil(n / alignment) * alignment;
}

const INT_RANGES: Partial<Record<GgufScalarType, [bigint, bigint]>> = {
  uint8: [0n, 0xffn],
  int8: [-0x80n, 0x7fn],
  uint16: [0n, 0xffffn],
  int16: [-0x8000n, 0x7fffn],
  uint32: [0n, 0xffffffffn],
  int32: [-(2n ** 31n), 2n ** 31n - 1n],
  uint64: [0n, 2n ** 64n - 1n],
  int64: [-(2n ** 63n), 2n ** 63n - 1n],
};

const SCALAR_BYTES: Partial<Record<GgufScalarType, number>> = {
  uint8: 1,
  int8: 1,
  bool: 1,
  uint16: 2,
  int16: 2,
  uint32: 4,
  int32: 4,
  float32: 4,
  uint64: 8,
  int64: 8,
  float64: 8,
};

/** A growing little-endian byte buffer for the header. */
class ByteWriter {
  private buf = Buffer.alloc(1 << 16);
  private length = 0;

  private reserve(n: number): number {
    if (this.length + n > this.buf.length) {
      const bigger = Buffer.alloc(Math.max(2 * this.buf.length, this.length + n));
      this.buf.copy(bigger, 0, 0, this.length);
      this.buf = bigger;
    }
    const at = this.length;
    this.length += n;
    return at;
  }

  finish(): Uint8Array {
    return this.buf.subarray(0, this.length);
  }
  // Each write reserves first: reserve() may replace this.buf.
  bytes(b: Uint8Array): void {
    const at = this.reserve(b.length);
    this.buf.set(b, at);
  }
  u32(v: number): void {
    const at = this.reserve(4);
    this.buf.writeUInt32LE(v, at);
  }
  u64(v: bigint): void {
    const at = this.reserve(8);
    this.buf.writeBigUInt64LE(v, at);
  }
  string(s: string): void {
    const bytes = Buffer.from(s, "utf8");
    this.u64(BigInt(bytes.length));
    this.bytes(bytes);
  }

  scalar(type: GgufScalarType, v: Scalar, what: string): void {
    const wrong = (expected: string) =>
      new FormatError(
        `cannot write GGUF metadata ${what} as ${type}: expected ${expected}, got ${typeof v} ${String(v)}`,
      );
    const range = INT_RANGES[type];
    if (range !== undefined) {
      if ((typeof v !== "number" || !Number.isInteger(v)) && typeof v !== "bigint") throw wrong("an integer");
      if (BigInt(v) < range[0] || BigInt(v) > range[1]) throw wrong(`an integer in [${range[0]}, ${range[1]}]`);
    } else if ((type === "float32" || type === "float64") && typeof v !== "number") {
      throw wrong("a number");
    } else if (type === "bool" && typeof v !== "boolean") {
      throw wrong("a boolean");
    } else if (type === "string") {
      if (typeof v !== "string") throw wrong("a string");
      return this.string(v);
    }
    const size = SCALAR_BYTES[type];
    if (size === undefined) throw wrong("one of the GGUF scalar types");
    const at = this.reserve(size);
    const b = this.buf;
    switch (type) {
      case "uint8":
        b.writeUInt8(Number(v), at);
        break;
      case "int8":
        b.writeInt8(Number(v), at);
        break;
      case "uint16":
        b.writeUInt16LE(Number(v), at);
        break;
      case "int16":
        b.writeInt16LE(Number(v), at);
        break;
      case "uint32":
        b.writeUInt32LE(Number(v), at);
        break;
      case "int32":
        b.writeInt32LE(Number(v), at);
        break;
      case "uint64":
        b.writeBigUInt64LE(BigInt(v as number | bigint), at);
        break;
      case "int64":
        b.writeBigInt64LE(BigInt(v as number | bigint), at);
        break;
      case "float32":
        b.writeFloatLE(v as number, at);
        break;
      case "float64":
        b.writeDoubleLE(v as number, at);
        break;
      case "bool":
        b.writeUInt8(v ? 1 : 0, at);
        break;
    }
  }
}
