/**
 * Malformed GGUF files, generated from a valid one and run through `kvslim generate` in process: truncation
 * at every structural boundary, every count, length, type, dimension and offset field set to bad values,
 * every metadata key kvslim reads removed or given values of every type, tensors missing, duplicated or
 * misshapen, head counts that disagree, and random byte edits (fast-check). Each must end in exit 0 with the
 * original's output or one named error line — never a stack trace, "internal error", "undefined" or a
 * dependency's words.
 */
import fs from "node:fs";
import path from "node:path";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { gguf, writeGguf, type GgufEntry } from "../src/io/gguf-writer.js";
import { ggufModelMetadata, randomWeights, syntheticVocab, tensorsToWrite } from "../src/model/synthetic.js";
import { runCli } from "./helpers/cli.js";
import { ggufLayout, withField, type Field } from "./helpers/gguf-layout.js";
import { SHAPES, tempDir } from "./helpers/models.js";

const CONFIG = SHAPES["llama-gqa"];
let dir: string;
let good: string;
let valid: Uint8Array;
let layout: Field[];
let expected: { code: number; out: string };

const args = (file: string) => [
  "generate",
  "-m",
  file,
  "-p",
  "hi there",
  "-n",
  "4",
  "--temperature",
  "0",
  "--threads",
  "1",
];

function metadata(): [string, GgufEntry][] {
  return ggufModelMetadata(CONFIG, syntheticVocab(CONFIG.vocabSize), "f32");
}
function tensors() {
  return tensorsToWrite(CONFIG, randomWeights(CONFIG), "f32", false);
}

