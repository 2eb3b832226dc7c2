import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import fc from "fast-check";
import { getLlama, readGgufFileInfo } from "node-llama-cpp";
import { afterAll, describe, expect, it } from "vitest";
import { FileExistsError, FormatError, KvslimError, UnsupportedError, UsageError } from "../src/errors.js";
import { encode, type DType } from "../src/memory/dtype.js";
import { writeFileAtomic } from "../src/io/atomic.js";
import { GGML_TYPES, ggmlTypeId, ggufArray, ggufNumber, ggufString, readGguf } from "../src/io/gguf.js";
import { gguf, writeGguf, type GgufEntry, type TensorToWrite } from "../src/io/gguf-writer.js";
import { readTensorBytes, type TensorInfo } from "../src/io/tensor-file.js";

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "kvslim-gguf-"));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));
let fileCounter = 0;
const tmp = (name = "t.gguf") => path.join(dir, `${fileCounter++}-${name}`);

/** Deterministic pseudo-random numbers in [-2, 2). */
function randomValues(n: number, seed: number): number[] {
  let s = seed >>> 0 || 1;
  return Array.from({ length: n }, () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return (s / 2 ** 32) * 4 - 2;
  });
}

function tensor(name: string, dtype: DType, shape: number[], seed = 1): TensorToWrite {
  const n = shape.reduce((a, b) => a * b, 1);
  return { name, dtype, shape, data: encode(dtype, randomValues(n, seed)) };
}

function bytesOf(info: TensorInfo): Uint8Array {
  const out = new Uint8Array(info.byteLength);
  readTensorBytes(info, out);
  return out;
}

/** Every metadata value type, with the value the reader should return. */
const ALL_TYPES: [string, GgufEntry, unknown][] = [
  ["t.uint8", gguf.u8(255), 255],
  ["t.int8", gguf.i8(-128), -128],
  ["t.uint16", gguf.u16(65535), 65535],
  ["t.int16", gguf.i16(-32768), -32768],
  ["t.uint32", gguf.u32(4294967295), 4294967295],
  ["t.int32", gguf.i32(-2147483648), -2147483648],
  ["t.float32", gguf.f32(1.5), 1.5],
  ["t.float32_rounded", gguf.f32(0.1), Math.fround(0.1)],
  ["t.bool_true", gguf.bool(true), true],
  ["t.bool_false", gguf.bool(false), false],
  ["t.string", gguf.str("héllo ✓ \u{1F600}"), "héllo ✓ \u{1F600}"],
  ["t.string_bom", gguf.str("\uFEFF//"), "\uFEFF//"],
  ["t.string_empty", gguf.str(""), ""],
  ["t.uint64_small", gguf.u64(12345), 12345],
  ["t.uint64_huge", gguf.u64(2n ** 64n - 1n), 2n ** 64n - 1n],
  ["t.int64", gguf.i64(-(2n ** 63n)), -(2n ** 63n)],
  ["t.int64_small", gguf.i64(-7), -7],
  ["t.float64", gguf.f64(Math.PI), Math.PI],
  ["t.arr_str", gguf.arr("string", ["a", "", "<|endoftext|>", "\uFEFF"]), ["a", "", "<|endoftext|>", "\uFEFF"]],
  ["t.arr_i32", gguf.arr("int32", [1, -2, 3]), [1, -2, 3]],
  ["t.arr_f32", gguf.arr("float32", [0.5, -0.25]), [0.5, -0.25]],
  ["t.arr_u64", gguf.arr("uint64", [1, 2n ** 60n]), [1, 2n ** 60n]],
  ["t.arr_bool", gguf.arr("bool", [true, false]), [true, false]],
  ["t.arr_empty", gguf.arr("uint8", []), []],
];

const TENSORS = [
  tensor("f32.1d", "f32", [7], 1),
  tensor("f16.2d", "f16", [3, 5], 2),
  tensor("bf16.3d", "bf16", [2, 3, 5], 3),
  tensor("q8_0.2d", "q8_0", [3, 64], 4),
  tensor("q8_0.4d", "q8_0", [2, 1, 3, 32], 5),
  tensor("f32.4d", "f32", [1, 2, 3, 1], 6),
];

