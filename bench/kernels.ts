/**
 * Microbenchmark of the kernels, single thread: the portable SIMD build against the relaxed-SIMD build
 * (where the runtime has it), each kernel timed on both in the same run.
 *
 * First each build's arithmetic peaks (peakF32: independent f32x4 multiply-add chains on registers; peakI8: the
 * same with the widest 8-bit dot product), then:
 * matvec is memory bound, so it reports GB/s of weights read; matmul reports GFLOP/s (2 t n d).
 * Shapes are the 97M reference model's: D 768, FFN 2048, vocab 8192, prefill of 64 tokens; matmul also
 * at t = 8 (batched decode of 8 sequences) with W read from memory, as a model's layers read it.
 * Decode attention reports GB/s of K and V read (one KV head, 16k positions); SparQ's per-position steps
 * (approximate scores from 8 of 64 d-major bf16 columns, top-k of n/16, α) report µs.
 * Training GEMMs (forward and both backward products of a linear layer, t = 512) report GFLOP/s.
 * Run: npm run build && npm run bench -- kernels
 */
import { Arena } from "../src/memory/arena.js";
import { type DType, bytesFor, encode } from "../src/memory/dtype.js";
import type { Kernels } from "../src/kernels/kernels.js";
import {
  type KernelBuild,
  KERNEL_BUILDS,
  describeKernelBuild,
  getKernelModule,
  loadWasmKernelsSync,
  relaxedSimdSupported,
} from "../src/kernels/wasm.js";

const arena = new Arena(192 << 20, "the kernel benchmark");
const builds = KERNEL_BUILDS.filter((b) => b === "portable" || relaxedSimdSupported());
const kernelsOf = new Map<KernelBuild, Kernels>(builds.map((b) => [b, loadWasmKernelsSync(arena.memory, b)]));
const wasm = kernelsOf.get("portable")!;
/** Weights; the from-memory matmul rows fill it with copies of one W, more than any last-level cache holds. */
const W_BYTES = 128 << 20;
const W = arena.alloc(W_BYTES);
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

/** Seconds per call; with copies > 1, each call takes the next of that many consecutive copies of W. */
function matmulSeconds(
  k: Kernels,
  dtype: DType,
  n: number,
  d: number,
  t: number,
  minSeconds: number,
  copies = 1,
): number {
  const fn = k[kernelName("matmul", dtype) as "matmulF32"];
  const x = dtype === "q8_0" ? XQ : X;
  const bytes = bytesFor(dtype, n * d);
  let i = 0;
  return timePerCall(() => fn(OUT, x, W + (i++ % copies) * bytes, n, d, t, d), minSeconds);
}

const pad = (s: string, width: number) => s.padEnd(width);
const DTYPES: DType[] = ["f32", "f16", "bf16", "q8_0"];

/** One line: `label`, then rate(build) for each build, and relaxed / portable. */
function row(label: string, unit: string, rate: (k: Kernels) => number, digits = 2): void {
  const rates = builds.map((b) => rate(kernelsOf.get(b)!));
  const cells = rates.map((r, i) => `${builds[i]} ${r.toFixed(digits).padStart(7)} ${unit}`);
  const ratio = rates.length > 1 ? `  relaxed/portable ${(rates[1] / rates[0]).toFixed(2)}×` : "";
  console.log(`  ${pad(label, 40)} ${cells.join("  ")}${ratio}`);
}

console.log(`kernel builds: ${builds.map((b) => `${b} = ${describeKernelBuild(b)}`).join("; ")}`);
// The peak measures are module exports outside the Kernels interface (not kernels): one instance per build.
// Every instance here shares the arena; the builds come from the same sources, so their static data is the
// same bytes and each instantiation rewrites it unchanged.
const peaks = builds.map((build) => {
  const exports = new WebAssembly.Instance(getKernelModule(build), { env: { memory: arena.memory } }).exports;
  return {
    build,
    f32: exports.peakF32 as (n: number) => number,
    i8: exports.peakI8 as (n: number) => number,
    i8Products: (exports.peakI8Products as () => number)(),
  };
});
const PEAK_ITERATIONS = 1_000_000;
console.log("peak: GFLOP/s of 12 independent f32x4 multiply-add chains (registers only)");
for (const { build, f32 } of peaks) {
  const rate = (96 * PEAK_ITERATIONS) / timePerCall(() => f32(PEAK_ITERATIONS), 0.5) / 1e9;
  console.log(`  ${pad(build, 40)} ${rate.toFixed(1)} GFLOP/s`);
}
console.log(
  "8-bit products: G byte products/s of 12 independent dot-product chains (registers only; relaxed: " +
    "i32x4.relaxed_dot_i8x16_i7x16_add_s, 16 per instruction; portable: i32x4.dot_i16x8_s + add on widened bytes, 8)",
);
for (const { build, i8, i8Products } of peaks) {
  const rate = (i8Products * PEAK_ITERATIONS) / timePerCall(() => i8(PEAK_ITERATIONS), 0.5) / 1e9;
  console.log(`  ${pad(build, 40)} ${rate.toFixed(1)} G/s`);
}