beforeAll(async () => {
  dir = tempDir("kvslim-malformed-gguf-");
  good = path.join(dir, "good.gguf");
  writeGguf(good, metadata(), tensors());
  valid = new Uint8Array(fs.readFileSync(good));
  layout = ggufLayout(valid);
  expected = await runCli(...args(good));
  expect(expected.code, expected.err).toBe(0);
  expect(expected.out.length).toBeGreaterThan(1);
});
afterAll(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

let serial = 0;
async function runBytes(bytes: Uint8Array) {
  const file = path.join(dir, `m${serial++}.gguf`);
  fs.writeFileSync(file, bytes);
  try {
    return await runCli(...args(file));
  } finally {
    fs.rmSync(file);
  }
}
async function runFile(meta: [string, GgufEntry][], list = tensors()) {
  const file = path.join(dir, `w${serial++}.gguf`);
  writeGguf(file, meta, list);
  try {
    return await runCli(...args(file));
  } finally {
    fs.rmSync(file);
  }
}

type Outcome = { code: number; out: string; err: string };
/** One named error line: exit 1 or 2 (never 70, a bug), "kvslim: SomeError: …", no stack, no leaked words. */
function isCleanError(r: Outcome): boolean {
  return (
    r.code !== 0 &&
    r.code !== 70 &&
    r.err.trim().split("\n").length === 1 &&
    /^kvslim: [A-Z]\w+Error: /.test(r.err) &&
    !/\n\s+at |internal error|undefined|Cannot read properties|is not a function/.test(r.err) &&
    !/= NaN/.test(r.err) // a value computed from a missing or wrong-typed one
  );
}
/** The property for structural edits: the original's output exactly, or one named error line. */
function expectSameOrError(r: Outcome, label: string): void {
  if (r.code === 0) expect(r.out, `${label}: exit 0 with different output`).toBe(expected.out);
  else expect(isCleanError(r), `${label}: ${r.code} ${r.err}`).toBe(true);
}
function expectError(r: Outcome, label: string, message?: RegExp): void {
  expect(isCleanError(r), `${label}: exit ${r.code} ${r.err}`).toBe(true);
  if (message) expect(r.err, label).toMatch(message);
}

/** The fields a test walks: all of them, but only the first 3 items of the tokenizer's long arrays. */
function sampledFields(): Field[] {
  const seen = new Map<string, number>();
  return layout.filter((f) => {
    if (!f.owner.startsWith("tokenizer.ggml.") || f.kind === "key" || f.kind === "value-type" || f.kind === "item-type")
      return true;
    const n = (seen.get(f.owner + f.kind) ?? 0) + 1;
    seen.set(f.owner + f.kind, n);
    return n <= 4; // the array's length field and the first 3 items
  });
}

describe("GGUF structure", () => {
  test("the layout walker covers the file: fields are contiguous from byte 0 to the end of the data", () => {
    let pos = 0;
    for (const f of layout) {
      if (f.kind !== "data") expect(f.at).toBe(pos);
      pos = f.at + f.size;
    }
    expect(pos).toBe(valid.length);
    expect(layout.filter((f) => f.kind === "data")).toHaveLength(tensors().length);
  });

  test("truncated at every structural boundary (every field's first byte, and one byte short of the end): FormatError naming the file and 'truncated'", async () => {
    const cuts = [...new Set([...sampledFields().map((f) => f.at), valid.length - 1])].filter(
      (at) => at < valid.length,
    );
    expect(cuts.length).toBeGreaterThan(250);
    for (const at of cuts)
      expectError(
        await runBytes(valid.subarray(0, at)),
        `cut at ${at}`,
        /FormatError: .*good|FormatError: .*m\d+\.gguf.*(truncated|shrank|bytes)/,
      );
  });

  test("bad magic and versions: FormatError or UnsupportedError naming what was found", async () => {
    expectError(await runBytes(withField(valid, 0, 4, 0x46554747n + 1n)), "magic", /expected the magic "GGUF"/);
    expectError(await runBytes(withField(valid, 0, 4, 0x0n)), "magic 0", /this is not a GGUF file/);
    for (const [v, message] of [
      [1n, /version 1 is not supported/],
      [4n, /version 4 is newer/],
      [0n, /expected GGUF version 2 or 3, found 0/],
      [0x03000000n, /big-endian/],
      [0xffffffffn, /found 4294967295/],
    ] as const) {
      expectError(await runBytes(withField(valid, 4, 4, v)), `version ${v}`, message);
    }
  });

  // Values that break each kind of field: 0, 1, one past the file, the top bits, all ones.
  const HUGE = [0n, 1n, 2n ** 31n, 2n ** 32n - 1n, 2n ** 53n + 1n, 2n ** 63n, 2n ** 64n - 1n];
  test("every count and length field (tensor and metadata counts, key, string and array lengths) set to 0, 1, 2^31, 2^32-1, 2^53+1, 2^63, 2^64-1 and the file size: one named error line, or the original's output (an unchanged value)", async () => {
    let cases = 0;
    for (const f of sampledFields().filter((f) => f.kind === "count" || f.kind === "length")) {
      for (const v of [...HUGE, BigInt(valid.length)]) {
        expectSameOrError(
          await runBytes(withField(valid, f.at, f.size, v)),
          `${f.kind} of ${f.owner || "header"} at ${f.at} = ${v}`,
        );
        cases++;
      }
    }
    expect(cases).toBeGreaterThan(400);
  });

  test("every metadata value type and array item type set to 9 (array of array), 13, 255 and 2^32-1, and each to every other type id 0-12: one named error line, or the original's output", async () => {
    for (const f of layout.filter((f) => f.kind === "value-type" || f.kind === "item-type")) {
      for (let v = 0n; v <= 12n; v++)
        expectSameOrError(await runBytes(withField(valid, f.at, 4, v)), `${f.kind} of ${f.owner} = ${v}`);
      for (const v of [13n, 255n, 2n ** 32n - 1n])
        expectError(
          await runBytes(withField(valid, f.at, 4, v)),
          `${f.kind} of ${f.owner} = ${v}`,
          /value type|item type|the file is|truncated|corrupt|expected/,
        );
    }
  });

  test("every tensor's n_dims set to 0, 3, 5 and 2^32-1; every dimension to 0, 1, ne+1, 2·ne, 2^53 and 2^64-1: one named error line (a shape the model cannot use, or a file too short)", async () => {
    for (const f of layout.filter((f) => f.kind === "n-dims")) {
      for (const v of [0n, 3n, 5n, 2n ** 32n - 1n])
        expectError(await runBytes(withField(valid, f.at, 4, v)), `n_dims of ${f.owner} = ${v}`);
    }
    for (const f of layout.filter((f) => f.kind === "dim")) {
      const ne = new DataView(valid.buffer, valid.byteOffset).getBigUint64(f.at, true);
      for (const v of [0n, 1n, ne + 1n, 2n * ne, 2n ** 53n, 2n ** 64n - 1n]) {
        expectError(
          await runBytes(withField(valid, f.at, 8, v)),
          `dim of ${f.owner} = ${v}`,
          /ne\[|shape|bytes|dimension|expected|the model's embedding has/,
        );
      }
    }
  });

  test("every tensor's ggml type set to ids ggml removed or never had (4, 5, 31, 36, 40, 2^32-1) and to a k-quant (q4_k): UnsupportedError naming the tensor and the type", async () => {
    for (const f of layout.filter((f) => f.kind === "tensor-type")) {
      for (const v of [4n, 5n, 31n, 36n, 40n, 2n ** 32n - 1n]) {
        expectError(
          await runBytes(withField(valid, f.at, 4, v)),
          `type of ${f.owner} = ${v}`,
          new RegExp(`${f.owner.replaceAll(".", "\\.")}.*(ggml type id|type)`),
        );
      }
      // q4_k needs rows of 256: a 64-wide row is a FormatError, a type kvslim cannot compute is an UnsupportedError.
      expectError(await runBytes(withField(valid, f.at, 4, 12n)), `type of ${f.owner} = q4_k`, /q4_k/);
    }
  });

  test("every tensor's data offset moved by 1, by one alignment step, to the file size and to 2^63: FormatError (misaligned, overlapping or past the end)", async () => {
    for (const f of layout.filter((f) => f.kind === "offset")) {
      const at = new DataView(valid.buffer, valid.byteOffset).getBigUint64(f.at, true);
      for (const v of [at + 1n, at + 32n, BigInt(valid.length), 2n ** 63n]) {
        expectError(
          await runBytes(withField(valid, f.at, 8, v)),
          `offset of ${f.owner} = ${v}`,
          /alignment|overlap|truncated|bytes/,
        );
      }
    }
  });

  test("a tensor renamed to its neighbour's name (a duplicate) or to a name kvslim does not know: one named error line", async () => {
    const names = layout.filter((f) => f.kind === "tensor-name");
    for (const f of names) {
      const twin = names.find((g) => g !== f && g.size === f.size);
      if (twin) {
        const bytes = valid.slice();
        bytes.set(valid.subarray(twin.at, twin.at + twin.size), f.at);
        expectError(await runBytes(bytes), `${f.owner} renamed ${twin.owner}`, /appears twice/);
      }
      const bytes = valid.slice();
      bytes[f.at] = "x".charCodeAt(0);
      expectError(await runBytes(bytes), `${f.owner} renamed`, /ModelMismatchError|missing|not expected|unknown/);
    }
  });
});

describe("GGUF tensors against the config", () => {
  test("each tensor left out: ModelMismatchError naming it (or, for output.weight, the tied embedding is used: exit 0)", async () => {
    for (const t of tensors()) {
      const r = await runFile(
        metadata(),
        tensors().filter((u) => u.name !== t.name),
      );
      if (t.name === "output.weight") expect(r.code, r.err).toBe(0);
      else expectError(r, `without ${t.name}`, new RegExp(`ModelMismatchError: .*${t.name.replaceAll(".", "\\.")}`));
    }
  });

  test("each tensor with its shape transposed or its rows shortened by 32: ModelMismatchError naming the tensor, expected and found shapes", async () => {
    for (const t of tensors()) {
      if (t.shape.length !== 2) continue;
      for (const shape of [
        [t.shape[1], t.shape[0]],
        [t.shape[0], t.shape[1] - 32],
      ]) {
        if (shape[0] === t.shape[0] && shape[1] === t.shape[1]) continue;
        const list = tensors().map((u) =>
          u.name === t.name ? { ...u, shape, data: u.data.subarray(0, shape[0] * shape[1] * 4) } : u,
        );
        // The embedding's rows are the vocabulary: fewer rows than tokens is caught as that.
        const message =
          t.name === "token_embd.weight"
            ? /the tokenizer has 512 tokens but the model's embedding has \d+ rows|token_embd\.weight has shape/
            : new RegExp(`${t.name.replaceAll(".", "\\.")}.*shape|shape.*${t.name.replaceAll(".", "\\.")}`);
        expectError(await runFile(metadata(), list), `${t.name} as ${shape}`, message);
      }
    }
  });

  test("head counts that disagree with the tensors or each other (head_count 3, 8, 0; head_count_kv 3, 4 → MHA shapes, 0; key_length 8, 24): one named error line", async () => {
    const edits: [string, GgufEntry][] = [
      ["llama.attention.head_count", gguf.u32(3)],
      ["llama.attention.head_count", gguf.u32(8)],
      ["llama.attention.head_count", gguf.u32(0)],
      ["llama.attention.head_count_kv", gguf.u32(3)],
      ["llama.attention.head_count_kv", gguf.u32(4)],
      ["llama.attention.head_count_kv", gguf.u32(0)],
      ["llama.attention.key_length", gguf.u32(8)],
      ["llama.attention.key_length", gguf.u32(24)],
      ["llama.embedding_length", gguf.u32(96)],
      ["llama.feed_forward_length", gguf.u32(64)],
      ["llama.block_count", gguf.u32(3)],
      ["llama.rope.dimension_count", gguf.u32(7)],
      ["llama.rope.dimension_count", gguf.u32(64)],
    ];
    for (const [key, value] of edits) {
      const meta = metadata().map(([k, v]) => [k, k === key ? value : v] as [string, GgufEntry]);
      expectError(await runFile(meta), `${key} = ${value.value}`, /(FormatError|ModelMismatchError): /);
    }
  });
});

/** Every key kvslim reads from a GGUF file. */
const READ_KEYS = [
  "general.architecture",
  "general.name",
  "general.alignment",
  "llama.context_length",
  "llama.embedding_length",
  "llama.block_count",
  "llama.feed_forward_length",
  "llama.attention.head_count",
  "llama.attention.head_count_kv",
  "llama.attention.key_length",
  "llama.attention.layer_norm_rms_epsilon",
  "llama.rope.dimension_count",
  "llama.rope.freq_base",
  "llama.rope.scaling.type",
  "kvslim.kv_source",
  "kvslim.kv_norm",
  "tokenizer.ggml.model",
  "tokenizer.ggml.pre",
  "tokenizer.ggml.tokens",
  "tokenizer.ggml.scores",
  "tokenizer.ggml.token_type",
  "tokenizer.ggml.merges",
  "tokenizer.ggml.bos_token_id",
  "tokenizer.ggml.eos_token_id",
  "tokenizer.ggml.unknown_token_id",
  "tokenizer.ggml.eot_token_id",
  "tokenizer.ggml.eom_token_id",
  "tokenizer.ggml.add_bos_token",
  "tokenizer.ggml.add_space_prefix",
  "tokenizer.chat_template",
];
/** Keys without which a llama file is not a model (llama.cpp requires them too). */
const REQUIRED = [
  "general.architecture",
  "llama.context_length",
  "llama.embedding_length",
  "llama.block_count",
  "llama.feed_forward_length",
  "llama.attention.head_count",
  "llama.attention.layer_norm_rms_epsilon",
  "tokenizer.ggml.model",
  "tokenizer.ggml.tokens",
];

/** GGUF values of every type, including the ranges that break counts and factors. */
const ODD_VALUES: GgufEntry[] = [
  gguf.u8(0),
  gguf.i8(-1),
  gguf.u16(65535),
  gguf.i16(-32768),
  gguf.u32(0),
  gguf.u32(2 ** 32 - 1),
  gguf.i32(-1),
  gguf.u64(2n ** 64n - 1n),
  gguf.i64(-(2n ** 63n)),
  gguf.u64(2 ** 40),
  gguf.f32(NaN),
  gguf.f32(Infinity),
  gguf.f32(-0),
  gguf.f32(0.5),
  gguf.f32(1e30),
  gguf.f32(1.4e-45),
  gguf.f64(1e300),
  gguf.bool(true),
  gguf.bool(false),
  gguf.str(""),
  gguf.str("x"),
  gguf.str("llama"),
  gguf.arr("int32", []),
  gguf.arr("int32", [0, 1]),
  gguf.arr("string", ["a"]),
  gguf.arr("float32", [1]),
  gguf.arr("bool", [true]),
];

describe("GGUF metadata", () => {
  test(`each required key removed (${REQUIRED.length} keys): FormatError naming the key`, async () => {
    for (const key of REQUIRED) {
      expectError(
        await runFile(metadata().filter(([k]) => k !== key)),
        `without ${key}`,
        new RegExp(key.replaceAll(".", "\\.")),
      );
    }
  });

  test(`every key kvslim reads (${READ_KEYS.length}) given values of every GGUF type and odd ranges (${ODD_VALUES.length} each): one named error line or exit 0; unchanged values keep the output`, async () => {
    const original = new Map(metadata());
    for (const key of READ_KEYS) {
      for (const value of ODD_VALUES) {
        if (key === "general.alignment") continue; // the writer refuses bad ones; the reader's tests and the byte edits cover it
        const meta = [...metadata().filter(([k]) => k !== key), [key, value] as [string, GgufEntry]];
        const r = await runFile(meta);
        const label = `${key} = ${value.type} ${String(value.value)}`;
        if (r.code !== 0) expectError(r, label);
        const before = original.get(key);
        if (before && before.type === value.type && JSON.stringify(before.value) === JSON.stringify(value.value))
          expectSameOrError(r, label);
      }
    }
  });

  test("out-of-range values that a file can carry with the right type: FormatError naming the key, the value and the range", async () => {
    const cases: [string, GgufEntry, RegExp][] = [
      ["llama.block_count", gguf.u32(1e9), /llama\.block_count must be an integer from 1 to 4096, found 1000000000/],
      ["llama.context_length", gguf.u32(0), /llama\.context_length must be an integer from 1 to/],
      [
        "llama.embedding_length",
        gguf.u64(2n ** 60n),
        /llama\.embedding_length must be an integer .* found 1152921504606846976/,
      ],
      [
        "llama.attention.layer_norm_rms_epsilon",
        gguf.f32(-1),
        /layer_norm_rms_epsilon must be a number between 0 and 1 \(such as 1e-5\), found -1/,
      ],
      ["llama.rope.freq_base", gguf.f32(1.4e-45), /rope\.freq_base must be a number ≥ 1/],
      ["llama.rope.freq_base", gguf.f32(Infinity), /rope\.freq_base must be a number ≥ 1/],
      [
        "llama.rope.freq_base",
        gguf.f64(1e300),
        /rope\.freq_base must be a number ≥ 1 \(such as 10000\), finite in float32, found 1e\+300/,
      ],
      [
        "llama.attention.layer_norm_rms_epsilon",
        gguf.f32(1e30),
        /layer_norm_rms_epsilon must be a number between 0 and 1/,
      ],
      [
        "llama.attention.layer_norm_rms_epsilon",
        gguf.u32(1),
        /layer_norm_rms_epsilon must be stored as a float \(float32\), found uint32 1/,
      ],
      ["llama.block_count", gguf.f32(2), /block_count must be stored as an integer \(uint32\), found float32 2/],
      [
        "tokenizer.ggml.scores",
        gguf.arr(
          "int32",
          Array.from({ length: CONFIG.vocabSize }, () => 0),
        ),
        /tokenizer\.ggml\.scores must be stored as an array of float32, found array of int32/,
      ],
      ["kvslim.kv_source", gguf.arr("int32", [0, 5]), /kvslim\.kv_source\[1\] must be an integer from 0 to 1, found 5/],
      ["kvslim.kv_norm", gguf.u8(1), /kvslim\.kv_norm must be a bool, found 1/],
      ["general.name", gguf.u32(7), /general\.name must be a string, found 7/],
      [
        "tokenizer.ggml.token_type",
        gguf.arr(
          "int32",
          Array.from({ length: CONFIG.vocabSize }, (_, i) => (i === 9 ? 7 : 1)),
        ),
        /token_type\[9\] is 7; expected a token type from 0 to 6/,
      ],
    ];
    for (const [key, value, message] of cases) {
      const meta = [...metadata().filter(([k]) => k !== key), [key, value] as [string, GgufEntry]];
      expectError(await runFile(meta), key, message);
    }
  });

  test("a special token id outside the vocabulary: exit 0, ignored as llama.cpp does, with a note naming the key and the id", async () => {
    const meta = [
      ...metadata().filter(([k]) => k !== "tokenizer.ggml.eos_token_id"),
      ["tokenizer.ggml.eos_token_id", gguf.u32(4_000_000)] as [string, GgufEntry],
    ];
    const r = await runFile(meta);
    expect(r.code, r.err).toBe(0);
    expect(r.err).toMatch(
      /note: .*tokenizer\.ggml\.eos_token_id 4000000 is outside the vocabulary \(0 to 511\); using \d+, as llama\.cpp does/,
    );
  });

  test("weights holding NaN (an f32 tensor's bytes set to ff): NumericError naming the position, no text from NaN logits", async () => {
    const list = tensors().map((t) =>
      t.name === "output_norm.weight" ? { ...t, data: new Uint8Array(t.data.length).fill(0xff) } : t,
    );
    expectError(
      await runFile(metadata(), list),
      "NaN output norm",
      /NumericError: the logits after position \d+ hold NaN/,
    );
  });
});

describe("GGUF under random byte edits (fast-check)", () => {
  /** Bytes whose change leaves a well-formed file with other content: text and numbers inside metadata values, tensor data. */
  const isContent = (at: number) => {
    const f = layout.find((g) => at >= g.at && at < g.at + g.size)!;
    return (
      f.kind === "value" ||
      f.kind === "data" ||
      (f.kind === "key" && !REQUIRED.includes(f.owner)) ||
      f.kind === "padding"
    );
  };
  test("1-4 random bytes of the header's structure (counts, lengths, types, names of required keys and tensors, dims, offsets) changed: the original's output or one named error line (300 runs)", async () => {
    const header = layout.find((f) => f.kind === "padding" || f.kind === "data")!.at;
    const structural = Array.from({ length: header }, (_, i) => i).filter((i) => !isContent(i));
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.tuple(fc.constantFrom(...structural), fc.integer({ min: 0, max: 255 })), {
          minLength: 1,
          maxLength: 4,
        }),
        async (edits) => {
          const bytes = valid.slice();
          for (const [at, v] of edits) bytes[at] = v;
          expectSameOrError(await runBytes(bytes), `edits ${JSON.stringify(edits)}`);
        },
      ),
      { numRuns: 300, seed: 18 },
    );
  });
  test("1-8 random bytes anywhere (values and tensor data included): exit 0 or one named error line, never a stack trace or NaN text (300 runs)", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.tuple(fc.nat(valid.length - 1), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 8 }),
        async (edits) => {
          const bytes = valid.slice();
          for (const [at, v] of edits) bytes[at] = v;
          const r = await runBytes(bytes);
          if (r.code !== 0) expectError(r, `edits ${JSON.stringify(edits)}`);
        },
      ),
      { numRuns: 300, seed: 18 },
    );
  });
});
