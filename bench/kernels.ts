/**
 * Microbenchmark of the kernels: WASM SIMD vs the TypeScript reference, single thread.
 *
 * matvec is memory bound, so it reports GB/s of weights read; matmul reports GFLOP/s (2 t n d).
 * Shapes are the 97M reference model's: D 768, FFN 2048, vocab 8192, prefill of 64 tokens.
 * Decode attention reports GB/s of K and V read (one KV head, 16k positions), topK GB/s of scores.
 * Training GEMMs (forward and both backward products of a linear layer, t = 512) report GFLOP/s, WASM only.
 * Run: npm run build && npm run bench -- kernels
 */
import { Arena } from "../src/memory/arena.js";
import { type DType, bytesFor, encode } from "../src/memory/dtype.js";
import type { Kernels } from "../src/kernels/kernels.js";
import { createReferenceKernels } from "../src/kernels/reference.js";
import { loadWasmKernelsSync } from "../src/kernels/wasm.js";

const arena = new Arena(96 << 20, "the kernel benchmark");
const wasm = loadWasmKernelsSync(arena.memory);
const ref = createReferenceKernels(arena.memory);
const W = arena.alloc(32 << 20);
const X = arena.alloc(1 << 20);
const XQ = arena.alloc(1 << 20);
const OUT = arena.alloc(1 << 20);
const T_X = arena.alloc(4 << 20); // training GEMMs: X or dX (512, ≤ 2048)
const T_Y = arena.alloc(4 << 20); // Y or dY (512, ≤ 2048)

/** Deterministic weight-like values in [-0.05, 0.05) (an LCG: the benchmark needs no quality). */
function values(n: number, seed: number): Float32Array {
  const out = new Float32Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = (s / 2 ** 32 - 0.5) * 0.1;
  }
  return out;
}

/**
 * Seconds per call of `run`: the fastest of batches of ~20 ms run for `minSeconds` in total, so
 * other processes on the machine disturb the number less than they would an average.
 */
function timePerCall(run: () => void, minSeconds: number): number {
  let start = performance.now();
  run();
  const once = Math.max((performance.now() - start) / 1000, 1e-7);
  const callsPerBatch = Math.max(1, Math.round(0.02 / once));
  let best = Infinity;
  const end = performance.now() + minSeconds * 1000;
  do {
    start = performance.now();
    for (let i = 0; i < callsPerBatch; i++) run();
    best = Math.min(best, (performance.now() - start) / 1000 / callsPerBatch);
  } while (performance.now() < end);
  return best;
}

function setup(dtype: DType, n: number, d: number, t: number): void {
  arena.u8.set(encode(dtype, values(n * d, 1)), W);
  arena.f32.set(
    values(t * n, 2).map((v) => v * 20),
    X / 4,
  );
  if (dtype === "q8_0") wasm.quantizeQ8_0(XQ, X, t * n);
}

const kernelName = (op: "matvec" | "matmul", dtype: DType) =>
  `${op}${dtype === "q8_0" ? "Q8_0" : dtype[0].toUpperCase() + dtype.slice(1)}`;

function matvecSeconds(k: Kernels, dtype: DType, n: number, d: number, minSeconds: number): number {
  const fn = k[kernelName("matvec", dtype) as "matvecF32"];
  const x = dtype === "q8_0" ? XQ : X;
  return timePerCall(() => fn(OUT, x, W, n, d), minSeconds);
}

function matmulSeconds(k: Kernels, dtype: DType, n: number, d: number, t: number, minSeconds: number): number {
  const fn = k[kernelName("matmul", dtype) as "matmulF32"];
  const x = dtype === "q8_0" ? XQ : X;
  return timePerCall(() => fn(OUT, x, W, n, d, t, d), minSeconds);
}

const pad = (s: string, width: number) => s.padEnd(width);
const DTYPES: DType[] = ["f32", "f16", "bf16", "q8_0"];

console.log("matvec: GB/s of weights read (WASM, reference, ratio)");
for (const [n, d] of [
  [768, 2048],
  [2048, 768],
  [768, 8192],
]) {
  for (const dtype of DTYPES) {
    setup(dtype, n, d, 1);
    const bytes = bytesFor(dtype, n * d);
    const wasmGBs = bytes / matvecSeconds(wasm, dtype, n, d, 0.5) / 1e9;
    const refGBs = bytes / matvecSeconds(ref, dtype, n, d, 0.3) / 1e9;
    console.log(
      `  ${pad(kernelName("matvec", dtype), 11)} n=${pad(String(n), 5)} d=${pad(String(d), 5)} ` +
        `${wasmGBs.toFixed(2).padStart(6)} GB/s  reference ${refGBs.toFixed(3).padStart(6)} GB/s  x${(wasmGBs / refGBs).toFixed(0)}`,
    );
  }
}

