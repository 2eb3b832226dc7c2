/**
 * The training model (src/train/model.ts): its forward against the inference engine's on the same weights,
 * its whole-model gradient against central finite differences of a float64 naive forward (tiny GQA +
 * CLA-2, with and without the K/V-input norm, tied and untied embeddings; MQA + CLA-3; MHA), the same gradient on 1 and 2
 * threads, and a loss that goes down, bit-reproducibly, on a fixed batch.
 */
import { describe, expect, test } from "vitest";
import { loadWasmKernelsSync } from "../src/kernels/wasm.js";
import { Arena } from "../src/memory/arena.js";
import { claShare, type ModelConfig } from "../src/model/config.js";
import { loadModel } from "../src/model/model.js";
import { llamaConfig, randomWeights } from "../src/model/synthetic.js";
import { Parallel } from "../src/threads/parallel.js";
import { TrainModel, type BatchShape } from "../src/train/model.js";
import { AdamW, ADAMW_DEFAULTS, learningRate } from "../src/train/optimizer.js";
import { paramLayout } from "../src/train/params.js";
import { makeRandom } from "./helpers/kernels-helpers.js";
import { tempDir, writeTestGguf } from "./helpers/models.js";
import { naiveForward } from "./helpers/naive-forward.js";

type Weights = Map<string, { shape: number[]; values: Float32Array }>;

const gqaCla2 = (over: Partial<ModelConfig> = {}): ModelConfig => ({
  ...llamaConfig({
    dModel: 32,
    nLayers: 4,
    nHeads: 4,
    nKvHeads: 2,
    headDim: 8,
    ffnDim: 48,
    vocabSize: 64,
    contextLength: 64,
  }),
  kvSource: claShare(4, 2),
  ...over,
});

async function setup(config: ModelConfig, shape: BatchShape, threads = 1) {
  const layout = paramLayout(config);
  const arena = new Arena(TrainModel.bytesFor(config, layout, shape) + (1 << 20), "a training test");
  const kernels = loadWasmKernelsSync(arena.memory);
  const par =
    threads === 1
      ? Parallel.serial(kernels, arena.memory)
      : await Parallel.create(kernels, arena.memory, "wasm", threads, 0);
  const model = new TrainModel(kernels, par, arena, config, layout, shape);
  const optimizer = new AdamW(kernels, par, arena, layout, model, arena.alloc(64));
  return { arena, kernels, par, model, optimizer, layout };
}

/** Random tokens (B·T) and next-token targets (the last position of each sequence ignored). */
function batch(random: () => number, V: number, { batch: B, seqLen: T }: BatchShape) {
  const tokens = Int32Array.from({ length: B * T }, () => Math.floor(random() * V));
  const targets = Int32Array.from({ length: B * T }, (_, i) => ((i + 1) % T === 0 ? -1 : tokens[i + 1]));
  return { tokens, targets };
}

function feed(arena: Arena, model: TrainModel, b: { tokens: Int32Array; targets: Int32Array }) {
  arena.i32.set(b.tokens, model.tokens >> 2);
  arena.i32.set(b.targets, model.targets >> 2);
}

/** Mean cross-entropy of the float64 naive forward, sequence by sequence. */
function naiveLoss(
  config: ModelConfig,
  w: Weights,
  b: { tokens: Int32Array; targets: Int32Array },
  shape: BatchShape,
): number {
  let sum = 0;
  let n = 0;
  for (let s = 0; s < shape.batch; s++) {
    const tokens = Array.from(b.tokens.subarray(s * shape.seqLen, (s + 1) * shape.seqLen));
    const logits = naiveForward(config, w, tokens);
    logits.forEach((row, t) => {
      const target = b.targets[s * shape.seqLen + t];
      if (target < 0) return;
      const max = Math.max(...row);
      const lse = max + Math.log(row.reduce((acc, x) => acc + Math.exp(x - max), 0));
      sum += lse - row[target];
      n++;
    });
  }
  return sum / n;
}

describe("training forward", () => {
  test("logits == the inference engine's prefill on the same weights (rel 1e-5), GQA + CLA-2 + kv norm", async () => {
    // 260 rows: the GGUF's synthetic tokenizer has 258 tokens (bytes + BOS/EOS), and every token needs a row.
    const config = { ...gqaCla2({ kvNorm: true }), vocabSize: 260 };
    const shape = { batch: 2, seqLen: 24 };
    const weights = randomWeights(config, { seed: 3 });
    const { arena, model } = await setup(config, shape);
    model.setWeights(weights);
    const b = batch(makeRandom(4), config.vocabSize, shape);
    feed(arena, model, b);
    model.forward(false);
    const logits = model.logitsView().slice();
    const dir = tempDir();
    const file = writeTestGguf(dir, "m", config, "f32", 3);
    const engine = await loadModel(file.path, { threads: 1, contextSize: 64 });
    let worst = 0;
    for (let s = 0; s < shape.batch; s++) {
      const session = engine.createSession();
      const expected = session.evaluate(Array.from(b.tokens.subarray(s * shape.seqLen, (s + 1) * shape.seqLen)), true);
      const scale = Math.max(...expected.map(Math.abs));
      for (let i = 0; i < expected.length; i++)
        worst = Math.max(worst, Math.abs(expected[i] - logits[s * expected.length + i]) / scale);
      session.dispose();
    }
    engine.dispose();
    expect(worst).toBeLessThan(1e-5);
  });
});

