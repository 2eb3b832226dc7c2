/**
 * The model's own invariants: cached decode equals uncached prefill, HF safetensors equal GGUF,
 * CLA against a naive float64 forward pass, CLA share 1 equals the plain model bit for bit, and a
 * CLA-2 cache really holds half the layers.
 */
import fs from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { claShare, type ModelConfig } from "../src/model/config.js";
import { hfConfigFor } from "../src/model/files.js";
import { loadModel } from "../src/model/model.js";
import { llamaConfig } from "../src/model/synthetic.js";
import { llama3FreqFactors } from "../src/model/rope.js";
import { naiveForward } from "./helpers/naive-forward.js";
import { SHAPES, randomTokens, relMaxDiff, tempDir, writeTestGguf, writeTestHf } from "./helpers/models.js";

let dir: string;
beforeAll(() => {
  dir = tempDir();
});
afterAll(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

async function logitsOf(
  modelPath: string,
  tokens: number[],
  mode: "prefill" | "decode",
  kernels: "wasm" | "reference" = "wasm",
): Promise<Float32Array> {
  const model = await loadModel(modelPath, { contextSize: tokens.length, kernels });
  const session = model.createSession();
  const V = model.config.vocabSize;
  let out: Float32Array;
  if (mode === "prefill") {
    out = session.evaluate(tokens, true);
  } else {
    out = new Float32Array(tokens.length * V);
    tokens.forEach((t, i) => out.set(session.evaluate([t]), i * V));
  }
  session.dispose();
  model.dispose();
  return out;
}

function rowDiffs(a: Float32Array, b: ArrayLike<number>[] | Float32Array, V: number, T: number): number {
  let worst = 0;
  for (let t = 0; t < T; t++) {
    const expected = b instanceof Float32Array ? b.subarray(t * V, (t + 1) * V) : b[t];
    worst = Math.max(worst, relMaxDiff(a.subarray(t * V, (t + 1) * V), expected));
  }
  return worst;
}

const CLA2: ModelConfig = {
  ...llamaConfig({ dModel: 64, nLayers: 4, nHeads: 4, nKvHeads: 2, ffnDim: 128, vocabSize: 512 }),
  kvSource: claShare(4, 2),
};
const CLA3_KVNORM: ModelConfig = {
  ...llamaConfig({ dModel: 64, nLayers: 5, nHeads: 4, nKvHeads: 1, ffnDim: 128, vocabSize: 512 }),
  kvSource: claShare(5, 3),
  kvNorm: true,
};

describe("forward pass", () => {
  test("cached decode one token at a time == chunked prefill of the whole sequence (rel 1e-5)", async () => {
    const m = writeTestGguf(dir, "decode-vs-prefill", SHAPES["llama-gqa"]);
    const tokens = randomTokens(150, m.config.vocabSize); // > 2 prefill chunks of 64
    const prefill = await logitsOf(m.path, tokens, "prefill");
    const decode = await logitsOf(m.path, tokens, "decode");
    expect(rowDiffs(decode, prefill, m.config.vocabSize, tokens.length)).toBeLessThanOrEqual(1e-5);
  });

  test("wasm kernels == reference kernels on a whole model (rel 1e-5)", async () => {
    const m = writeTestGguf(dir, "wasm-vs-ref", SHAPES["qwen2-bias"], "q8_0");
    const tokens = randomTokens(70, m.config.vocabSize);
    const wasm = await logitsOf(m.path, tokens, "prefill");
    const ref = await logitsOf(m.path, tokens, "prefill", "reference");
    expect(rowDiffs(wasm, ref, m.config.vocabSize, tokens.length)).toBeLessThanOrEqual(1e-5);
  });

  for (const [name, config] of [
    ["CLA-2 GQA", CLA2],
    ["CLA-3 MQA with kv norm (short last group)", CLA3_KVNORM],
  ] as const) {
    test(`${name}: prefill and cached decode == naive float64 forward without cache (rel 1e-5)`, async () => {
      const m = writeTestHf(dir, `naive-${config.nLayers}`, config);
      const tokens = randomTokens(40, config.vocabSize);
      const expected = naiveForward(config, m.weights, tokens);
      const V = config.vocabSize;
      expect(rowDiffs(await logitsOf(m.path, tokens, "prefill"), expected, V, tokens.length)).toBeLessThanOrEqual(1e-5);
      expect(rowDiffs(await logitsOf(m.path, tokens, "decode"), expected, V, tokens.length)).toBeLessThanOrEqual(1e-5);
    });
  }
});

describe("formats and CLA", () => {
  test("a synthetic GGUF of a Llama-3-scaled config carries the scaling (rope_freqs) and loads with it", async () => {
    const scaling = { type: "llama3" as const, factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalContext: 64 };
    const config = llamaConfig({
      dModel: 64,
      nLayers: 1,
      nHeads: 4,
      ffnDim: 128,
      vocabSize: 512,
      ropeScaling: scaling,
    });
    const m = writeTestGguf(dir, "llama3-scaled", config);
    const model = await loadModel(m.path, { threads: 1 });
    try {
      // GGUF holds the scaling as the factors themselves (config.ropeScaling stays null for GGUF files).
      expect(model.weights.ropeFreqFactors).toEqual(llama3FreqFactors(config));
      expect(model.weights.ropeFreqFactors!.some((f) => f !== 1)).toBe(true);
    } finally {
      model.dispose();
    }
  });

  for (const shape of ["llama-gqa", "qwen2-bias"] as const) {
    test(`${shape}: the same weights as safetensors and as GGUF give bit-identical logits`, async () => {
      const config = SHAPES[shape];
      const gguf = writeTestGguf(dir, `same-${shape}`, config);
      const hf = writeTestHf(dir, `same-${shape}`, config);
      const tokens = randomTokens(80, config.vocabSize);
      const a = await logitsOf(gguf.path, tokens, "prefill");
      const b = await logitsOf(hf.path, tokens, "prefill");
      expect(Buffer.from(a.buffer).equals(Buffer.from(b.buffer))).toBe(true);
    });
  }

  test("a CLA model with share factor 1 == the plain model, bit for bit", async () => {
    const plain = writeTestHf(dir, "plain", SHAPES["llama-gqa"]);
    const share1 = path.join(dir, "share1");
    fs.cpSync(plain.path, share1, { recursive: true });
    // Same weights, declared through kvslim's CLA keys.
    const json = {
      ...hfConfigFor(SHAPES["llama-gqa"], "f32"),
      model_type: "kvslim",
      architectures: ["KvslimForCausalLM"],
      cla_share_factor: 1,
    };
    fs.writeFileSync(path.join(share1, "config.json"), JSON.stringify(json));
    const tokens = randomTokens(50, 512);
    const a = await logitsOf(plain.path, tokens, "prefill");
    const b = await logitsOf(share1, tokens, "prefill");
    expect(Buffer.from(a.buffer).equals(Buffer.from(b.buffer))).toBe(true);
  });

  test("a CLA-2 model's cache holds half the layers: allocated bytes = plain / 2 = 2 × 2 producers × G × S × Hd × 4", async () => {
    const cla = writeTestHf(dir, "cla2-bytes", CLA2);
    const plain = writeTestHf(dir, "plain-bytes", { ...CLA2, kvSource: [0, 1, 2, 3] });
    const S = 100;
    const bytes = async (p: string) => {
      const model = await loadModel(p, { contextSize: S });
      const session = model.createSession();
      const r = { allocated: session.cache.allocatedBytes, pool: model.pool.inUse, slots: session.cache.slots.length };
      session.evaluate(randomTokens(10, 512));
      session.dispose();
      model.dispose();
      return r;
    };
    const a = await bytes(cla.path);
    const b = await bytes(plain.path);
    expect(a.slots).toBe(2);
    expect(b.slots).toBe(4);
    expect(a.allocated).toBe(2 * 2 * CLA2.nKvHeads * S * CLA2.headDim * 4);
    expect(b.allocated).toBe(2 * a.allocated);
    expect(a.pool).toBe(a.allocated);
  });
});
