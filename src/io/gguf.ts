/**
 * GGUF reader (llama.cpp's model file format): versions 2 and 3, little endian only.
 *
 * Byte layout (integers little endian, as in ggml's gguf.h):
 *   1. Magic "GGUF" (4 bytes: 47 47 55 46).
 *   2. Version (u32): 2 or 3. Version 1 used u32 counts; a big-endian file reads as 0x02000000 / 0x03000000.
 *   3. Tensor count (u64).
 *   4. Metadata key-value count (u64).
 *   5. For each key-value pair:
 *      1. The key (string), unique and non-empty.
 *      2. The value type (u32): 0 u8, 1 i8, 2 u16, 3 i16, 4 u32, 5 i32, 6 f32, 7 bool, 8 string,
 *         9 array, 10 u64, 11 i64, 12 f64.
 *      3a. Array: the item type (u32, not an array), the item count (u64), then the items.
 *      3b. Otherwise the value: a fixed-size number, a bool as one byte (0 or 1), or a string.
 *   6. For each tensor:
 *      1. The name (string), unique.
 *      2. The number of dimensions n_dims (u32), 1 to 4.
 *      3. ne[n_dims] (u64 each), innermost first: ne[0] is the row length, a multiple of the block size.
 *      4. The ggml type (u32), see GGML_TYPES.
 *      5. The data offset (u64), relative to the data section and a multiple of the alignment.
 *   7. Padding up to a multiple of the alignment (u32 key "general.alignment", default 32), then the
 *      data section: each tensor's (ne[0] / block size) * ne[1] * ne[2] * ne[3] blocks at its offset.
 * Strings are a u64 byte length followed by UTF-8 bytes, no terminator.
 *
 * Only the header is read, through a small buffered window over the file descriptor, so reading a
 * many-GB model costs a few MB; the data is only checked to lie inside the file.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { FormatError, UnsupportedError, formatBytes } from "../errors.js";
import { isDType } from "../memory/dtype.js";
import { formatShape, numElements, type TensorInfo } from "./tensor-file.js";

export type GgufValue = number | bigint | boolean | string | GgufValue[];

export interface GgufFile {
  path: string;
  version: number;
  alignment: number;
  /** Absolute offset of the data section. */
  dataOffset: number;
  metadata: Map<string, GgufValue>;
  /** The stored type of each metadata value ("uint32", "float32", … ; arrays as "array of float32"). */
  types: Map<string, string>;
  tensors: TensorInfo[];
}

export const GGUF_MAGIC = [0x47, 0x47, 0x55, 0x46];
export const GGUF_DEFAULT_ALIGNMENT = 32;

/** Metadata value type ids (position = id). */
export const GGUF_VALUE_TYPES = [
  "uint8",
  "int8",
  "uint16",
  "int16",
  "uint32",
  "int32",
  "float32",
  "bool",
  "string",
  "array",
  "uint64",
  "int64",
  "float64",
] as const;

export interface GgmlType {
  name: string;
  /** Elements per block (1 for plain number types). */
  blockSize: number;
  /** Bytes per block. */
  blockBytes: number;
}

/** ggml type id -> type; sizes checked against ggml_blck_size / ggml_type_size of llama.cpp (see the tests). */
export const GGML_TYPES: ReadonlyMap<number, GgmlType> = new Map(
  (
    [
      [0, "f32", 1, 4],
      [1, "f16", 1, 2],
      [2, "q4_0", 32, 18],
      [3, "q4_1", 32, 20],
      // 4 and 5 (q4_2, q4_3) were removed from ggml.
      [6, "q5_0", 32, 22],
      [7, "q5_1", 32, 24],
      [8, "q8_0", 32, 34],
      [9, "q8_1", 32, 36],
      [10, "q2_k", 256, 84],
      [11, "q3_k", 256, 110],
      [12, "q4_k", 256, 144],
      [13, "q5_k", 256, 176],
      [14, "q6_k", 256, 210],
      [15, "q8_k", 256, 292],
      [16, "iq2_xxs", 256, 66],
      [17, "iq2_xs", 256, 74],
      [18, "iq3_xxs", 256, 98],
      [19, "iq1_s", 256, 50],
      [20, "iq4_nl", 32, 18],
      [21, "iq3_s", 256, 110],
      [22, "iq2_s", 256, 82],
      [23, "iq4_xs", 256, 136],
      [24, "i8", 1, 1],
      [25, "i16", 1, 2],
      [26, "i32", 1, 4],
      [27, "i64", 1, 8],
      [28, "f64", 1, 8],
      [29, "iq1_m", 256, 56],
      [30, "bf16", 1, 2],
      // 31-33 (q4_0_4_4, q4_0_4_8, q4_0_8_8) and 36-38 (iq4_nl_x_x) were removed from ggml.
      [34, "tq1_0", 256, 54],
      [35, "tq2_0", 256, 66],
      [39, "mxfp4", 32, 17],
    ] as const
  ).map(([id, name, blockSize, blockBytes]) => [id, { name, blockSize, blockBytes }]),
);

