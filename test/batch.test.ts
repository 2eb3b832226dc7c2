/**
 * Batched decoding (Model.decodeBatch): several sessions, each with its own prompt length, attention method
 * and KV dtype, decode one token each per step with one pass over the weights. Reference: the same sessions
 * stepping alone with session.evaluate([token]); every step's logits must be the same bits (the matmul
 * kernels sum each row in the matvec kernels' order, and attention runs per session).
 */
import { afterAll, describe, expect, test } from "vitest";
import type { AttentionSpec } from "../src/attention/method.js";
import type { KvDType } from "../src/kvcache/cache.js";
import type { DType } from "../src/memory/dtype.js";
import { loadModel, type Model } from "../src/model/model.js";
import type { Session } from "../src/model/session.js";
import { argmax } from "../src/model/sampler.js";
import { llamaConfig } from "../src/model/synthetic.js";
import { SHAPES, randomTokens, tempDir, writeTestGguf } from "./helpers/models.js";

const dir = tempDir();
const CLA = llamaConfig({
  dModel: 64,
  nLayers: 4,
  nHeads: 4,
  nKvHeads: 1,
  ffnDim: 128,
  vocabSize: 512,
  kvSource: [0, 0, 2, 2],
  kvNorm: true,
});

/** The sessions of one scenario: a method, a KV dtype and a prompt length each. */
const SESSIONS: { attention: AttentionSpec; kvDtype: KvDType; prompt: number }[] = [
  { attention: { method: "dense" }, kvDtype: "f32", prompt: 37 },
  { attention: { method: "sparq", compression: 4, minK: 4, minR: 1 }, kvDtype: "f32", prompt: 90 },
  { attention: { method: "h2o", compression: 2 }, kvDtype: "f32", prompt: 64 },
  { attention: { method: "streaming", budget: 24, sinks: 4 }, kvDtype: "bf16", prompt: 70 },
  { attention: { method: "dense" }, kvDtype: "bf16", prompt: 5 },
  { attention: { method: "sparq", compression: 8, minK: 4, minR: 1 }, kvDtype: "bf16", prompt: 120 },
];
const STEPS = 12;

const models: Model[] = [];
afterAll(() => {
  for (const m of models) m.dispose();
});

/** Prefills every session of the scenario; returns the sessions and each one's first token (argmax). */
function prefill(model: Model): { sessions: Session[]; next: number[] } {
  const sessions = SESSIONS.map((s) =>
    model.createSession({ attention: s.attention, kvDtype: s.kvDtype, contextSize: 160 }),
  );
  const next = sessions.map((session, i) => argmax(session.evaluate(randomTokens(SESSIONS[i].prompt, 512, 11 + i))));
  return { sessions, next };
}

