/**
 * Attention methods inside whole models: every method generates to the end on a llama (GQA) and a CLA-2
 * model, from the library and the CLI; evicting methods really shrink the cache; budgets ≥ S equal dense;
 * bf16 KV stays close to f32 KV; the traffic the session reports matches the per-layer spec formulas.
 */
import fs from "node:fs";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import type { AttentionSpec } from "../src/attention/method.js";
import { claShare, type ModelConfig } from "../src/model/config.js";
import { loadModel } from "../src/model/model.js";
import { llamaConfig } from "../src/model/synthetic.js";
import { randomTokens, relMaxDiff, tempDir, writeTestGguf, writeTestHf } from "./helpers/models.js";

let dir: string;
const models: Record<string, string> = {};
const GQA: ModelConfig = llamaConfig({
  dModel: 64,
  nLayers: 2,
  nHeads: 4,
  nKvHeads: 2,
  ffnDim: 128,
  vocabSize: 512,
  contextLength: 1024,
});
const CLA2: ModelConfig = {
  ...llamaConfig({ dModel: 64, nLayers: 4, nHeads: 4, nKvHeads: 1, ffnDim: 128, vocabSize: 512, contextLength: 1024 }),
  kvSource: claShare(4, 2),
};
/** CLA-2 with head dim 32: whole blocks for the q8_0 and q4_0 caches. */
const CLA2_HD32: ModelConfig = {
  ...llamaConfig({ dModel: 128, nLayers: 4, nHeads: 4, nKvHeads: 1, ffnDim: 128, vocabSize: 512, contextLength: 1024 }),
  kvSource: claShare(4, 2),
};