/** The ggml type id of a type name ("q8_0" -> 8). */
export function ggmlTypeId(name: string): number {
  for (const [id, type] of GGML_TYPES) if (type.name === name) return id;
  throw new UnsupportedError(`ggml type "${name}" is not in kvslim's ggml type table`);
}

// Limits that no real model reaches; they keep a corrupt length from allocating gigabytes.
const MAX_STRING_BYTES = 256 * 1024 * 1024; // tokenizer.huggingface.json is the largest known string (~30 MB)
const MAX_ARRAY_ITEMS = 1 << 25; // the largest vocabularies have ~262k tokens
// The smallest possible encodings, used to reject counts the file cannot hold.
const MIN_KV_BYTES = 8 + 4 + 1; // key length, type, 1-byte value
const MIN_TENSOR_INFO_BYTES = 8 + 4 + 8 + 4 + 8; // name length, n_dims, one dim, type, offset
const FIXED_HEADER_BYTES = 4 + 4 + 8 + 8;
const ITEM_BYTES: Record<string, number> = {
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
  string: 8,
};

/** Reads the header of the GGUF file at `file` (the tensor data stays on disk). */
export function readGguf(file: string): GgufFile {
  const full = path.resolve(file);
  const fd = fs.openSync(full, "r");
  try {
    return readHeader(new HeaderReader(fd, fs.fstatSync(fd).size, full));
  } finally {
    fs.closeSync(fd);
  }
}