describe("whole-model gradient vs central finite differences of a float64 forward", () => {
  const cases: [string, ModelConfig][] = [
    ["GQA + CLA-2", gqaCla2()],
    ["GQA + CLA-2 + kv norm, untied output", gqaCla2({ kvNorm: true, tiedEmbeddings: false })],
    ["MQA + CLA-3 (short last group), tied", { ...gqaCla2({ nKvHeads: 1 }), kvSource: claShare(4, 3) }],
    ["MHA (a K/V head per query head, no sharing), tied", gqaCla2({ nKvHeads: 4, kvSource: claShare(4, 1) })],
  ];
  test.each(cases)("%s: every tensor, 4 entries each: |grad − fd| ≤ 2e-3 · max(|fd|, 0.01)", async (_, config) => {
    const shape = { batch: 2, seqLen: 12 };
    const weights = randomWeights(config, { seed: 5, std: 0.3 });
    const { arena, model } = await setup(config, shape);
    model.setWeights(weights);
    const b = batch(makeRandom(6), config.vocabSize, shape);
    feed(arena, model, b);
    model.zeroGrads();
    const loss = model.forward();
    expect(Math.abs(loss - naiveLoss(config, weights, b, shape))).toBeLessThan(1e-5 * loss);
    model.backward();
    const grads = model.tensors(model.grads);
    const random = makeRandom(7);
    const h = 1e-3;
    for (const [name, w] of weights) {
      for (let j = 0; j < 4; j++) {
        const i = Math.floor(random() * w.values.length);
        const original = w.values[i];
        w.values[i] = Math.fround(original + h);
        const up = naiveLoss(config, weights, b, shape);
        const hUp = w.values[i] - original;
        w.values[i] = Math.fround(original - h);
        const down = naiveLoss(config, weights, b, shape);
        const hDown = original - w.values[i];
        w.values[i] = original;
        const fd = (up - down) / (hUp + hDown);
        const grad = grads.get(name)!.values[i];
        expect(Math.abs(grad - fd), `${name}[${i}]: grad ${grad} fd ${fd}`).toBeLessThanOrEqual(
          2e-3 * Math.max(Math.abs(fd), 0.01),
        );
      }
    }
  });
});

describe("training steps", () => {
  const config = gqaCla2({ kvNorm: true });
  const shape = { batch: 2, seqLen: 16 };

  async function run(threads: number, steps: number) {
    const { arena, model, optimizer, par } = await setup(config, shape, threads);
    model.setWeights(randomWeights(config, { seed: 9, std: 0.05 }));
    feed(arena, model, batch(makeRandom(10), config.vocabSize, shape));
    const losses: number[] = [];
    for (let s = 1; s <= steps; s++) {
      model.zeroGrads();
      losses.push(model.forward());
      model.backward();
      optimizer.step(s, 3e-3);
    }
    const params = model.tensors();
    par.dispose();
    return { losses, params };
  }

  test("AdamW on one fixed batch: the loss falls by more than half in 40 steps; a second run is bit-identical", async () => {
    const a = await run(1, 40);
    expect(a.losses[39]).toBeLessThan(0.5 * a.losses[0]);
    const b = await run(1, 40);
    expect(b.losses).toEqual(a.losses);
    expect(b.params).toEqual(a.params);
  });

  test("2 and 3 threads give the 1-thread losses and parameters, bit for bit (10 steps)", async () => {
    const one = await run(1, 10);
    for (const threads of [2, 3]) {
      const other = await run(threads, 10);
      expect(other.losses, `${threads} threads`).toEqual(one.losses);
      expect(other.params, `${threads} threads`).toEqual(one.params);
    }
  });
});