describe("decodeBatch == each session alone (bit-exact logits at every step)", () => {
  const cases: [string, ReturnType<typeof llamaConfig>, DType, number][] = [
    ["GQA f32", SHAPES["llama-gqa"], "f32", 1],
    ["MQA q8_0", SHAPES["llama-mqa"], "q8_0", 1],
    ["qwen2 (biases) bf16, 2 threads", SHAPES["qwen2-bias"], "bf16", 2],
    ["CLA2 + MQA f16", CLA, "f16", 1],
  ];
  for (const [name, config, dtype, threads] of cases) {
    test(`${name}: 6 sessions (dense, SparQ 1/4 and 1/8, H2O, StreamingLLM; f32 and bf16 KV; prompts 5–120), ${STEPS} steps`, async () => {
      const file = writeTestGguf(dir, name.replace(/\W+/g, "-"), config, dtype).path;
      const model = await loadModel(file, {
        contextSize: 160,
        sessions: SESSIONS.length + 1,
        threads,
        attention: { method: "sparq" },
      });
      models.push(model);
      // Alone: each session steps on its own, its greedy tokens recorded.
      const alone = prefill(model);
      const tokens: number[][] = alone.next.map((t) => [t]);
      const logitsAlone: Float32Array[][] = alone.sessions.map(() => []);
      for (let step = 0; step < STEPS; step++) {
        alone.sessions.forEach((session, i) => {
          const logits = session.evaluate([tokens[i][step]]);
          logitsAlone[i].push(logits);
          tokens[i].push(argmax(logits));
        });
      }
      for (const s of alone.sessions) s.dispose();
      // Batched: the same tokens, all sessions in one step; a session joins late and one leaves early.
      const batched = prefill(model);
      expect(batched.next).toEqual(alone.next);
      for (let step = 0; step < STEPS; step++) {
        const active = batched.sessions
          .map((session, i) => ({ session, i }))
          .filter(({ i }) => !(i === 4 && step < 3) && !(i === 2 && step >= STEPS - 2));
        const out = model.decodeBatch(active.map(({ session, i }) => ({ session, token: tokens[i][step] })));
        active.forEach(({ i }, b) => expect(out[b], `session ${i} step ${step}`).toEqual(logitsAlone[i][step]));
        // The late joiner catches up alone, one token per step, so its positions match.
        if (step < 3) batched.sessions[4].evaluate([tokens[4][step]]);
        if (step >= STEPS - 2) batched.sessions[2].evaluate([tokens[2][step]]);
      }
      for (const [i, s] of batched.sessions.entries())
        expect(s.tokens.length, `session ${i}`).toBe(SESSIONS[i].prompt + STEPS);
      for (const s of batched.sessions) s.dispose();
    });
  }

  test("a session twice in one step, a token outside the vocabulary or a full context: refused before any session moves", async () => {
    const model = models[0];
    const a = model.createSession({ contextSize: 8, attention: { method: "dense" } });
    const b = model.createSession({ contextSize: 8, attention: { method: "dense" } });
    const c = model.createSession({ contextSize: 8, attention: { method: "dense" } });
    a.evaluate([1, 2, 3]);
    c.evaluate([1]);
    b.evaluate([1, 2, 3, 4, 5, 6, 7, 8]);
    expect(() =>
      model.decodeBatch([
        { session: a, token: 1 },
        { session: a, token: 2 },
      ]),
    ).toThrow(/only one token per step/);
    expect(() =>
      model.decodeBatch([
        { session: a, token: 1 },
        { session: c, token: 9999 },
      ]),
    ).toThrow(/token id 9999 is outside the vocabulary/);
    expect(() =>
      model.decodeBatch([
        { session: a, token: 1 },
        { session: b, token: 1 },
      ]),
    ).toThrow(/exceed the context size of 8/);
    expect(a.tokens).toHaveLength(3);
    expect(c.tokens).toHaveLength(1);
    for (const s of [a, b, c]) s.dispose();
  });
});

describe("Session.reserve", () => {
  test("a session grown from 40 to 100 positions mid-context continues exactly as one created with 100 (dense and SparQ, bit-exact); evicting sessions and too little room are refused", async () => {
    const model = models[0];
    const prompt = randomTokens(80, 512, 5);
    for (const attention of [{ method: "dense" }, { method: "sparq", compression: 4, minK: 4, minR: 1 }] as const) {
      const grown = model.createSession({ contextSize: 40, attention });
      const whole = model.createSession({ contextSize: 100, attention });
      grown.evaluate(prompt.slice(0, 30));
      grown.reserve(100);
      expect(grown.capacity).toBe(100);
      const a = grown.evaluate(prompt.slice(30), true);
      const b = whole.evaluate(prompt, true).slice(30 * 512);
      expect(a).toEqual(b);
      for (let i = 0; i < 4; i++) expect(grown.evaluate([i])).toEqual(whole.evaluate([i]));
      expect(() => grown.reserve(10)).toThrow(/reserve expects 84 to 160 positions/);
      grown.dispose();
      whole.dispose();
    }
    const h2o = model.createSession({ contextSize: 40, attention: { method: "h2o", compression: 2 } });
    expect(() => h2o.reserve(100)).toThrow(/sizes its own cache/);
    h2o.dispose();
  });
});