console.log("matmul: GFLOP/s (2 t n d per call)");
for (const [t, n, d] of [
  [64, 768, 2048],
  [64, 2048, 768],
]) {
  for (const dtype of DTYPES) {
    setup(dtype, n, d, t);
    const flops = 2 * t * n * d;
    const wasmGF = flops / matmulSeconds(wasm, dtype, n, d, t, 0.5) / 1e9;
    const refGF = flops / matmulSeconds(ref, dtype, n, d, t, 0.3) / 1e9;
    console.log(
      `  ${pad(kernelName("matmul", dtype), 11)} t=${t} n=${pad(String(n), 5)} d=${pad(String(d), 5)} ` +
        `${wasmGF.toFixed(2).padStart(6)} GFLOP/s  reference ${refGF.toFixed(3).padStart(6)} GFLOP/s  x${(wasmGF / refGF).toFixed(0)}`,
    );
  }
}

console.log("attention: GB/s of K and V read (S 16384, Hd 128, one KV head shared by g query heads)");
{
  const S = 16384,
    Hd = 128;
  const k = W,
    v = W + S * Hd * 4,
    k16 = W + 2 * S * Hd * 4,
    v16 = k16 + S * Hd * 2; // 24 MB of W
  arena.f32.set(values(S * Hd, 3), k / 4);
  arena.f32.set(values(S * Hd, 4), v / 4);
  wasm.packBf16(k16, k, S * Hd);
  wasm.packBf16(v16, v, S * Hd);
  for (const dtype of ["f32", "bf16"] as const) {
    for (const g of [1, 4]) {
      arena.f32.set(
        values(g * Hd, 5).map((x) => x * 20),
        X / 4,
      );
      const [kPtr, vPtr, bytes] = dtype === "f32" ? [k, v, 2 * S * Hd * 4] : [k16, v16, 2 * S * Hd * 2];
      const seconds = (kernels: Kernels, minSeconds: number) => {
        const fn = dtype === "f32" ? kernels.attentionF32 : kernels.attentionBf16;
        return timePerCall(() => fn(OUT, XQ, X, kPtr, vPtr, S, Hd, g, 1 / Math.sqrt(Hd)), minSeconds);
      };
      const wasmGBs = bytes / seconds(wasm, 0.5) / 1e9;
      const refGBs = bytes / seconds(ref, 0.3) / 1e9;
      console.log(
        `  ${pad(dtype === "f32" ? "attentionF32" : "attentionBf16", 13)} g=${g} ` +
          `${wasmGBs.toFixed(2).padStart(6)} GB/s  reference ${refGBs.toFixed(3).padStart(6)} GB/s  x${(wasmGBs / refGBs).toFixed(0)}`,
      );
    }
  }
}

console.log("topK: GB/s of x read (n 16384, kk n/8)");
{
  const n = 16384,
    kk = n / 8;
  arena.f32.set(values(n, 6), X / 4);
  const wasmSeconds = timePerCall(() => wasm.topK(OUT, X, n, kk, W), 0.5);
  const refSeconds = timePerCall(() => ref.topK(OUT, X, n, kk, W), 0.3);
  console.log(
    `  topK          n=${n} ${((4 * n) / wasmSeconds / 1e9).toFixed(2).padStart(6)} GB/s (${(wasmSeconds * 1e6).toFixed(1)} µs)  ` +
      `reference ${((4 * n) / refSeconds / 1e9).toFixed(3).padStart(6)} GB/s  x${(refSeconds / wasmSeconds).toFixed(0)}`,
  );
}

console.log(
  "training GEMMs: GFLOP/s (2 t n d per call), Y (t, d) = X (t, n) @ W (d, n)^T and its two backward products",
);
for (const [t, n, d] of [
  [512, 768, 2048],
  [512, 2048, 768],
]) {
  const w = W,
    dW = W + (16 << 20); // (d, n) each, 6 MiB
  arena.f32.set(values(d * n, 7), w / 4);
  arena.f32.set(values(t * n, 8), T_X / 4);
  arena.f32.set(values(t * d, 9), T_Y / 4);
  arena.f32.fill(0, dW / 4, dW / 4 + d * n);
  const flops = 2 * t * n * d;
  const runs: [string, () => void][] = [
    ["matmulF32", () => wasm.matmulF32(T_Y, T_X, w, n, d, t, d)],
    ["matmulBackwardInput", () => wasm.matmulBackwardInput(T_X, T_Y, w, n, d, t, d, 0)],
    ["matmulBackwardWeight", () => wasm.matmulBackwardWeight(dW, T_Y, T_X, n, d, t, d)],
  ];
  for (const [name, run] of runs) {
    const gflops = flops / timePerCall(run, 1) / 1e9;
    console.log(
      `  ${pad(name, 21)} t=${t} n=${pad(String(n), 5)} d=${pad(String(d), 5)} ${gflops.toFixed(2).padStart(6)} GFLOP/s`,
    );
  }
}
