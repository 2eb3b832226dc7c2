import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import fc from "fast-check";
import { afterAll, describe, expect, it } from "vitest";
import { FileExistsError, FormatError, KvslimError, UnsupportedError } from "../src/errors.js";
import { encode, type DType } from "../src/memory/dtype.js";
import type { TensorToWrite } from "../src/io/gguf-writer.js";
import { readSafetensors, readSafetensorsModel, writeSafetensors } from "../src/io/safetensors.js";
import { readTensorBytes, type TensorInfo } from "../src/io/tensor-file.js";

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "kvslim-st-"));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));
let fileCounter = 0;
const tmp = (name = "t.safetensors") => path.join(dir, `${fileCounter++}-${name}`);
const subdir = () => fs.mkdtempSync(path.join(dir, "model-"));

function tensor(name: string, dtype: DType, shape: number[], seed = 1): TensorToWrite {
  const n = shape.reduce((a, b) => a * b, 1);
  const values = Array.from({ length: n }, (_, i) => Math.sin(seed * 1000 + i) * 3);
  return { name, dtype, shape, data: encode(dtype, values) };
}

function bytesOf(info: TensorInfo): Uint8Array {
  const out = new Uint8Array(info.byteLength);
  readTensorBytes(info, out);
  return out;
}

/** A safetensors file from a header object and a data section, assembled by hand. */
function rawFile(header: unknown, data: Uint8Array | number = 0, headerText?: string): Buffer {
  const json = Buffer.from(headerText ?? JSON.stringify(header));
  const length = Buffer.alloc(8);
  length.writeBigUInt64LE(BigInt(json.length));
  return Buffer.concat([length, json, typeof data === "number" ? Buffer.alloc(data) : data]);
}

function readBytes(bytes: Uint8Array) {
  const file = tmp();
  fs.writeFileSync(file, bytes);
  return readSafetensors(file);
}

function expectError(run: () => unknown, cls: typeof KvslimError, ...patterns: RegExp[]) {
  let error: unknown;
  try {
    run();
  } catch (e) {
    error = e;
  }
  expect(error).toBeInstanceOf(cls);
  for (const p of patterns) expect((error as Error).message).toMatch(p);
}

const TENSORS = [
  tensor("scalar", "f32", [], 1),
  tensor("a.1d", "f32", [7], 2),
  tensor("b.2d", "f16", [3, 5], 3),
  tensor("c.3d", "bf16", [2, 3, 5], 4),
  tensor("d.4d", "f32", [1, 2, 3, 1], 5),
  tensor("empty", "f16", [0, 4], 6),
];