function readHeader(r: HeaderReader): GgufFile {
  // 1. Magic.
  const magic = r.bytes(4, "the magic");
  if (!GGUF_MAGIC.every((b, i) => magic[i] === b)) {
    throw r.formatError(`expected the magic "GGUF" (47 47 55 46), found ${showBytes(magic)}; this is not a GGUF file`);
  }
  // 2. Version.
  const version = r.u32("the version");
  checkVersion(r, version);
  // 3, 4. Counts, checked against the smallest bytes they could occupy.
  const tensorCount = r.u64("the tensor count");
  const kvCount = r.u64("the metadata count");
  const room = BigInt(r.fileSize - FIXED_HEADER_BYTES);
  if (tensorCount * BigInt(MIN_TENSOR_INFO_BYTES) + kvCount * BigInt(MIN_KV_BYTES) > room) {
    throw r.formatError(
      `the header claims ${tensorCount} tensors and ${kvCount} metadata entries, which need at least ` +
        `${MIN_TENSOR_INFO_BYTES} and ${MIN_KV_BYTES} bytes each, but only ${room} bytes follow the ` +
        `${FIXED_HEADER_BYTES}-byte header; the counts are corrupt or the file is truncated`,
    );
  }
  // 5. Metadata.
  const metadata = new Map<string, GgufValue>();
  const types = new Map<string, string>();
  for (let i = 0; i < Number(kvCount); i++) {
    const key = r.string(`metadata key #${i}`);
    if (key === "") throw r.formatError(`metadata key #${i} is empty; expected a name such as "general.architecture"`);
    if (metadata.has(key)) throw r.formatError(`metadata key "${key}" appears twice; expected each key once`);
    const type = r.u32(`the type of metadata key "${key}"`);
    metadata.set(key, r.value(type, `metadata key "${key}"`));
    types.set(
      key,
      GGUF_VALUE_TYPES[type] === "array" ? `array of ${GGUF_VALUE_TYPES[r.lastItemType]}` : GGUF_VALUE_TYPES[type],
    );
  }
  const alignment = metadata.get("general.alignment") ?? GGUF_DEFAULT_ALIGNMENT;
  if (typeof alignment !== "number" || alignment < 1 || !Number.isInteger(Math.log2(alignment))) {
    throw r.formatError(`general.alignment is ${describe(alignment)}; expected a power of two such as 32`);
  }
  // 6. Tensor infos.
  const raw = [];
  const names = new Set<string>();
  for (let i = 0; i < Number(tensorCount); i++) {
    const name = r.string(`the name of tensor #${i}`);
    if (names.has(name)) throw r.formatError(`tensor ${name} appears twice; expected each tensor name once`);
    names.add(name);
    const nDims = r.u32(`the dimension count of tensor ${name}`);
    if (nDims < 1 || nDims > 4) throw r.formatError(`tensor ${name} has ${nDims} dimensions; expected 1 to 4`);
    const ne: number[] = [];
    for (let j = 0; j < nDims; j++) {
      const d = r.u64(`dimension ${j} of tensor ${name}`);
      if (d < 1n || d > BigInt(Number.MAX_SAFE_INTEGER)) {
        throw r.formatError(`tensor ${name} has ne[${j}] = ${d}; expected a positive integer below 2^53`);
      }
      ne.push(Number(d));
    }
    const typeId = r.u32(`the type of tensor ${name}`);
    const relative = r.u64(`the data offset of tensor ${name}`);
    raw.push({ name, ne, typeId, relative });
  }
  // 7. Data section.
  const dataOffset = tensorCount > 0n ? alignUp(r.pos, alignment) : r.pos;
  const tensors = raw.map(({ name, ne, typeId, relative }) => {
    const info = tensorInfo(r, name, ne, typeId);
    if (relative % BigInt(alignment) !== 0n) {
      throw r.formatError(
        `tensor ${name} has data offset ${relative}, which is not a multiple of the alignment ${alignment}`,
      );
    }
    const begin = BigInt(dataOffset) + relative;
    const end = begin + BigInt(info.byteLength);
    if (end > BigInt(r.fileSize)) {
      throw r.formatError(
        `tensor ${name} needs bytes [${begin}, ${end}) but the file is only ${r.fileSize} bytes ` +
          `(${formatBytes(r.fileSize)}); the file is truncated`,
      );
    }
    return { ...info, offset: Number(begin) };
  });
  checkNoOverlap(r, tensors);
  return { path: r.path, version, alignment, dataOffset, metadata, types, tensors };
}

function checkVersion(r: HeaderReader, version: number): void {
  if (version === 2 || version === 3) return;
  const swapped =
    (((version & 0xff) << 24) | ((version & 0xff00) << 8) | ((version >>> 8) & 0xff00) | (version >>> 24)) >>> 0;
  if (swapped === 2 || swapped === 3) {
    throw new UnsupportedError(
      `${r.path}: this GGUF file is big-endian (its version field reads ${version} = 0x${hex(version, 8)}, ` +
        `which is ${swapped} byte-swapped); kvslim reads little-endian GGUF only: convert it with llama.cpp's ` +
        `gguf_convert_endian.py`,
    );
  }
  if (version === 1) {
    throw new UnsupportedError(
      `${r.path}: GGUF version 1 is not supported (expected 2 or 3); re-convert the model with a current llama.cpp`,
    );
  }
  if (version > 3 && version < 0x100) {
    throw new UnsupportedError(`${r.path}: GGUF version ${version} is newer than kvslim supports (2 or 3)`);
  }
  throw r.formatError(`expected GGUF version 2 or 3, found ${version} (0x${hex(version, 8)}); the file is corrupt`);
}

/** Shape, type and size of one tensor; offset is filled in by the caller. */
function tensorInfo(r: HeaderReader, name: string, ne: number[], typeId: number): TensorInfo {
  const type = GGML_TYPES.get(typeId);
  if (type === undefined) {
    const known = [...GGML_TYPES.keys()].join(", ");
    throw new UnsupportedError(
      `${r.path}: tensor ${name} has ggml type id ${typeId}, which kvslim does not know (known ids: ${known}); ` +
        `re-convert the model to f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, q4_k, q5_k or q6_k`,
    );
  }
  if (ne[0] % type.blockSize !== 0) {
    throw r.formatError(
      `tensor ${name} (${type.name}) has rows of ne[0] = ${ne[0]} elements; expected a multiple of the ` +
        `${type.name} block size ${type.blockSize}`,
    );
  }
  const numel = numElements(ne);
  if (!Number.isSafeInteger((numel / type.blockSize) * type.blockBytes)) {
    throw r.formatError(`tensor ${name} has ne = ${formatShape(ne)}, too many elements to address (max 2^53 bytes)`);
  }
  const shape = [...ne].reverse();
  const dtype = isDType(type.name) ? type.name : null;
  const byteLength = (numel / type.blockSize) * type.blockBytes;
  return { name, type: type.name, dtype, shape, file: r.path, offset: 0, byteLength };
}