describe("the optimizer recipe (docs/cla.md)", () => {
  test("ADAMW_DEFAULTS are the CLA paper's: β (0.9, 0.95), weight decay 0.1, clip 1.0", () => {
    expect(ADAMW_DEFAULTS).toMatchObject({ beta1: 0.9, beta2: 0.95, weightDecay: 0.1, clip: 1 });
  });

  test("learning rate: linear warmup to the peak, then cosine down to 10% of it at the schedule's end and after (exact to 1e-12)", () => {
    const [peak, warmup, total] = [2e-3, 10, 110];
    const lr = (step: number) => learningRate(step, peak, warmup, total);
    for (let s = 0; s < warmup; s++) expect(lr(s)).toBeCloseTo((peak * (s + 1)) / warmup, 12);
    expect(lr(warmup)).toBeCloseTo(peak, 12);
    expect(lr(warmup + 50)).toBeCloseTo(0.55 * peak, 12); // halfway down the cosine: (1 + 0.1) / 2
    expect(lr(total)).toBeCloseTo(0.1 * peak, 12);
    expect(lr(total + 100)).toBeCloseTo(0.1 * peak, 12); // the floor, past the end
    for (let s = warmup; s < total; s++) expect(lr(s + 1)).toBeLessThan(lr(s));
  });

  // One step over a whole model's parameters against float64 AdamW written out here: the gradient's global
  // norm over every tensor, clipping to 1.0 only above it, decoupled weight decay on the matrices only.
  test.each([
    ["0.4 (no clipping)", 0.4],
    ["25 (clipped to 1)", 25],
  ])(
    "AdamW.step with gradient norm %s == float64 AdamW over all tensors (each change to 1e-5 of itself + f32 rounding); weight decay on matrices only",
    async (_, norm) => {
      const config = gqaCla2({ kvNorm: true });
      const { arena, model, optimizer, layout, par } = await setup(config, { batch: 1, seqLen: 4 });
      const decayed = layout.tensors.filter((t) => t.decay).map((t) => t.name);
      expect(decayed.length).toBeGreaterThan(0);
      for (const t of layout.tensors) expect(t.decay, t.name).toBe(t.shape.length === 2); // norms (vectors) are not decayed
      const random = makeRandom(11);
      const f32 = arena.f32;
      const region = (ptr: number, f: () => number) => {
        const values = layout.tensors.map((t) => Array.from({ length: t.size }, f));
        layout.tensors.forEach((t, i) => f32.set(values[i], (ptr >> 2) + t.offset));
        return values.map((v) => Float64Array.from(v, Math.fround));
      };
      const params = region(model.params, () => random() * 2 - 1);
      const grads = region(model.grads, () => random() * 2 - 1);
      const m = region(model.m, () => 0.01 * (random() * 2 - 1));
      const v = region(model.v, () => 1e-4 * random());
      const raw = Math.sqrt(grads.reduce((acc, g) => acc + g.reduce((a, x) => a + x * x, 0), 0));
      // Scale the gradients to the wanted norm (in the arena too).
      for (const [i, t] of layout.tensors.entries()) {
        grads[i] = grads[i].map((x) => Math.fround((x * norm) / raw));
        f32.set(grads[i], (model.grads >> 2) + t.offset);
      }
      const gNorm = Math.sqrt(grads.reduce((acc, g) => acc + g.reduce((a, x) => a + x * x, 0), 0));
      const [step, lr, { beta1, beta2, eps, weightDecay }] = [7, 1e-3, ADAMW_DEFAULTS];
      expect(optimizer.step(step, lr)).toBeCloseTo(gNorm, 4);
      const clip = gNorm > 1 ? 1 / gNorm : 1;
      const [bc1, bc2] = [1 - beta1 ** step, 1 - beta2 ** step];
      let worstP = 0;
      let worstM = 0;
      for (const [i, t] of layout.tensors.entries()) {
        const wd = t.shape.length === 2 ? weightDecay : 0;
        for (let j = 0; j < t.size; j++) {
          const g = grads[i][j] * clip;
          const mNew = beta1 * m[i][j] + (1 - beta1) * g;
          const vNew = beta2 * v[i][j] + (1 - beta2) * g * g;
          const update = mNew / bc1 / (Math.sqrt(vNew / bc2) + eps) + wd * params[i][j];
          const expected = params[i][j] - lr * update;
          const got = f32[(model.params >> 2) + t.offset + j];
          worstP = Math.max(
            worstP,
            Math.abs(got - expected) / (1e-5 * lr * Math.abs(update) + 1e-7 * Math.abs(params[i][j])),
          );
          const gotM = f32[(model.m >> 2) + t.offset + j];
          worstM = Math.max(
            worstM,
            Math.abs(gotM - mNew) / (1e-5 * (Math.abs(beta1 * m[i][j]) + Math.abs((1 - beta1) * g)) + 1e-12),
          );
        }
      }
      expect(worstP, "params: |got − float64| / (1e-5·|lr·update| + 1e-7·|p|)").toBeLessThanOrEqual(1);
      expect(worstM, "m: |got − float64| / 1e-5 of its terms").toBeLessThanOrEqual(1);
      par.dispose();
    },
  );
});