describe("safetensors round trip (writeSafetensors -> readSafetensors)", () => {
  it("returns f32/f16/bf16 tensors, 0-D to 4-D with odd and empty shapes, with the same names, types, shapes, exact bytes, and metadata", () => {
    const file = tmp();
    writeSafetensors(file, TENSORS, { format: "pt", note: "ünïcode ✓" });
    const read = readSafetensors(file);
    expect(read.metadata).toEqual({ format: "pt", note: "ünïcode ✓" });
    expect(read.tensors.map((t) => t.name)).toEqual(TENSORS.map((t) => t.name));
    for (const [i, t] of TENSORS.entries()) {
      expect(read.tensors[i]).toMatchObject({
        type: t.dtype,
        dtype: t.dtype,
        shape: t.shape,
        file: path.resolve(file),
      });
      expect(bytesOf(read.tensors[i])).toEqual(t.data);
    }
  });

  it("pads the header with spaces to a multiple of 8 (for 8 name lengths) and stores tensors contiguously from the data start", () => {
    const paddings = new Set<number>();
    for (let extra = 0; extra < 8; extra++) {
      const file = tmp();
      const tensors = [...TENSORS, tensor("n".repeat(extra + 1), "f32", [2])];
      writeSafetensors(file, tensors);
      const bytes = fs.readFileSync(file);
      const n = Number(bytes.readBigUInt64LE(0));
      expect(n % 8).toBe(0);
      const text = bytes.subarray(8, 8 + n).toString("utf8");
      expect(text).toMatch(/^\{.*\} *$/s);
      paddings.add(n - text.trimEnd().length);
      expect(JSON.parse(text)).not.toHaveProperty("__metadata__");
      expect(bytes.length).toBe(8 + n + tensors.reduce((sum, t) => sum + t.data.length, 0));
      let offset = 8 + n;
      for (const t of readSafetensors(file).tensors) {
        expect(t.offset).toBe(offset);
        offset += t.byteLength;
      }
    }
    expect(paddings.size).toBe(8); // every padding length 0..7 occurred
  });

  it("reads the byte-exact example from the safetensors reference docs (I32 [2, 2] at [0, 16)) as dtype null", () => {
    const example = Buffer.concat([
      Buffer.from(
        '<\x00\x00\x00\x00\x00\x00\x00{"test":{"dtype":"I32","shape":[2,2],"data_offsets":[0,16]}}',
        "latin1",
      ),
      Buffer.alloc(16),
    ]);
    const read = readBytes(example);
    expect(read.tensors).toEqual([
      { name: "test", type: "i32", dtype: null, shape: [2, 2], file: expect.any(String), offset: 68, byteLength: 16 },
    ]);
  });

  it("q8_0 cannot be written (safetensors has no such dtype): UnsupportedError, no file", () => {
    const file = tmp();
    expectError(() => writeSafetensors(file, [tensor("q", "q8_0", [32])]), UnsupportedError, /tensor q as q8_0/);
    expect(fs.existsSync(file)).toBe(false);
  });

  it("an existing file is not overwritten without overwrite: FileExistsError, bytes unchanged; overwrite: true replaces it", () => {
    const file = tmp();
    fs.writeFileSync(file, "precious");
    expectError(() => writeSafetensors(file, TENSORS), FileExistsError, /expected no file at/);
    expect(fs.readFileSync(file, "utf8")).toBe("precious");
    writeSafetensors(file, TENSORS, undefined, { overwrite: true });
    expect(readSafetensors(file).tensors).toHaveLength(TENSORS.length);
  });
});