describe("GGUF round trip (writeGguf -> readGguf)", () => {
  it("returns every metadata value type unchanged, including u64 above 2^53 as bigint and a leading BOM", () => {
    const file = tmp();
    writeGguf(
      file,
      ALL_TYPES.map(([k, e]) => [k, e]),
      [],
    );
    const read = readGguf(file);
    expect(read.version).toBe(3);
    expect([...read.metadata.keys()]).toEqual(ALL_TYPES.map(([k]) => k));
    for (const [key, , expected] of ALL_TYPES) expect(read.metadata.get(key), key).toEqual(expected);
  });

  it("returns f32/f16/bf16/q8_0 tensors, 1-D to 4-D with odd shapes, with the same names, types, shapes and exact bytes", () => {
    const file = tmp();
    writeGguf(file, { "general.architecture": gguf.str("llama") }, TENSORS);
    const read = readGguf(file);
    expect(read.tensors.map((t) => t.name)).toEqual(TENSORS.map((t) => t.name));
    for (const [i, t] of TENSORS.entries()) {
      const info = read.tensors[i];
      expect(info.type).toBe(t.dtype);
      expect(info.dtype).toBe(t.dtype);
      expect(info.shape).toEqual(t.shape);
      expect(info.file).toBe(path.resolve(file));
      expect(info.offset % 32).toBe(0);
      expect(bytesOf(info)).toEqual(t.data);
    }
  });

  it("places tensors at multiples of a custom alignment 64 and records general.alignment, but not for the default 32", () => {
    const custom = tmp();
    writeGguf(custom, {}, TENSORS, { alignment: 64 });
    const read = readGguf(custom);
    expect(read.alignment).toBe(64);
    expect(read.metadata.get("general.alignment")).toBe(64);
    expect(read.dataOffset % 64).toBe(0);
    for (const [i, info] of read.tensors.entries()) {
      expect(info.offset % 64).toBe(0);
      expect(bytesOf(info)).toEqual(TENSORS[i].data);
    }
    const plain = tmp();
    writeGguf(plain, {}, TENSORS);
    expect(readGguf(plain).metadata.has("general.alignment")).toBe(false);
  });

  it("typed getters return values, undefined when absent, and FormatError naming the key and found type otherwise", () => {
    const file = tmp();
    writeGguf(file, { "a.s": gguf.str("x"), "a.n": gguf.u32(7), "a.arr": gguf.arr("int32", [1]) }, []);
    const read = readGguf(file);
    expect(ggufString(read, "a.s")).toBe("x");
    expect(ggufNumber(read, "a.n")).toBe(7);
    expect(ggufArray(read, "a.arr")).toEqual([1]);
    expect(ggufString(read, "missing")).toBeUndefined();
    expect(() => ggufString(read, "a.n")).toThrow(FormatError);
    expect(() => ggufString(read, "a.n")).toThrow(/"a\.n" should be a string, found a number 7/);
    expect(() => ggufNumber(read, "a.s")).toThrow(/"a\.s" should be a number .* found a string "x"/);
    expect(() => ggufArray(read, "a.s")).toThrow(FormatError);
  });
});