function checkNoOverlap(r: HeaderReader, tensors: TensorInfo[]): void {
  const sorted = [...tensors].sort((a, b) => a.offset - b.offset);
  for (let i = 1; i < sorted.length; i++) {
    const a = sorted[i - 1];
    const b = sorted[i];
    if (a.offset + a.byteLength > b.offset) {
      throw r.formatError(
        `tensors ${a.name} (bytes [${a.offset}, ${a.offset + a.byteLength})) and ${b.name} ` +
          `(bytes [${b.offset}, ${b.offset + b.byteLength})) overlap; expected disjoint data`,
      );
    }
  }
}

/** A forward-only reader over a window of the file; every read checks it stays inside the file. */
class HeaderReader {
  private buf = Buffer.alloc(1 << 20);
  private bufStart = 0; // file offset of buf[0]
  private bufLength = 0;
  pos = 0;
  /** The item type of the last array read. */
  lastItemType = 0;
  // ignoreBOM keeps a leading U+FEFF: SentencePiece vocabularies have tokens that start with it.
  private readonly utf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

  constructor(
    private readonly fd: number,
    readonly fileSize: number,
    readonly path: string,
  ) {}

  formatError(message: string): FormatError {
    return new FormatError(`${this.path}: ${message}`);
  }

  /**
   * Makes bytes [pos, pos + n) available and returns the index of pos in buf. buf is replaced by a
   * larger one only for reads longer than it (long strings), never for the fixed-size numbers.
   */
  private need(n: number, what: string): number {
    if (this.pos + n > this.fileSize) {
      throw this.formatError(
        `${what} needs bytes [${this.pos}, ${this.pos + n}) but the file is only ${this.fileSize} bytes; ` +
          `the file is truncated`,
      );
    }
    if (this.pos + n > this.bufStart + this.bufLength) {
      if (n > this.buf.length) this.buf = Buffer.alloc(Math.max(n, 2 * this.buf.length));
      this.bufStart = this.pos;
      this.bufLength = 0;
      const want = Math.min(this.buf.length, this.fileSize - this.pos);
      while (this.bufLength < n) {
        const got = fs.readSync(this.fd, this.buf, this.bufLength, want - this.bufLength, this.pos + this.bufLength);
        if (got === 0) throw this.formatError(`${what}: the file shrank while it was being read`);
        this.bufLength += got;
      }
    }
    const at = this.pos - this.bufStart;
    this.pos += n;
    return at;
  }

  bytes(n: number, what: string): Uint8Array {
    const at = this.need(n, what);
    return this.buf.subarray(at, at + n);
  }
  u32(what: string): number {
    return this.buf.readUInt32LE(this.need(4, what));
  }
  u64(what: string): bigint {
    return this.buf.readBigUInt64LE(this.need(8, what));
  }

  string(what: string): string {
    const length = this.u64(`the length of ${what}`);
    const left = this.fileSize - this.pos;
    if (length > BigInt(Math.min(left, MAX_STRING_BYTES))) {
      throw this.formatError(
        `${what} claims a length of ${length} bytes, but ` +
          (length > BigInt(left) ? `only ${left} bytes remain in the file` : `the limit is ${MAX_STRING_BYTES}`) +
          `; the file is corrupt or truncated`,
      );
    }
    const bytes = this.bytes(Number(length), what);
    try {
      return this.utf8.decode(bytes);
    } catch {
      throw this.formatError(`${what} is not valid UTF-8 (bytes ${showBytes(bytes.subarray(0, 16))}...)`);
    }
  }