describe("safetensors reader rejects bad files with named errors stating expected and found", () => {
  const ok = { w: { dtype: "F32", shape: [2, 3], data_offsets: [0, 24] } };

  it("the hand-made baseline reads fine, so each case below differs by one defect", () => {
    expect(readBytes(rawFile(ok, 24)).tensors[0]).toMatchObject({
      name: "w",
      dtype: "f32",
      shape: [2, 3],
      byteLength: 24,
    });
  });

  it("a file shorter than 8 bytes: FormatError giving its size", () => {
    expectError(
      () => readBytes(Buffer.from([1, 2, 3])),
      FormatError,
      /the file is 3 bytes; a safetensors file starts with an 8-byte header length/,
    );
  });

  it("header length above 100 MB or beyond the file: FormatError stating the length and the limit", () => {
    const huge = Buffer.alloc(16);
    huge.writeBigUInt64LE(200_000_000n);
    expectError(() => readBytes(huge), FormatError, /header length field says 200000000 bytes; expected at most 8/);
    const past = rawFile(ok, 24);
    past.writeBigUInt64LE(BigInt(past.length));
    expectError(
      () => readBytes(past),
      FormatError,
      new RegExp(`says ${past.length} bytes; expected at most ${past.length - 8}`),
    );
  });

  it("bad JSON: FormatError carrying the JSON parser's message", () => {
    expectError(
      () => readBytes(rawFile(null, 0, '{"w": {"dtype": "F32",')),
      FormatError,
      /header is not valid UTF-8 JSON: .*JSON/,
    );
    expectError(() => readBytes(rawFile([1, 2])), FormatError, /header should be a JSON object, found an array/);
  });

  it("dtypes kvslim does not compute with (I64, U8, BOOL, F8_E4M3, an unheard-of one) are recorded with dtype null, not rejected", () => {
    const header = {
      i: { dtype: "I64", shape: [2], data_offsets: [0, 16] },
      u: { dtype: "U8", shape: [3], data_offsets: [16, 19] },
      b: { dtype: "BOOL", shape: [1], data_offsets: [19, 20] },
      f8: { dtype: "F8_E4M3", shape: [4], data_offsets: [20, 24] },
      future: { dtype: "F3_E1M1", shape: [5], data_offsets: [24, 26] },
    };
    const read = readBytes(rawFile(header, 26));
    expect(read.tensors.map((t) => [t.name, t.type, t.dtype])).toEqual([
      ["i", "i64", null],
      ["u", "u8", null],
      ["b", "bool", null],
      ["f8", "f8_e4m3", null],
      ["future", "f3_e1m1", null],
    ]);
  });

  it("data_offsets that disagree with shape x element size: FormatError giving both byte counts", () => {
    const bad = { w: { dtype: "BF16", shape: [2, 3], data_offsets: [0, 24] } };
    expectError(
      () => readBytes(rawFile(bad, 24)),
      FormatError,
      /tensor w has data_offsets \[0, 24\) = 24 bytes, but shape \[2, 3\] of BF16 needs 12 bytes/,
    );
  });

  it("data_offsets past the end of the file: FormatError saying truncated with the range and size", () => {
    const bytes = rawFile(ok, 20);
    const start = bytes.length - 20;
    expectError(
      () => readBytes(bytes),
      FormatError,
      new RegExp(
        `tensor w needs bytes \\[${start}, ${start + 24}\\) but the file is only ${bytes.length} bytes.*truncated`,
      ),
    );
  });

  it("malformed entries: begin > end, negative or fractional dims, missing dtype: FormatError naming the tensor", () => {
    expectError(
      () => readBytes(rawFile({ w: { dtype: "F32", shape: [0], data_offsets: [8, 0] } }, 8)),
      FormatError,
      /tensor w has data_offsets \[8,0\]; expected \[begin, end\]/,
    );
    expectError(
      () => readBytes(rawFile({ w: { dtype: "F32", shape: [-1], data_offsets: [0, 0] } })),
      FormatError,
      /tensor w has shape \[-1\]/,
    );
    expectError(
      () => readBytes(rawFile({ w: { dtype: "F32", shape: [1.5], data_offsets: [0, 6] } }, 8)),
      FormatError,
      /tensor w has shape \[1\.5\]/,
    );
    expectError(
      () => readBytes(rawFile({ w: { shape: [1], data_offsets: [0, 4] } }, 4)),
      FormatError,
      /tensor w has no dtype/,
    );
  });

  it("overlapping tensors: FormatError naming both and their data_offsets", () => {
    const header = {
      x: { dtype: "F32", shape: [4], data_offsets: [0, 16] },
      y: { dtype: "F32", shape: [2], data_offsets: [8, 16] },
    };
    expectError(
      () => readBytes(rawFile(header, 16)),
      FormatError,
      /tensors x \(data_offsets \[0, 16\)\) and y \(\[8, 16\)\) overlap/,
    );
  });

  it("__metadata__ that is not a string-to-string map: FormatError naming the key and what was found", () => {
    expectError(
      () => readBytes(rawFile({ __metadata__: { format: "pt", step: 3 } })),
      FormatError,
      /__metadata__\.step should be a string, found number 3/,
    );
    expectError(
      () => readBytes(rawFile({ __metadata__: ["pt"] })),
      FormatError,
      /__metadata__ should be an object of strings, found an array/,
    );
  });
});