describe("GGUF against independent references (llama.cpp via node-llama-cpp)", () => {
  it("readGgufFileInfo agrees with readGguf on every metadata value and every tensor's dims, ggml type and offsets", async () => {
    const file = tmp();
    const metadata: [string, GgufEntry][] = [
      ["general.architecture", gguf.str("llama")],
      ...ALL_TYPES.map(([k, e]) => [k, e] as [string, GgufEntry]),
    ];
    writeGguf(file, metadata, TENSORS, { alignment: 64 });
    const mine = readGguf(file);
    const ref = await readGgufFileInfo(file, { sourceType: "filesystem", logWarnings: false });
    // node-llama-cpp returns every 64-bit integer as a bigint; compare integers as bigints on both sides.
    const norm = (v: unknown): unknown =>
      Array.isArray(v) ? v.map(norm) : typeof v === "number" && Number.isInteger(v) ? BigInt(v) : v;
    for (const [key, value] of mine.metadata) {
      const refValue = key.split(".").reduce<any>((o, part) => o?.[part], ref.metadata);
      expect(norm(refValue), key).toEqual(norm(value));
    }
    expect(ref.tensorInfo).toHaveLength(mine.tensors.length);
    expect(Number(ref.infoEndOffset)).toBe(mine.dataOffset);
    for (const [i, info] of mine.tensors.entries()) {
      const r = ref.tensorInfo![i];
      expect(r.name).toBe(info.name);
      expect(r.dimensions.map(Number)).toEqual([...info.shape].reverse());
      expect(r.ggmlType).toBe(ggmlTypeId(info.type));
      expect(Number(r.fileOffset)).toBe(info.offset);
      expect(Number(r.offset)).toBe(info.offset - mine.dataOffset);
    }
  });

  it("the ggml type table matches llama.cpp's ggml_blck_size and ggml_type_size for every id", async () => {
    const llama = await getLlama({ gpu: false, build: "never" });
    try {
      const bindings = (llama as any)._bindings;
      for (const [id, type] of GGML_TYPES) {
        expect([id, bindings.getBlockSizeForGgmlType(id), bindings.getTypeSizeForGgmlType(id)]).toEqual([
          id,
          type.blockSize,
          type.blockBytes,
        ]);
      }
    } finally {
      await llama.dispose();
    }
  });
});

/** Hand-assembled GGUF bytes, independent of writeGguf, for files the writer refuses to produce. */
class Raw {
  private chunks: Buffer[] = [];
  length = 0;
  marks: Record<string, number> = {};
  push(b: Buffer): this {
    this.chunks.push(b);
    this.length += b.length;
    return this;
  }
  mark(name: string): this {
    this.marks[name] = this.length;
    return this;
  }
  u8(v: number) {
    const b = Buffer.alloc(1);
    b.writeUInt8(v);
    return this.push(b);
  }
  u32(v: number) {
    const b = Buffer.alloc(4);
    b.writeUInt32LE(v);
    return this.push(b);
  }
  u64(v: number | bigint) {
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(BigInt(v));
    return this.push(b);
  }
  str(s: string | Buffer) {
    const b = typeof s === "string" ? Buffer.from(s) : s;
    return this.u64(b.length).push(b);
  }
  pad(alignment: number) {
    return this.push(Buffer.alloc((alignment - (this.length % alignment)) % alignment));
  }
  build(): Buffer {
    return Buffer.concat(this.chunks);
  }
}

interface CraftTensor {
  name: string;
  ne: (number | bigint)[];
  type: number;
  offset: number | bigint;
}
interface Craft {
  magic?: string;
  version?: number;
  tensorCount?: bigint;
  kvCount?: bigint;
  kv?: (r: Raw) => number; // writes pairs, returns how many
  tensors?: CraftTensor[];
  alignment?: number;
  dataBytes?: number;
}
const kvStr = (key: string, value: string) => (r: Raw) => (r.str(key).u32(8).str(value), 1);

/** Default: one string key and an f32 tensor "a" of 8 elements at offset 0, fully present. */
function craft(c: Craft = {}): { bytes: Buffer; marks: Record<string, number> } {
  const tensors = c.tensors ?? [{ name: "a", ne: [8], type: 0, offset: 0 }];
  const r = new Raw().mark("magic").push(Buffer.from(c.magic ?? "GGUF", "latin1"));
  r.mark("version")
    .u32(c.version ?? 3)
    .mark("counts");
  const kvBody = new Raw();
  const kvCount = (c.kv ?? kvStr("general.name", "tiny"))(kvBody);
  r.u64(c.tensorCount ?? BigInt(tensors.length))
    .u64(c.kvCount ?? BigInt(kvCount))
    .mark("kv");
  r.push(kvBody.build()).mark("tensors");
  for (const t of tensors) {
    r.str(t.name).u32(t.ne.length);
    for (const d of t.ne) r.u64(d);
    r.u32(t.type).u64(t.offset);
  }
  r.mark("infoEnd")
    .pad(c.alignment ?? 32)
    .mark("data");
  r.push(Buffer.alloc(c.dataBytes ?? 32)).mark("end");
  return { bytes: r.build(), marks: r.marks };
}