console.log("matvec: GB/s of weights read");
for (const [n, d] of [
  [768, 2048],
  [2048, 768],
  [768, 8192],
]) {
  for (const dtype of DTYPES) {
    setup(dtype, n, d, 1);
    const bytes = bytesFor(dtype, n * d);
    row(
      `${kernelName("matvec", dtype)} n=${n} d=${d}`,
      "GB/s",
      (k) => bytes / matvecSeconds(k, dtype, n, d, 0.5) / 1e9,
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
    row(
      `${kernelName("matmul", dtype)} t=${t} n=${n} d=${d}`,
      "GFLOP/s",
      (k) => flops / matmulSeconds(k, dtype, n, d, t, 0.5) / 1e9,
    );
  }
}

// A model's layers each read their own W, so in batched decode (t = a few sequences) W comes from memory;
// the shapes above reuse one W that stays in cache. Here each call takes the next of many copies.
console.log("matmul, W from memory (cycling through 128 MiB of copies): GFLOP/s (2 t n d per call)");
for (const [t, n, d] of [
  [8, 768, 2048],
  [8, 2048, 768],
  [64, 768, 2048],
]) {
  for (const dtype of ["f32", "bf16"] as DType[]) {
    setup(dtype, n, d, t);
    const bytes = bytesFor(dtype, n * d);
    const copies = Math.floor(W_BYTES / bytes);
    for (let c = 1; c < copies; c++) arena.u8.copyWithin(W + c * bytes, W, W + bytes);
    const flops = 2 * t * n * d;
    row(
      `${kernelName("matmul", dtype)} t=${t} n=${n} d=${d}`,
      "GFLOP/s",
      (k) => flops / matmulSeconds(k, dtype, n, d, t, 0.5, copies) / 1e9,
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
      row(`${dtype === "f32" ? "attentionF32" : "attentionBf16"} g=${g}`, "GB/s", (k) => bytes / seconds(k, 0.5) / 1e9);
    }
  }
}

console.log("SparQ's per-position steps at S 16384, d_h 64 (µs per KV head; L2-resident inputs)");
{
  const S = 16384,
    Hd = 64,
    r = 8,
    kk = S / 16 + 1;
  const kT = W,
    approx = W + S * Hd * 2,
    idx = approx + 4 * S,
    scratch = idx + 4 * S;
  arena.u8.set(
    encode(
      "bf16",
      values(S * Hd, 10).map((v) => v * 20),
    ),
    kT,
  );
  arena.f32.set(
    values(Hd, 11).map((v) => v * 20),
    X / 4,
  );
  arena.i32.set(
    Array.from({ length: r }, (_, j) => j * 7),
    XQ / 4,
  );
  arena.f32[XQ / 4 + 64] = 0.5;
  wasm.sparqScoresBf16(approx, X, kT, XQ, XQ + 256, r, S, S, Hd, 1);
  wasm.topK(idx, approx, S, kk, scratch);
  const approxCopy = arena.f32.slice(approx / 4, approx / 4 + S);
  row(
    `sparqScoresBf16 r=${r}`,
    "µs",
    (k) => 1e6 * timePerCall(() => k.sparqScoresBf16(OUT, X, kT, XQ, XQ + 256, r, S, S, Hd, 1), 0.3),
    1,
  );
  arena.f32.set(approxCopy, approx / 4);
  row(`topK kk=${kk}`, "µs", (k) => 1e6 * timePerCall(() => k.topK(OUT, approx, S, kk, scratch), 0.3), 1);
  row(`sparqAlpha n=${kk}`, "µs", (k) => 1e6 * timePerCall(() => k.sparqAlpha(OUT, approx, idx, kk, S, 1), 0.3), 1);
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
  const runs: [string, (k: Kernels) => void][] = [
    ["matmulF32", (k) => k.matmulF32(T_Y, T_X, w, n, d, t, d)],
    ["matmulBackwardInput", (k) => k.matmulBackwardInput(T_X, T_Y, w, n, d, t, d, 0)],
    ["matmulBackwardWeight", (k) => k.matmulBackwardWeight(dW, T_Y, T_X, n, d, t, d)],
  ];
  for (const [name, run] of runs) {
    row(`${name} t=${t} n=${n} d=${d}`, "GFLOP/s", (k) => flops / timePerCall(() => run(k), 1) / 1e9);
  }
}