  /** One metadata value of type id `type`. Arrays of arrays are rejected, as llama.cpp does. */
  value(type: number, what: string): GgufValue {
    const b = this.buf;
    switch (GGUF_VALUE_TYPES[type]) {
      case "uint8":
        return b.readUInt8(this.need(1, what));
      case "int8":
        return b.readInt8(this.need(1, what));
      case "uint16":
        return b.readUInt16LE(this.need(2, what));
      case "int16":
        return b.readInt16LE(this.need(2, what));
      case "uint32":
        return b.readUInt32LE(this.need(4, what));
      case "int32":
        return b.readInt32LE(this.need(4, what));
      case "float32":
        return b.readFloatLE(this.need(4, what));
      case "uint64":
        return safeNumber(b.readBigUInt64LE(this.need(8, what)));
      case "int64":
        return safeNumber(b.readBigInt64LE(this.need(8, what)));
      case "float64":
        return b.readDoubleLE(this.need(8, what));
      case "string":
        return this.string(what);
      case "bool": {
        const v = b.readUInt8(this.need(1, what));
        if (v > 1) throw this.formatError(`${what} is a bool stored as ${v}; expected 0 or 1`);
        return v === 1;
      }
      case "array": {
        const itemType = this.u32(`the item type of ${what}`);
        const itemBytes = ITEM_BYTES[GGUF_VALUE_TYPES[itemType] ?? "array"];
        if (itemBytes === undefined) {
          throw this.formatError(`${what} is an array with item type ${itemType}; expected 0 to 12 except 9 (array)`);
        }
        const count = this.u64(`the length of ${what}`);
        const left = BigInt(this.fileSize - this.pos);
        if (count * BigInt(itemBytes) > left || count > BigInt(MAX_ARRAY_ITEMS)) {
          throw this.formatError(
            `${what} claims ${count} items of at least ${itemBytes} bytes each, but only ${left} bytes remain ` +
              `in the file (and at most ${MAX_ARRAY_ITEMS} items are accepted); the file is corrupt or truncated`,
          );
        }
        const items: GgufValue[] = [];
        for (let i = 0; i < Number(count); i++) items.push(this.value(itemType, `${what}[${i}]`));
        this.lastItemType = itemType;
        return items;
      }
      default:
        throw this.formatError(`${what} has value type ${type}; expected 0 to 12 (uint8 ... float64)`);
    }
  }
}

function safeNumber(v: bigint): number | bigint {
  return v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
}

function alignUp(n: number, alignment: number): number {
  return Math.ceil(n / alignment) * alignment;
}

function hex(n: number, width: number): string {
  return n.toString(16).padStart(width, "0");
}

/** 4 bytes shown as text and hex: "GGUF" (47 47 55 46); non-printable characters as "?". */
function showBytes(bytes: Uint8Array): string {
  const text = String.fromCharCode(...[...bytes].map((b) => (b >= 0x20 && b < 0x7f ? b : 0x3f)));
  return `${JSON.stringify(text)} (${[...bytes].map((b) => hex(b, 2)).join(" ")})`;
}

/** A value as error messages show it: its kind and a short preview. */
function describe(v: GgufValue): string {
  if (Array.isArray(v)) return `an array of ${v.length} items`;
  const preview = typeof v === "string" ? JSON.stringify(v.length > 40 ? v.slice(0, 40) + "..." : v) : String(v);
  return `${typeof v === "bigint" ? "an integer" : `a ${typeof v}`} ${preview}`;
}

function typed<T>(file: GgufFile, key: string, expected: string, ok: (v: GgufValue) => boolean): T | undefined {
  const v = file.metadata.get(key);
  if (v === undefined) return undefined;
  if (!ok(v)) throw new FormatError(`${file.path}: metadata key "${key}" should be ${expected}, found ${describe(v)}`);
  return v as T;
}

/** The string value of `key`, undefined if absent; FormatError if it is not a string. */
export function ggufString(file: GgufFile, key: string): string | undefined {
  return typed<string>(file, key, "a string", (v) => typeof v === "string");
}

/** The number value of `key` (any numeric type that fits a double exactly), undefined if absent. */
export function ggufNumber(file: GgufFile, key: string): number | undefined {
  return typed<number>(file, key, "a number (below 2^53)", (v) => typeof v === "number");
}

/** The array value of `key`, undefined if absent. */
export function ggufArray(file: GgufFile, key: string): GgufValue[] | undefined {
  return typed<GgufValue[]>(file, key, "an array", (v) => Array.isArray(v));
}