function readBytes(bytes: Uint8Array) {
  const file = tmp();
  fs.writeFileSync(file, bytes);
  return () => readGguf(file);
}

/** Asserts that reading `bytes` throws `cls` with a message matching every pattern. */
function expectError(bytes: Uint8Array, cls: typeof KvslimError, ...patterns: RegExp[]) {
  let error: unknown;
  try {
    readBytes(bytes)();
  } catch (e) {
    error = e;
  }
  expect(error).toBeInstanceOf(cls);
  for (const p of patterns) expect((error as Error).message).toMatch(p);
}

describe("GGUF reader rejects bad files with named errors stating expected and found", () => {
  it("the crafted baseline file (version 3 and version 2) reads fine, so each case below differs by one defect", () => {
    for (const version of [2, 3]) {
      const read = readBytes(craft({ version }).bytes)();
      expect(read.version).toBe(version);
      expect(read.tensors[0]).toMatchObject({ name: "a", type: "f32", dtype: "f32", shape: [8], byteLength: 32 });
      expect(read.metadata.get("general.name")).toBe("tiny");
    }
  });

  it("wrong magic: FormatError showing the 4 bytes found", () => {
    expectError(
      craft({ magic: "GGML" }).bytes,
      FormatError,
      /expected the magic "GGUF" \(47 47 55 46\), found "GGML" \(47 47 4d 4c\)/,
    );
  });

  it("version 1: UnsupportedError naming version 1 and the supported 2 or 3", () => {
    expectError(craft({ version: 1 }).bytes, UnsupportedError, /version 1 is not supported \(expected 2 or 3\)/);
  });

  it("big-endian file (version field 00 00 00 03): UnsupportedError saying big-endian", () => {
    expectError(craft({ version: 0x03000000 }).bytes, UnsupportedError, /big-endian/, /0x03000000/, /3 byte-swapped/);
  });

  it("version 4: UnsupportedError; version 0: FormatError", () => {
    expectError(craft({ version: 4 }).bytes, UnsupportedError, /version 4 is newer/);
    expectError(craft({ version: 0 }).bytes, FormatError, /expected GGUF version 2 or 3, found 0/);
  });

  it("unknown tensor type id 31: UnsupportedError naming the tensor and the id", () => {
    expectError(
      craft({ tensors: [{ name: "blk.0.w", ne: [8], type: 31, offset: 0 }] }).bytes,
      UnsupportedError,
      /tensor blk\.0\.w has ggml type id 31/,
    );
  });

  it("a ggml type kvslim computes with (q4_k) is read with its dtype; a known one it does not (q3_k) with dtype null", () => {
    const read = readBytes(
      craft({ tensors: [{ name: "q", ne: [256, 2], type: 12, offset: 0 }], dataBytes: 288 }).bytes,
    )();
    expect(read.tensors[0]).toMatchObject({ type: "q4_k", dtype: "q4_k", shape: [2, 256], byteLength: 288 });
    const q3 = readBytes(
      craft({ tensors: [{ name: "q", ne: [256, 2], type: 11, offset: 0 }], dataBytes: 220 }).bytes,
    )();
    expect(q3.tensors[0]).toMatchObject({ type: "q3_k", dtype: null, shape: [2, 256], byteLength: 220 });
  });

  const { bytes: whole, marks } = craft();
  it.each([
    ["inside the magic", 2],
    ["inside the version", 6],
    ["inside the counts", marks.kv - 3],
    ["inside a metadata key", marks.kv + 10],
    ["inside a metadata value", marks.tensors - 2],
    ["inside a tensor name", marks.tensors + 9],
    ["inside a tensor offset", marks.infoEnd - 1],
  ])("truncated in the header (%s): FormatError saying truncated", (_where, cut) => {
    expectError(whole.subarray(0, cut), FormatError, /truncated/);
  });

  it("truncated in the data: FormatError giving the tensor's byte range and the file size", () => {
    const cut = marks.data + 16;
    expectError(
      whole.subarray(0, cut),
      FormatError,
      new RegExp(
        `tensor a needs bytes \\[${marks.data}, ${marks.data + 32}\\) but the file is only ${cut} bytes.*the file is truncated`,
      ),
    );
  });

  it("misaligned tensor offset: FormatError naming offset and alignment", () => {
    expectError(
      craft({ tensors: [{ name: "a", ne: [4], type: 0, offset: 8 }] }).bytes,
      FormatError,
      /tensor a has data offset 8, which is not a multiple of the alignment 32/,
    );
  });

  it("duplicate tensor name: FormatError naming it", () => {
    const t = { name: "dup", ne: [8], type: 0, offset: 0 };
    expectError(
      craft({ tensors: [t, { ...t, offset: 32 }], dataBytes: 64 }).bytes,
      FormatError,
      /tensor dup appears twice/,
    );
  });

  it("overlapping tensor data: FormatError naming both tensors and their byte ranges", () => {
    const tensors = [
      { name: "x", ne: [16], type: 0, offset: 0 },
      { name: "y", ne: [8], type: 0, offset: 32 },
    ];
    expectError(
      craft({ tensors, dataBytes: 64 }).bytes,
      FormatError,
      /tensors x \(bytes \[\d+, \d+\)\) and y .* overlap/,
    );
  });

  it("absurd tensor count and metadata count: FormatError stating the claimed counts and the bytes available", () => {
    expectError(
      craft({ tensorCount: 2n ** 40n }).bytes,
      FormatError,
      /claims 1099511627776 tensors and 1 metadata entries.*only \d+ bytes follow/,
    );
    expectError(craft({ kvCount: 2n ** 64n - 1n }).bytes, FormatError, /18446744073709551615 metadata entries/);
  });

  it("absurd string length and array length: FormatError stating the claimed length and the bytes left", () => {
    expectError(
      craft({
        kv: (r) => (
          r
            .str("k")
            .u32(8)
            .u64(2n ** 62n),
          1
        ),
      }).bytes,
      FormatError,
      /metadata key "k" claims a length of 4611686018427387904 bytes, but only \d+ bytes remain/,
    );
    expectError(
      craft({
        kv: (r) => (
          r
            .str("k")
            .u32(9)
            .u32(4)
            .u64(10n ** 12n),
          1
        ),
      }).bytes,
      FormatError,
      /metadata key "k" claims 1000000000000 items/,
    );
  });

  it("duplicate metadata key, empty key, unknown value type, nested array, bool 2: FormatError each", () => {
    const two = (r: Raw) => (r.str("k").u32(4).u32(1).str("k").u32(4).u32(2), 2);
    expectError(craft({ kv: two }).bytes, FormatError, /metadata key "k" appears twice/);
    expectError(craft({ kv: kvStr("", "x") }).bytes, FormatError, /metadata key #0 is empty/);
    expectError(
      craft({ kv: (r) => (r.str("k").u32(13).u32(0), 1) }).bytes,
      FormatError,
      /metadata key "k" has value type 13; expected 0 to 12/,
    );
    expectError(
      craft({ kv: (r) => (r.str("k").u32(9).u32(9).u64(0), 1) }).bytes,
      FormatError,
      /array with item type 9/,
    );
    expectError(
      craft({ kv: (r) => (r.str("k").u32(7).u8(2), 1) }).bytes,
      FormatError,
      /bool stored as 2; expected 0 or 1/,
    );
  });

  it("invalid UTF-8 in a key: FormatError", () => {
    expectError(
      craft({
        kv: (r) => (
          r
            .str(Buffer.from([0x61, 0xff, 0x62]))
            .u32(4)
            .u32(0),
          1
        ),
      }).bytes,
      FormatError,
      /metadata key #0 is not valid UTF-8/,
    );
  });

  it("bad dimensions: n_dims 0 and 5, a zero dimension, a row not a multiple of the block size", () => {
    expectError(
      craft({ tensors: [{ name: "a", ne: [], type: 0, offset: 0 }] }).bytes,
      FormatError,
      /tensor a has 0 dimensions; expected 1 to 4/,
    );
    expectError(
      craft({ tensors: [{ name: "a", ne: [1, 1, 1, 1, 8], type: 0, offset: 0 }] }).bytes,
      FormatError,
      /tensor a has 5 dimensions/,
    );
    expectError(
      craft({ tensors: [{ name: "a", ne: [8, 0], type: 0, offset: 0 }] }).bytes,
      FormatError,
      /tensor a has ne\[1\] = 0; expected a positive integer/,
    );
    expectError(
      craft({ tensors: [{ name: "a", ne: [33], type: 8, offset: 0 }], dataBytes: 64 }).bytes,
      FormatError,
      /ne\[0\] = 33 elements; expected a multiple of the q8_0 block size 32/,
    );
  });

  it("general.alignment that is not a power of two: FormatError", () => {
    expectError(
      craft({ kv: (r) => (r.str("general.alignment").u32(4).u32(48), 1) }).bytes,
      FormatError,
      /general\.alignment is a number 48; expected a power of two/,
    );
  });

  it("readTensorBytes on a file truncated after its header was read: FormatError giving range and file size", () => {
    const file = tmp();
    fs.writeFileSync(file, whole);
    const info = readGguf(file).tensors[0];
    fs.truncateSync(file, info.offset + 4);
    expect(() => bytesOf(info)).toThrow(FormatError);
    expect(() => bytesOf(info)).toThrow(
      new RegExp(`needs bytes \\[${info.offset}, ${info.offset + 32}\\).*ends at byte ${info.offset + 4}`),
    );
  });
});

describe("GGUF writer refuses inputs that would make a bad file", () => {
  it("data length, row length, duplicate names, long names, bad alignment: named errors, and no file is left", () => {
    const file = tmp();
    const t = tensor("w", "f32", [2, 3]);
    expect(() => writeGguf(file, {}, [{ ...t, data: t.data.subarray(4) }])).toThrow(
      /shape \[2, 3\] in f32 needs 24 bytes, the data has 20/,
    );
    expect(() => writeGguf(file, {}, [{ ...tensor("q", "q8_0", [32]), shape: [2, 16] }])).toThrow(
      /last dimension 16 is not a multiple of the block size 32/,
    );
    expect(() => writeGguf(file, {}, [t, t])).toThrow(/tensor w twice/);
    expect(() => writeGguf(file, {}, [{ ...t, name: "x".repeat(64) }])).toThrow(/llama\.cpp allows at most 63/);
    expect(() => writeGguf(file, {}, [t], { alignment: 48 })).toThrow(UsageError);
    expect(() => writeGguf(file, { "general.alignment": gguf.u32(64) }, [t], { alignment: 32 })).toThrow(/disagrees/);
    expect(() => writeGguf(file, { k: gguf.u8(256) }, [])).toThrow(/expected an integer in \[0, 255\], got number 256/);
    expect(() => writeGguf(file, { k: gguf.arr("uint32", [1, -1]) }, [])).toThrow(/k\[1\] as uint32/);
    expect(fs.existsSync(file)).toBe(false);
  });
});

describe("writeFileAtomic", () => {
  it("an existing target without overwrite: FileExistsError and the original bytes unchanged", () => {
    const file = tmp("keep.bin");
    fs.writeFileSync(file, "original");
    expect(() => writeFileAtomic(file, (fd) => fs.writeSync(fd, "new"))).toThrow(FileExistsError);
    expect(() => writeGguf(file, {}, [])).toThrow(/expected no file at .*keep\.bin, found one \(8 B\)/);
    expect(fs.readFileSync(file, "utf8")).toBe("original");
    expect(fs.readdirSync(dir).filter((f) => f.includes("keep.bin"))).toEqual([path.basename(file)]);
  });

  it("overwrite: true replaces the target completely", () => {
    const file = tmp("replace.bin");
    fs.writeFileSync(file, "a much longer original content");
    writeFileAtomic(file, (fd) => fs.writeSync(fd, "new"), { overwrite: true });
    expect(fs.readFileSync(file, "utf8")).toBe("new");
  });

  it("a write callback that throws leaves no temp file and no target, and the error propagates", () => {
    const sub = fs.mkdtempSync(path.join(dir, "atomic-"));
    const target = path.join(sub, "out.bin");
    const boom = new Error("boom");
    expect(() =>
      writeFileAtomic(target, (fd) => {
        fs.writeSync(fd, "partial");
        throw boom;
      }),
    ).toThrow(boom);
    expect(fs.readdirSync(sub)).toEqual([]);
    fs.writeFileSync(target, "old");
    expect(() =>
      writeFileAtomic(
        target,
        () => {
          throw boom;
        },
        { overwrite: true },
      ),
    ).toThrow(boom);
    expect(fs.readdirSync(sub)).toEqual(["out.bin"]);
    expect(fs.readFileSync(target, "utf8")).toBe("old");
  });
});

describe("GGUF reader under random corruption (fast-check, 200 runs each)", () => {
  const base = tmp();
  writeGguf(
    base,
    [
      ["general.architecture", gguf.str("llama")],
      ["t.arr", gguf.arr("string", ["a", "bc", "def"])],
      ["t.n", gguf.u32(7)],
      ["t.big", gguf.u64(2n ** 63n)],
    ],
    TENSORS.slice(0, 3),
  );
  const valid = new Uint8Array(fs.readFileSync(base));
  const headerEnd = readGguf(base).dataOffset;
  const target = tmp();

  /** Reads the mutated bytes: success with every tensor inside the file, or a KvslimError; anything else fails. */
  function survives(bytes: Uint8Array): void {
    fs.writeFileSync(target, bytes);
    try {
      const read = readGguf(target);
      for (const t of read.tensors) expect(t.offset + t.byteLength).toBeLessThanOrEqual(bytes.length);
    } catch (error) {
      if (!(error instanceof KvslimError))
        throw new Error(`expected a KvslimError, got ${String(error)}`, { cause: error });
    }
  }
  const edits = (max: number) =>
    fc.array(fc.tuple(fc.nat(max - 1), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 8 });
  const apply = (list: [number, number][]) => {
    const bytes = valid.slice();
    for (const [at, v] of list) bytes[at] = v;
    return bytes;
  };

  it("truncated at a random length: succeeds or throws a KvslimError", () => {
    fc.assert(
      fc.property(fc.nat(valid.length - 1), (n) => survives(valid.subarray(0, n))),
      { numRuns: 200 },
    );
  });
  it("1-8 random bytes overwritten in the header: succeeds or throws a KvslimError", () => {
    fc.assert(
      fc.property(edits(headerEnd), (list) => survives(apply(list))),
      { numRuns: 200 },
    );
  });
  it("1-8 random bytes overwritten anywhere, or a u64 field set to all ones: succeeds or throws a KvslimError", () => {
    fc.assert(
      fc.property(edits(valid.length), (list) => survives(apply(list))),
      { numRuns: 200 },
    );
    fc.assert(
      fc.property(fc.nat(headerEnd - 8), (at) => {
        const b = valid.slice();
        b.fill(0xff, at, at + 8);
        survives(b);
      }),
      { numRuns: 200 },
    );
  });
});
