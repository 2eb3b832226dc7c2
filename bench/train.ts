/**
 * Training speed (not a test): the GEMMs of a training step alone and whole steps of a preset, at 1 thread
 * and at the machine's cores, in one run, with the ratios.
 *
 *   npm run build && npm run bench -- train                      # tiny-mqa-cla2, threads 1 and all cores
 *   npm run bench -- train --preset tiny-mqa --threads 1,2 --steps 3
 *
 * GEMMs (GFLOP/s, 2·t·n·d per call) at the preset's shapes with t = batch · seqLen rows: the forward
 * product, dX = dY·W and dW += dYᵀ·X, split over the threads as training splits them. Whole steps:
 * forward + backward + AdamW on synthetic tokens (the speed does not depend on them), median of `steps`.
 */
import { availableParallelism } from "node:os";
import { chooseKernelBuild, describeKernelBuild, loadWasmKernelsSync } from "../src/kernels/wasm.js";
import { Arena } from "../src/memory/arena.js";
import { Parallel } from "../src/threads/parallel.js";
import { TrainModel } from "../src/train/model.js";
import { AdamW } from "../src/train/optimizer.js";
import { initParams, paramLayout } from "../src/train/params.js";
import { TRAIN_PRESETS, isTrainPreset } from "../src/train/presets.js";

const args = new Map<string, string>();
for (let i = 2; i < process.argv.length; i += 2) args.set(process.argv[i], process.argv[i + 1]);
const presetName = args.get("--preset") ?? "tiny-mqa-cla2";
if (!isTrainPreset(presetName)) throw new Error(`unknown preset ${presetName}`);
const threadCounts = (args.get("--threads") ?? [...new Set([1, availableParallelism()])].join(","))
  .split(",")
  .map(Number);
const steps = Number(args.get("--steps") ?? 3);

const preset = TRAIN_PRESETS[presetName]();
const config = preset.model;
const shape = { batch: preset.batch, seqLen: preset.seqLen };
const layout = paramLayout(config);
const arena = new Arena(TrainModel.bytesFor(config, layout, shape) + (64 << 20), "the training benchmark");
const kernels = loadWasmKernelsSync(arena.memory);
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1];

// GEMM buffers for the largest shape: t rows of max(n, d).
const t = shape.batch * shape.seqLen;
const widest = Math.max(config.dModel, config.ffnDim);
const A = arena.alloc(4 * t * widest);
const B = arena.alloc(4 * widest * widest);
const C = arena.alloc(4 * t * widest);
const dW = arena.alloc(4 * widest * widest); // the weight gradient accumulates here, not into the weights B
for (let i = 0; i < t * widest; i++) arena.f32[(A >> 2) + i] = Math.sin(i) * 0.1;
for (let i = 0; i < widest * widest; i++) arena.f32[(B >> 2) + i] = Math.cos(i) * 0.1;

const gemms = [
  {
    name: `attn q (${config.dModel}→${config.nHeads * config.headDim})`,
    n: config.dModel,
    d: config.nHeads * config.headDim,
  },
  { name: `ffn up (${config.dModel}→${config.ffnDim})`, n: config.dModel, d: config.ffnDim },
  { name: `ffn down (${config.ffnDim}→${config.dModel})`, n: config.ffnDim, d: config.dModel },
];
console.log(
  `${presetName}: ${(layout.tensors.reduce((s, x) => s + x.size, 0) / 1e6).toFixed(2)}M parameters, batch ${shape.batch} × ${shape.seqLen} tokens; threads ${threadCounts.join(", ")}`,
);
console.log(`kernels: ${describeKernelBuild(chooseKernelBuild())} (KVSLIM_KERNELS=portable|relaxed to choose)`);
console.log(`GEMMs at t = ${t} rows (GFLOP/s): forward | dX = dY·W | dW += dYᵀ·X`);
const steady: Record<number, number> = {};
for (const threads of threadCounts) {
  const par = await Parallel.create(kernels, arena.memory, "wasm", threads);
  const time = (f: () => void) => {
    f();
    const times: number[] = [];
    for (let i = 0; i < 5; i++) {
      const t0 = performance.now();
      f();
      times.push(performance.now() - t0);
    }
    return median(times) / 1000;
  };
  for (const { name, n, d } of gemms) {
    const flops = 2 * t * n * d;
    const fwd = flops / time(() => par.matmul("F32", C, A, B, n, d, t, 4 * n)) / 1e9;
    const dx = flops / time(() => par.matmulBackwardInput(C, A, B, n, d, t, d, 0)) / 1e9;
    const dw = flops / time(() => par.matmulBackwardWeight(dW, A, C, n, d, t, d)) / 1e9;
    console.log(
      `  ${threads} thread(s) ${name.padEnd(22)} ${fwd.toFixed(1).padStart(6)} | ${dx.toFixed(1).padStart(6)} | ${dw.toFixed(1).padStart(6)}`,
    );
  }
  par.dispose();
}

console.log("whole steps (forward + backward + AdamW), median:");
for (const threads of threadCounts) {
  const scope = new Arena(TrainModel.bytesFor(config, layout, shape) + (1 << 20), "a training step");
  const k = loadWasmKernelsSync(scope.memory);
  const p = await Parallel.create(k, scope.memory, "wasm", threads);
  const model = new TrainModel(k, p, scope, config, layout, shape);
  const optimizer = new AdamW(k, p, scope, layout, model, scope.alloc(64));
  initParams(layout, config, scope.f32, model.params >> 2, 1);
  for (let i = 0; i < t; i++) {
    scope.i32[(model.tokens >> 2) + i] = (i * 7919) % config.vocabSize;
    scope.i32[(model.targets >> 2) + i] = (i * 7919 + 13) % config.vocabSize;
  }
  const times: number[] = [];
  for (let s = 0; s <= steps; s++) {
    const t0 = performance.now();
    model.zeroGrads();
    model.forward();
    model.backward();
    optimizer.step(s + 1, 1e-3);
    if (s > 0) times.push(performance.now() - t0); // the first step warms up
  }
  const seconds = median(times) / 1000;
  steady[threads] = t / seconds;
  const ratio =
    threads === threadCounts[0]
      ? ""
      : `  (${(steady[threads] / steady[threadCounts[0]]).toFixed(2)}× ${threadCounts[0]} thread)`;
  console.log(
    `  ${threads} thread(s): ${seconds.toFixed(2)} s per step, ${steady[threads].toFixed(0)} tokens/s${ratio}`,
  );
  p.dispose();
}
