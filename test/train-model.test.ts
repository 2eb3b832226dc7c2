/**
 * The training model (src/train/model.ts): its forward against the inference engine's on the same weights,
 * its whole-model gradient against central finite differences of a float64 naive forward (tiny GQA +
 * CLA-2, with and without the K/V-input norm, tied and untied embeddings), the same gradient on 1 and 2
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
import { AdamW, ADAMW_DEFAULTS } from "../src/train/optimizer.js";
import { paramLayout } from "../src/train/params.js";
import { makeRandom } from "./helpers/kernels-helpers.js";
import { tempDir, writeTestGguf } from "./helpers/models.js";
import { naiveForward } from "./helpers/naive-forward.js";

type Weights = Map<string, { shape: number[]; values: Float32Array }>;

const gqaCla2 = (over: Partial<ModelConfig> = {}): ModelConfig => ({
  ...llamaConfig({ dModel: 32, nLayers: 4, nHeads: 4, nKvHeads: 2, headDim: 8, ffnDim: 48, vocabSize: 64, contextLength: 64 }),
  kvSource: claShare(4, 2),
  ...over,
});

async function setup(config: ModelConfig, shape: BatchShape, threads = 1) {
  const layout = paramLayout(config);
  const arena = new Arena(TrainModel.bytesFor(config, layout, shape) + (1 << 20), "a training test");
  const kernels = loadWasmKernelsSync(arena.memory);
  const par = threads === 1 ? Parallel.serial(kernels, arena.memory) : await Parallel.create(kernels, arena.memory, "wasm", threads, 0);
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
function naiveLoss(config: ModelConfig, w: Weights, b: { tokens: Int32Array; targets: Int32Array }, shape: BatchShape): number {
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
    const config = gqaCla2({ kvNorm: true });
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
      for (let i = 0; i < expected.length; i++) worst = Math.max(worst, Math.abs(expected[i] - logits[s * expected.length + i]) / scale);
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
        expect(Math.abs(grad - fd), `${name}[${i}]: grad ${grad} fd ${fd}`).toBeLessThanOrEqual(2e-3 * Math.max(Math.abs(fd), 0.01));
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

  test("2 threads give the 1-thread losses and parameters, bit for bit (10 steps)", async () => {
    const one = await run(1, 10);
    const two = await run(2, 10);
    expect(two.losses).toEqual(one.losses);
    expect(two.params).toEqual(one.params);
  });
});

test("ADAMW_DEFAULTS are the CLA paper's: β (0.9, 0.95), weight decay 0.1, clip 1.0", () => {
  expect(ADAMW_DEFAULTS).toMatchObject({ beta1: 0.9, beta2: 0.95, weightDecay: 0.1, clip: 1 });
});