describe("readSafetensorsModel (single file or sharded by model.safetensors.index.json)", () => {
  const shard1 = [tensor("embed", "f32", [4, 3], 1), tensor("layer.0", "bf16", [3, 3], 2)];
  const shard2 = [tensor("layer.1", "f16", [3, 3], 3), tensor("head", "f32", [3, 4], 4)];
  function sharded(weightMap?: Record<string, string>) {
    const d = subdir();
    writeSafetensors(path.join(d, "model-00001-of-00002.safetensors"), shard1, { format: "pt" });
    writeSafetensors(path.join(d, "model-00002-of-00002.safetensors"), shard2, { format: "pt", extra: "x" });
    const map = weightMap ?? {
      embed: "model-00001-of-00002.safetensors",
      "layer.0": "model-00001-of-00002.safetensors",
      "layer.1": "model-00002-of-00002.safetensors",
      head: "model-00002-of-00002.safetensors",
    };
    fs.writeFileSync(
      path.join(d, "model.safetensors.index.json"),
      JSON.stringify({ metadata: { total_size: 1 }, weight_map: map }),
    );
    return d;
  }

  it("reads model.safetensors in a directory", () => {
    const d = subdir();
    writeSafetensors(path.join(d, "model.safetensors"), shard1);
    expect(readSafetensorsModel(d).tensors.map((t) => t.name)).toEqual(["embed", "layer.0"]);
  });

  it("merges the shards of an index: every tensor once, from its own file, with exact bytes", () => {
    const d = sharded();
    const model = readSafetensorsModel(d);
    expect(model.metadata).toEqual({ format: "pt", extra: "x" });
    expect(model.tensors.map((t) => [t.name, path.basename(t.file)])).toEqual([
      ["embed", "model-00001-of-00002.safetensors"],
      ["layer.0", "model-00001-of-00002.safetensors"],
      ["layer.1", "model-00002-of-00002.safetensors"],
      ["head", "model-00002-of-00002.safetensors"],
    ]);
    for (const [i, t] of [...shard1, ...shard2].entries()) expect(bytesOf(model.tensors[i])).toEqual(t.data);
  });

  it("an index pointing to a missing shard: FormatError naming the tensor and the missing file", () => {
    const d = sharded();
    fs.rmSync(path.join(d, "model-00002-of-00002.safetensors"));
    expectError(
      () => readSafetensorsModel(d),
      FormatError,
      /maps tensor layer\.1 to model-00002-of-00002\.safetensors, but .* does not exist/,
    );
  });

  it("a tensor present in two shards: FormatError naming the tensor and both files", () => {
    const d = sharded();
    writeSafetensors(path.join(d, "model-00002-of-00002.safetensors"), [...shard2, shard1[0]], undefined, {
      overwrite: true,
    });
    expectError(
      () => readSafetensorsModel(d),
      FormatError,
      /tensor embed is in both model-00001-of-00002\.safetensors and model-00002-of-00002\.safetensors/,
    );
  });

  it("an index that names the wrong shard for a tensor, or a path outside the directory: FormatError", () => {
    const [one, two] = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"];
    const wrong = sharded({ "layer.0": one, embed: two, head: two });
    expectError(
      () => readSafetensorsModel(wrong),
      FormatError,
      /maps tensor embed to model-00002-of-00002\.safetensors, but it is in model-00001/,
    );
    const absent = sharded({ embed: two, head: two });
    expectError(
      () => readSafetensorsModel(absent),
      FormatError,
      /maps tensor embed to model-00002-of-00002\.safetensors, but model-00002-of-00002\.safetensors has no tensor embed/,
    );
    const escape = sharded({ embed: "../model-00001-of-00002.safetensors" });
    expectError(
      () => readSafetensorsModel(escape),
      FormatError,
      /weight_map\.embed should be a file name in the same directory/,
    );
  });

  it("a directory with neither file: FormatError listing what it found", () => {
    const d = subdir();
    fs.writeFileSync(path.join(d, "other.safetensors"), "");
    expectError(
      () => readSafetensorsModel(d),
      FormatError,
      /expected model\.safetensors or model\.safetensors\.index\.json in .*found neither \(it has other\.safetensors\)/,
    );
  });
});

describe("safetensors reader under random corruption (fast-check, 200 runs each)", () => {
  const base = tmp();
  writeSafetensors(base, TENSORS.slice(1, 4), { format: "pt" });
  const valid = new Uint8Array(fs.readFileSync(base));
  const headerEnd = 8 + Number(Buffer.from(valid).readBigUInt64LE(0));
  const target = tmp();

  function survives(bytes: Uint8Array): void {
    fs.writeFileSync(target, bytes);
    try {
      const read = readSafetensors(target);
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
  it("1-8 random bytes overwritten in the header (JSON digits and quotes included): succeeds or throws a KvslimError", () => {
    fc.assert(
      fc.property(edits(headerEnd), (list) => survives(apply(list))),
      { numRuns: 200 },
    );
    const digits = fc.array(fc.tuple(fc.nat(headerEnd - 9), fc.constantFrom(...Buffer.from('0123456789"[],:-.e{}'))), {
      minLength: 1,
      maxLength: 8,
    });
    fc.assert(
      fc.property(digits, (list) => survives(apply(list.map(([at, v]) => [at + 8, v])))),
      { numRuns: 200 },
    );
  });
  it("1-8 random bytes overwritten anywhere: succeeds or throws a KvslimError", () => {
    fc.assert(
      fc.property(edits(valid.length), (list) => survives(apply(list))),
      { numRuns: 200 },
    );
  });
});