beforeAll(() => {
  dir = tempDir();
  models.llama = writeTestGguf(dir, "llama", GQA).path;
  models.cla2 = writeTestHf(dir, "cla2", CLA2).path;
  models["cla2-hd32"] = writeTestHf(dir, "cla2-hd32", CLA2_HD32).path;
});
afterAll(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

const METHODS: Record<string, AttentionSpec> = {
  dense: { method: "dense" },
  sparq: { method: "sparq", compression: 4, minK: 16 },
  "sparq-single": { method: "sparq", r: 4, k: 20, layout: "single" },
  h2o: { method: "h2o", budget: 64 },
  streaming: { method: "streaming", budget: 64, sinks: 4 },
};

describe("methods in a model", () => {
  for (const model of ["llama", "cla2", "cla2-hd32"]) {
    for (const [name, attention] of Object.entries(METHODS)) {
      for (const kvDtype of model === "cla2-hd32" ? (["q8_0", "q4_0"] as const) : (["f32", "bf16"] as const)) {
        test(`${model} ${name} ${kvDtype}: generates 40 tokens (or ≥ 5 and its end token) after a 300-token prompt; stats report the method's traffic`, async () => {
          const m = await loadModel(models[model], { contextSize: 400, kvDtype, attention });
          const session = m.createSession();
          const it = session.generate(randomTokens(300, 512), { maxTokens: 40, temperature: 0 });
          let r = await it.next();
          while (!r.done) r = await it.next();
          const stats = r.value;
          // 40 tokens, or fewer if the random model picks its end-of-sequence token (it does for some of these).
          if (stats.stopReason === "max-tokens") expect(stats.generatedTokens).toBe(40);
          else expect([stats.stopReason, stats.generatedTokens >= 5]).toEqual(["eos", true]);
          expect(stats.attention).toBe(attention.method);
          expect(stats.kvTraffic.steps).toBe(stats.generatedTokens - 1); // the first token comes from the prompt's logits
          if (name === "dense") expect(stats.kvTraffic.ratio).toBe(1);
          else expect(stats.kvTraffic.ratio).toBeLessThan(0.6);
          if (attention.method === "h2o" || attention.method === "streaming") {
            // Really freed: the cache holds budget + 1 rows, not the 340 positions seen.
            expect(session.cache.capacity).toBe(65);
            expect(stats.kvBytesAllocated).toBe(session.cache.allocatedBytes);
            expect(m.pool.inUse).toBe(Math.ceil(session.cache.allocatedBytes / 64) * 64); // the prompt's block went back
            expect(session.cache.allocatedBytes).toBeLessThan((66 / 400) * m.plan.cachePool);
          }
          session.dispose();
          expect(m.pool.inUse).toBe(0);
          m.dispose();
        });
      }
    }
  }

  test.each(["h2o", "streaming"] as const)(
    "%s with a budget ≥ every position == dense logits, bit for bit (CLA-2 model)",
    async (method) => {
      const tokens = randomTokens(120, 512);
      const logits = async (attention: AttentionSpec) => {
        const m = await loadModel(models.cla2, { contextSize: 200, attention });
        const s = m.createSession();
        const out = [s.evaluate(tokens.slice(0, 100))];
        for (const t of tokens.slice(100)) out.push(s.evaluate([t]));
        s.dispose();
        m.dispose();
        return out;
      };
      const dense = await logits({ method: "dense" });
      const evicting = await logits({ method, budget: 150 });
      evicting.forEach((row, i) => expect(row).toEqual(dense[i]));
    },
  );

  test("bf16 KV: logits within 2e-2 (relative) of f32 KV after a 200-token prompt and 20 decode steps", async () => {
    const tokens = randomTokens(220, 512);
    const run = async (kvDtype: "f32" | "bf16") => {
      const m = await loadModel(models.llama, { contextSize: 256, kvDtype });
      const s = m.createSession();
      s.evaluate(tokens.slice(0, 200));
      let last = new Float32Array();
      for (const t of tokens.slice(200)) last = s.evaluate([t]);
      const bytes = s.cache.allocatedBytes;
      s.dispose();
      m.dispose();
      return { last, bytes };
    };
    const a = await run("f32");
    const b = await run("bf16");
    expect(relMaxDiff(b.last, a.last)).toBeLessThan(2e-2);
    expect(relMaxDiff(b.last, a.last)).toBeGreaterThan(0); // it really is a different storage
    expect(b.bytes).toBe(a.bytes / 2);
  });

  test.each([
    ["q8_0", 34 / 128],
    ["q4_0", 18 / 128],
  ] as const)(
    "%s KV: allocates f32's bytes × %f (blocks of 32 with an f16 scale); logits within 0.5 (relative) of f32 KV and not equal",
    async (kvDtype, fraction) => {
      const tokens = randomTokens(220, 512);
      const run = async (dtype: "f32" | "q8_0" | "q4_0") => {
        const m = await loadModel(models["cla2-hd32"], { contextSize: 256, kvDtype: dtype });
        const s = m.createSession();
        s.evaluate(tokens.slice(0, 200));
        let last = new Float32Array();
        for (const t of tokens.slice(200)) last = s.evaluate([t]);
        const bytes = s.cache.allocatedBytes;
        const used = s.cache.usedBytes;
        s.dispose();
        m.dispose();
        return { last, bytes, used };
      };
      const a = await run("f32");
      const b = await run(kvDtype);
      expect(b.bytes).toBe(a.bytes * fraction);
      // 220 positions × K and V × 2 producer layers × 1 KV head × 32 values.
      expect(a.used).toBe(220 * 2 * 2 * 32 * 4);
      expect(b.used).toBe(a.used * fraction);
      expect(relMaxDiff(b.last, a.last)).toBeGreaterThan(0);
      expect(relMaxDiff(b.last, a.last)).toBeLessThan(0.5);
    },
  );

  test("SparQ's cache stores K twice (1.5× dense) in the double layout and once in the single layout, and the mean of V only when it mixes it in", async () => {
    const bytes = async (attention: AttentionSpec) => {
      const m = await loadModel(models.llama, { contextSize: 256, attention });
      const s = m.createSession();
      const n = s.cache.allocatedBytes;
      s.dispose();
      m.dispose();
      return n;
    };
    const dense = await bytes({ method: "dense" });
    const vMean = 2 * GQA.nKvHeads * GQA.headDim * 4; // 2 slots × G × Hd f32
    // GQA: no reallocation by default, so no mean of V.
    expect(await bytes({ method: "sparq", compression: 8 })).toBe(1.5 * dense);
    expect(await bytes({ method: "sparq", compression: 8, reallocation: true })).toBe(1.5 * dense + vMean);
    expect(await bytes({ method: "sparq", compression: 8, layout: "single", reallocation: true })).toBe(dense + vMean);
  });

  test.each(["q8_0", "q4_0"] as const)(
    "%s SparQ cache: allocated = rows + the per-channel Kᵀ (codes + an f16 scale per 32 positions, capacity rounded up to 32) + v̄; stored bytes per held row the same without the rounding",
    async (kvDtype) => {
      const m = await loadModel(models["cla2-hd32"], {
        contextSize: 250,
        kvDtype,
        attention: { method: "sparq", compression: 8, reallocation: true },
      });
      const s = m.createSession();
      s.evaluate(randomTokens(100, 512));
      const [P, Hd, row, code] = [2, 32, kvDtype === "q8_0" ? 34 : 18, kvDtype === "q8_0" ? 1 : 0.5];
      const C32 = 256; // 250 rounded up to whole groups of 32
      expect(s.cache.allocatedBytes).toBe(P * (2 * 250 * row + Hd * C32 * code + Hd * (C32 / 32) * 2 + Hd * 4));
      expect(s.cache.usedBytes).toBe(P * (100 * (2 * row + Hd * (code + 2 / 32)) + Hd * 4));
      s.dispose();
      m.dispose();
    },
  );

  test("session traffic on a CLA-2 model == what every layer's kernels are given, summed (writes only at producers)", async () => {
    const m = await loadModel(models.cla2, { contextSize: 400, attention: { method: "sparq", r: 4, k: 32 } });
    const s = m.createSession();
    s.evaluate(randomTokens(200, 512));
    const before = { ...s.cache.traffic };
    const steps = 5;
    for (const t of randomTokens(steps, 512, 3)) s.evaluate([t]);
    const c = CLA2;
    const b = 4;
    const L = c.nLayers;
    const P = 2; // producers
    const G = c.nKvHeads;
    const Hd = c.headDim;
    let expected = 0;
    for (let i = 0; i < steps; i++) {
      const S = 200 + i + 1;
      // Every layer's kernels read r columns over S rows and k + 1 rows of K and V (MQA: no mean-value mix by
      // default, so no v̄ is kept); producers write the new rows of K, V and Kᵀ.
      expected += L * G * (S * 4 * b + 2 * (32 + 1) * Hd * b) + P * G * 3 * Hd * b;
    }
    const t = s.cache.traffic;
    expect(t.read + t.written - before.read - before.written).toBe(expected);
    s.dispose();
    m.dispose();
  });

  test("setAttention: a SparQ session switched to dense decodes exactly as a dense session; evicting switches are refused", async () => {
    const tokens = randomTokens(150, 512);
    const m = await loadModel(models.llama, {
      contextSize: 256,
      sessions: 2,
      attention: { method: "sparq", compression: 8 },
    });
    const dense = m.createSession({ attention: { method: "dense" } });
    const sparq = m.createSession({ attention: { method: "sparq", compression: 8, minK: 8 } });
    dense.evaluate(tokens.slice(0, 140));
    sparq.evaluate(tokens.slice(0, 140));
    sparq.setAttention({ method: "dense" });
    for (const t of tokens.slice(140)) expect(sparq.evaluate([t])).toEqual(dense.evaluate([t]));
    expect(() => dense.setAttention({ method: "sparq", compression: 8 })).toThrow(/lacks kTransposed/);
    expect(() => sparq.setAttention({ method: "h2o", budget: 10 })).toThrow(/evicting methods keep their own cache/);
    dense.dispose();
    sparq.dispose();
    m.dispose();
  });
});
