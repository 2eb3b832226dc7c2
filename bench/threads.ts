/**
 * What a job on the kernel workers costs, and what a second thread gives the products (not a test).
 *
 *   npm run build && npm run bench -- threads              # 1 thread vs the machine's cores
 *   npm run bench -- threads --threads 1,2,3
 *
 * Job overhead: a job whose tasks do (almost) nothing, on every thread: the round trip of waking the
 * workers and waiting for them (Atomics, no messages), back to back, as in a decode step, and after a
 * pause long enough for the workers to fall asleep. Products: the reference model's shapes (d_model 768,
 * FFN 2048, vocab 8192, f32 and q8_0) as one decode step (matvec) and one prefill chunk of 64 rows (matmul).
 */
import { availableParallelism } from "node:os";
import { chooseKernelBuild, describeKernelBuild, loadWasmKernelsSync } from "../src/kernels/wasm.js";
import { Arena } from "../src/memory/arena.js";
import { encode } from "../src/memory/dtype.js";
import { Parallel, type LinearOp } from "../src/threads/parallel.js";
import { shutdownKernelWorkers } from "../src/threads/pool.js";

const args = process.argv.slice(2);
const threadCounts =
  args[0] === "--threads" ? args[1].split(",").map(Number) : [...new Set([1, availableParallelism()])];

const arena = new Arena(160 << 20, "the threads benchmark");
const kernels = loadWasmKernelsSync(arena.memory);
const W = arena.alloc(8192 * 768 * 4);
const X = arena.alloc(64 * 2048 * 4);
const XQ = arena.alloc(64 * 2048 * 2);
const OUT = arena.alloc(64 * 8192 * 4);
let seed = 1;
const random = () => ((seed = (seed * 1103515245 + 12345) >>> 0) / 4294967296) * 2 - 1;
for (let i = 0; i < 64 * 2048; i++) arena.f32[(X >> 2) + i] = random();
kernels.quantizeQ8_0(XQ, X, 64 * 2048);

/** Median seconds per call over ~0.5 s. */
function time(f: () => void, pause = 0): number {
  const times: number[] = [];
  const until = performance.now() + 500;
  while (times.length < 20 || (performance.now() < until && times.length < 20000)) {
    if (pause > 0) {
      const resume = performance.now() + pause;
      while (performance.now() < resume);
    }
    const t0 = performance.now();
    f();
    times.push(performance.now() - t0);
  }
  return times.sort((a, b) => a - b)[times.length >> 1] / 1000;
}

const parallels = new Map<number, Parallel>();
for (const t of threadCounts) parallels.set(t, await Parallel.create(kernels, arena.memory, "wasm", t));

console.log(`kernels: ${describeKernelBuild(chooseKernelBuild())} (KVSLIM_KERNELS=portable|relaxed to choose)`);
console.log("job overhead (every thread adds 4 floats; µs per job, median)");
for (const [t, par] of parallels) {
  const job = () => {
    for (let i = 0; i < t; i++) par.task(i, "add", OUT + 64 * i, X, X, 4);
    par.flush();
  };
  const hot = time(job) * 1e6;
  const cold = time(job, 5) * 1e6;
  console.log(`  ${t} thread(s): back to back ${hot.toFixed(1)} µs, after a 5 ms pause ${cold.toFixed(1)} µs`);
}

const shapes: { name: string; n: number; d: number }[] = [
  { name: "wq (768→768)", n: 768, d: 768 },
  { name: "ffn up (768→2048)", n: 768, d: 2048 },
  { name: "ffn down (2048→768)", n: 2048, d: 768 },
  { name: "output (768→8192)", n: 768, d: 8192 },
];
for (const dtype of ["f32", "q8_0"] as const) {
  const op: LinearOp = dtype === "f32" ? "F32" : "Q8_0";
  const input = dtype === "f32" ? X : XQ;
  console.log(`\n${dtype}: matvec GB/s of weights (decode) and matmul GFLOP/s (64 rows, prefill); ratio vs 1 thread`);
  for (const { name, n, d } of shapes) {
    const values = new Float32Array(n * d).map(() => random() * 0.05);
    const bytes = encode(dtype, values);
    arena.u8.set(bytes, W);
    const rowBytes = bytes.length / d;
    const line: string[] = [];
    let base = { mv: 0, mm: 0 };
    for (const [t, par] of parallels) {
      const mv = bytes.length / time(() => par.matvec(op, OUT, input, W, n, d, rowBytes)) / 1e9;
      const mm = (2 * 64 * n * d) / time(() => par.matmul(op, OUT, input, W, n, d, 64, rowBytes)) / 1e9;
      if (t === threadCounts[0]) base = { mv, mm };
      line.push(
        `${t}t ${mv.toFixed(1)} GB/s (${(mv / base.mv).toFixed(2)}×) ${mm.toFixed(1)} GFLOP/s (${(mm / base.mm).toFixed(2)}×)`,
      );
    }
    console.log(`  ${name.padEnd(20)} ${line.join("   ")}`);
  }
}
for (const p of parallels.values()) p.dispose();
await shutdownKernelWorkers();
