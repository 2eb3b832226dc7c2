/**
 * The WASM SIMD kernels against their TypeScript reference twin (same memory, different output
 * regions) and against float64 naive computations written here, on random shapes with ragged
 * tails, plus hand-checked tiny cases. Dot-product tolerances are relative to Σ|terms|:
 * |err| ≤ 1e-6·√n·Σ|w·x| (f32 accumulation in a different order); the rest is bit-exact.
 */
import { describe, expect, test } from "vitest";
import { createReferenceKernels } from "../src/kernels/reference.js";
import {
  chooseKernelBuild,
  getKernelModule,
  kernelBuildOf,
  loadWasmKernels,
  loadWasmKernelsSync,
  relaxedSimdSupported,
} from "../src/kernels/wasm.js";
import { UnsupportedError, UsageError } from "../src/errors.js";
import type { Kernels } from "../src/kernels/kernels.js";
import { Arena, type Ptr } from "../src/memory/arena.js";
import { type DType, bytesFor, decode, encode, f32ToBf16, bf16ToF32, roundF16 } from "../src/memory/dtype.js";
import {
  activationsFor,
  awkwardFloats,
  expectBitExact,
  expectWithin,
  gaussian,
  makeRandom,
  naiveMatmul,
  weights,
} from "./helpers/kernels-helpers.js";

const arena = new Arena(64 << 20, "the kernel tests");
const wasm = loadWasmKernelsSync(arena.memory);
const ref = createReferenceKernels(arena.memory);
const W = arena.alloc(24 << 20); // weights / tables / K
const X = arena.alloc(4 << 20); // activations / q / V
const XQ = arena.alloc(2 << 20); // quantized activations / cos
const AUX = arena.alloc(1 << 20); // second operand / sin
const OUT_WASM = arena.alloc(4 << 20);
const OUT_REF = arena.alloc(4 << 20);
const SCRATCH_WASM = arena.alloc(1 << 20);
const SCRATCH_REF = arena.alloc(1 << 20);

const put = (ptr: Ptr, bytes: Uint8Array) => arena.u8.set(bytes, ptr);
const putF32 = (ptr: Ptr, values: ArrayLike<number>) => arena.f32.set(values, ptr / 4);
const getF32 = (ptr: Ptr, n: number) => arena.f32.slice(ptr / 4, ptr / 4 + n);
const getBytes = (ptr: Ptr, n: number) => arena.u8.slice(ptr, ptr + n);
const dotBound = (n: number) => 1e-6 * Math.sqrt(n);

const SIZES = [1, 3, 7, 17, 64, 100, 333, 1024];
const TOKENS = [1, 2, 3, 5, 8, 13];
const Q8_SIZES = [32, 96, 4096];
const FLOAT_DTYPES = ["f32", "f16", "bf16"] as const;
const cap = (s: string) => s[0].toUpperCase() + s.slice(1);

/**
 * Writes random W (d, n) in `dtype` and X (t, n) (rounded for the dtype; quantized to XQ for
 * q8_0), and returns the decoded float values the naive product uses.
 */
function setupProduct(dtype: DType, n: number, d: number, t: number, seed: number) {
  const random = makeRandom(seed);
  const wValues = weights(random, n * d);
  const x = activationsFor(dtype, gaussian(random, t * n));
  if (dtype === "q8_0") {
    // Tiny blocks, so some scales d_w and d_x are f16 subnormals.
    for (let r = 0; r < d; r += 3) for (let j = 0; j < 32; j++) wValues[r * n + j] *= 1e-3;
    for (let i = 0; i < t; i += 2) for (let j = 0; j < 32; j++) x[i * n + j] *= 1e-4;
  }
  const wBytes = encode(dtype, wValues);
  put(W, wBytes);
  putF32(X, x);
  let xValues: ArrayLike<number> = x;
  if (dtype === "q8_0") {
    wasm.quantizeQ8_0(XQ, X, t * n);
    xValues = decode("q8_0", getBytes(XQ, bytesFor("q8_0", t * n)), t * n);
  }
  return { w: decode(dtype, wBytes, n * d), x: xValues };
}

function runMatvec(k: Kernels, dtype: DType, out: Ptr, n: number, d: number) {
  if (dtype === "q8_0") k.matvecQ8_0(out, XQ, W, n, d);
  else k[`matvec${cap(dtype)}` as "matvecF32"](out, X, W, n, d);
}

function runMatmul(k: Kernels, dtype: DType, out: Ptr, n: number, d: number, t: number) {
  if (dtype === "q8_0") k.matmulQ8_0(out, XQ, W, n, d, t, d);
  else k[`matmul${cap(dtype)}` as "matmulF32"](out, X, W, n, d, t, d);
}

test("loadWasmKernels gives a plain object of the module's exported functions, one per Kernels method", async () => {
  const kernels = await loadWasmKernels(arena.memory);
  expect(Object.keys(kernels).sort()).toEqual(Object.keys(ref).sort());
  // Each is the wasm export itself (native code), not a JavaScript wrapper.
  for (const fn of Object.values(kernels)) expect(String(fn)).toContain("[native code]");
});

describe("kernel builds", () => {
  test("the tests run the build KVSLIM_KERNELS names (default: relaxed where the runtime validates it)", () => {
    const forced = process.env.KVSLIM_KERNELS;
    const expected =
      forced === "portable" || forced === "relaxed" ? forced : relaxedSimdSupported() ? "relaxed" : "portable";
    expect(chooseKernelBuild()).toBe(expected);
    expect(kernelBuildOf(wasm)).toBe(expected);
    expect(kernelBuildOf(ref)).toBeUndefined();
  });

  test("a bad KVSLIM_KERNELS is a UsageError naming the variable", () => {
    const saved = process.env.KVSLIM_KERNELS;
    process.env.KVSLIM_KERNELS = "fast";
    try {
      expect(() => chooseKernelBuild()).toThrow(UsageError);
      expect(() => chooseKernelBuild()).toThrow(/KVSLIM_KERNELS must be one of portable, relaxed, got "fast"/);
      expect(chooseKernelBuild("portable")).toBe("portable"); // an explicit choice wins over the variable
    } finally {
      if (saved === undefined) delete process.env.KVSLIM_KERNELS;
      else process.env.KVSLIM_KERNELS = saved;
    }
  });

  test("both builds load where relaxed SIMD validates; asking for relaxed elsewhere is an UnsupportedError", () => {
    const portable = loadWasmKernelsSync(arena.memory, "portable");
    expect(kernelBuildOf(portable)).toBe("portable");
    if (relaxedSimdSupported()) {
      expect(kernelBuildOf(loadWasmKernelsSync(arena.memory, "relaxed"))).toBe("relaxed");
    } else {
      expect(() => chooseKernelBuild("relaxed")).toThrow(UnsupportedError);
    }
  });

  test.runIf(relaxedSimdSupported())(
    "portable and relaxed f32 matmul agree within rounding (|err| ≤ 1e-6·√n·Σ|w·x|)",
    () => {
      const portable = loadWasmKernelsSync(arena.memory, "portable");
      const relaxed = loadWasmKernelsSync(arena.memory, "relaxed");
      for (const dtype of FLOAT_DTYPES) {
        const n = 333,
          d = 17,
          t = 5;
        const { w, x } = setupProduct(dtype, n, d, t, 42);
        runMatmul(portable, dtype, OUT_WASM, n, d, t);
        runMatmul(relaxed, dtype, OUT_REF, n, d, t);
        const naive = naiveMatmul(x, w, n, d, t);
        const bound = naive.magnitude.map((m) => m * dotBound(n));
        expectWithin(getF32(OUT_WASM, t * d), getF32(OUT_REF, t * d), bound, `${dtype} portable vs relaxed`);
      }
    },
  );
});

describe("matvec", () => {
  for (const dtype of FLOAT_DTYPES) {
    test(`matvec${cap(dtype)} wasm == reference == float64 naive (|err| ≤ 1e-6·√n·Σ|w·x|)`, () => {
      for (const n of SIZES) {
        for (const d of SIZES) {
          const { w, x } = setupProduct(dtype, n, d, 1, n * 1000 + d);
          runMatvec(wasm, dtype, OUT_WASM, n, d);
          runMatvec(ref, dtype, OUT_REF, n, d);
          const naive = naiveMatmul(x, w, n, d, 1);
          const bound = naive.magnitude.map((m) => m * dotBound(n));
          expectWithin(getF32(OUT_WASM, d), getF32(OUT_REF, d), bound, `${dtype} n=${n} d=${d} wasm vs reference`);
          expectWithin(getF32(OUT_WASM, d), naive.value, bound, `${dtype} n=${n} d=${d} wasm vs naive`);
          expectWithin(getF32(OUT_REF, d), naive.value, bound, `${dtype} n=${n} d=${d} reference vs naive`);
        }
      }
    });
  }

  test("matvecQ8_0 wasm == reference bit for bit, both ≈ float64 naive (|err| ≤ 1e-6·√n·Σ|w·x|)", () => {
    for (const n of Q8_SIZES) {
      for (const d of [1, 3, 7, 17, 64, 100]) {
        const { w, x } = setupProduct("q8_0", n, d, 1, n * 1000 + d);
        runMatvec(wasm, "q8_0", OUT_WASM, n, d);
        runMatvec(ref, "q8_0", OUT_REF, n, d);
        expectBitExact(getF32(OUT_WASM, d), getF32(OUT_REF, d), `q8_0 n=${n} d=${d}`);
        const naive = naiveMatmul(x, w, n, d, 1);
        expectWithin(
          getF32(OUT_WASM, d),
          naive.value,
          naive.magnitude.map((m) => m * dotBound(n)),
          `q8_0 n=${n} d=${d} vs naive`,
        );
      }
    }
  });

  test("a matvec row is the same alone or in a group of 4 rows (bit-exact)", () => {
    for (const dtype of [...FLOAT_DTYPES, "q8_0"] as const) {
      const n = dtype === "q8_0" ? 96 : 333,
        d = 7;
      setupProduct(dtype, n, d, 1, 5);
      runMatvec(wasm, dtype, OUT_WASM, n, d);
      for (let r = 0; r < d; r++) {
        const rowBytes = bytesFor(dtype, n);
        arena.u8.copyWithin(W, W + r * rowBytes, W + (r + 1) * rowBytes);
        runMatvec(wasm, dtype, OUT_REF + 4 * r, n, 1);
        setupProduct(dtype, n, d, 1, 5);
      }
      expectBitExact(getF32(OUT_REF, d), getF32(OUT_WASM, d), dtype);
    }
  });

  test("a token's row of a matmul == the matvec of that token alone (bit-exact; every dtype, 1–13 tokens, ragged n, odd d): batched decoding relies on it", () => {
    for (const dtype of [...FLOAT_DTYPES, "q8_0"] as const) {
      const shapes =
        dtype === "q8_0"
          ? [
              [32, 7],
              [96, 9],
              [256, 64],
            ]
          : [
              [333, 7],
              [100, 9],
              [12, 5],
              [7, 3],
              [256, 64],
            ];
      for (const [n, d] of shapes) {
        for (const t of [1, 2, 3, 4, 5, 8, 13]) {
          setupProduct(dtype, n, d, t, 31 * n + t);
          runMatmul(wasm, dtype, OUT_WASM, n, d, t);
          const rowIn = dtype === "q8_0" ? (n / 32) * 34 : 4 * n;
          for (let i = 0; i < t; i++) {
            // The i-th token's activations moved to the start of the input, then one matvec.
            const input = dtype === "q8_0" ? XQ : X;
            arena.u8.copyWithin(input, input + i * rowIn, input + (i + 1) * rowIn);
            runMatvec(wasm, dtype, OUT_REF + 4 * i * d, n, d);
            setupProduct(dtype, n, d, t, 31 * n + t);
          }
          expectBitExact(getF32(OUT_REF, t * d), getF32(OUT_WASM, t * d), `${dtype} n ${n} d ${d} t ${t}`);
        }
      }
    }
  });

  test("matvecF16 / matmulF16 with activations far beyond the f16 range (|x| ~ 1e6) stay finite and == float64 (|err| ≤ 1e-6·√n·Σ|w·x|)", () => {
    const n = 96;
    const d = 8;
    const t = 3;
    const { w, x } = setupProduct("f16", n, d, t, 4242);
    const big = Float32Array.from(x, (v) => v * 1e6);
    putF32(X, big);
    const naive = naiveMatmul(big, w, n, d, t);
    const bound = naive.magnitude.map((m) => m * dotBound(n));
    for (const k of [wasm, ref]) {
      k.matvecF16(OUT_WASM, X, W, n, d);
      expectWithin(getF32(OUT_WASM, d), naive.value.subarray(0, d), bound.subarray(0, d), "matvecF16 big x");
      k.matmulF16(OUT_WASM, X, W, n, d, t, d);
      expectWithin(getF32(OUT_WASM, t * d), naive.value, bound, "matmulF16 big x");
    }
  });

  test("matvec of [[1, 2], [3, 4]] and [1, 1] is [3, 7] in every dtype (exact)", () => {
    for (const dtype of FLOAT_DTYPES) {
      put(W, encode(dtype, [1, 2, 3, 4]));
      putF32(X, [1, 1]);
      for (const k of [wasm, ref]) {
        runMatvec(k, dtype, OUT_WASM, 2, 2);
        expect(Array.from(getF32(OUT_WASM, 2)), dtype).toEqual([3, 7]);
      }
    }
  });
});

describe("matmul", () => {
  for (const dtype of FLOAT_DTYPES) {
    test(`matmul${cap(dtype)} wasm == reference == float64 naive (|err| ≤ 1e-6·√n·Σ|w·x|)`, () => {
      for (const t of TOKENS) {
        for (const n of [1, 3, 7, 17, 64, 100, 333, 1024]) {
          for (const d of [1, 3, 7, 17, 64, 100]) {
            const { w, x } = setupProduct(dtype, n, d, t, t * 1e6 + n * 1000 + d);
            runMatmul(wasm, dtype, OUT_WASM, n, d, t);
            runMatmul(ref, dtype, OUT_REF, n, d, t);
            const naive = naiveMatmul(x, w, n, d, t);
            const bound = naive.magnitude.map((m) => m * dotBound(n));
            const what = `${dtype} t=${t} n=${n} d=${d}`;
            expectWithin(getF32(OUT_WASM, t * d), getF32(OUT_REF, t * d), bound, `${what} wasm vs reference`);
            expectWithin(getF32(OUT_WASM, t * d), naive.value, bound, `${what} wasm vs naive`);
          }
        }
      }
    });
  }

  // 64-row panels of 16 KiB rows; t = 7, 9 and 2 leave rows for the 2- and 1-row tiles in every panel.
  test.each([
    [9, 70],
    [7, 200],
    [2, 200],
    [16, 200],
  ])("matmulF32 spanning several W panels, t = %i, d = %i == reference (|err| ≤ 1e-6·√n·Σ|w·x|)", (t, d) => {
    const n = 4096;
    const { w, x } = setupProduct("f32", n, d, t, 7);
    runMatmul(wasm, "f32", OUT_WASM, n, d, t);
    const naive = naiveMatmul(x, w, n, d, t);
    expectWithin(
      getF32(OUT_WASM, t * d),
      naive.value,
      naive.magnitude.map((m) => m * dotBound(n)),
      "panels",
    );
  });

  test("matmulQ8_0 wasm == reference bit for bit, == matvecQ8_0 per row, ≈ float64 naive (1e-6·√n·Σ|w·x|)", () => {
    for (const t of TOKENS) {
      for (const n of Q8_SIZES) {
        for (const d of [1, 3, 7, 17, 64]) {
          const { w, x } = setupProduct("q8_0", n, d, t, t * 1e6 + n * 1000 + d);
          runMatmul(wasm, "q8_0", OUT_WASM, n, d, t);
          runMatmul(ref, "q8_0", OUT_REF, n, d, t);
          const what = `q8_0 t=${t} n=${n} d=${d}`;
          expectBitExact(getF32(OUT_WASM, t * d), getF32(OUT_REF, t * d), what);
          const rowBytes = bytesFor("q8_0", n);
          for (let i = 0; i < t; i++) wasm.matvecQ8_0(SCRATCH_WASM + i * d * 4, XQ + i * rowBytes, W, n, d);
          expectBitExact(getF32(OUT_WASM, t * d), getF32(SCRATCH_WASM, t * d), `${what} matmul vs matvec`);
          const naive = naiveMatmul(x, w, n, d, t);
          expectWithin(
            getF32(OUT_WASM, t * d),
            naive.value,
            naive.magnitude.map((m) => m * dotBound(n)),
            `${what} vs naive`,
          );
        }
      }
    }
  });
});

describe("reads stay inside W", () => {
  // The products load lines of the next rows ahead of the arithmetic; none may read past the matrix. With W's
  // last byte at the memory's last byte, a read past it traps (RuntimeError), so equal bits here show it stays in.
  test("matvec and matmul (f32, bf16, f16, q8_0) with W ending at the memory's last byte == W elsewhere (bit-exact)", () => {
    const shapes = [
      [64, 9, 1],
      [96, 17, 1],
      [768, 12, 1],
      [64, 17, 2],
      [256, 12, 4],
      [768, 10, 8],
    ];
    for (const dtype of ["f32", "bf16", "f16", "q8_0"] as const) {
      for (const [n, d, t] of shapes) {
        setupProduct(dtype, n, d, t, n * 100 + d * 10 + t);
        const bytes = bytesFor(dtype, n * d);
        const end = arena.size - bytes;
        expect(end).toBeGreaterThanOrEqual(W + bytes); // the copy overlaps nothing the test allocated
        arena.u8.copyWithin(end, W, W + bytes);
        const [xIn, name] = dtype === "q8_0" ? [XQ, "Q8_0"] : [X, cap(dtype)];
        if (t === 1) {
          wasm[`matvec${name}` as "matvecF32"](OUT_WASM, xIn, W, n, d);
          wasm[`matvec${name}` as "matvecF32"](OUT_REF, xIn, end, n, d);
        } else {
          wasm[`matmul${name}` as "matmulF32"](OUT_WASM, xIn, W, n, d, t, d);
          wasm[`matmul${name}` as "matmulF32"](OUT_REF, xIn, end, n, d, t, d);
        }
        expectBitExact(getF32(OUT_REF, t * d), getF32(OUT_WASM, t * d), `${dtype} n=${n} d=${d} t=${t}`);
      }
    }
  });
});

describe("conversions", () => {
  test("roundF16 and roundBf16 wasm == reference == dtype.ts, bit for bit, also in place", () => {
    for (const n of SIZES) {
      const values = awkwardFloats(n, n);
      const expectF16 = Float32Array.from(values, roundF16);
      const expectBf16 = Float32Array.from(values, (v) => bf16ToF32(f32ToBf16(v)));
      for (const [name, expected] of [
        ["roundF16", expectF16],
        ["roundBf16", expectBf16],
      ] as const) {
        for (const k of [wasm, ref]) {
          putF32(X, values);
          k[name](OUT_WASM, X, n);
          expectBitExact(getF32(OUT_WASM, n), expected, `${name} n=${n}`);
          k[name](X, X, n);
          expectBitExact(getF32(X, n), expected, `${name} n=${n} in place`);
        }
      }
    }
  });

  test("quantizeQ8_0 wasm == reference == dtype.ts, bit for bit", () => {
    for (const n of [32, 96, 4096]) {
      const random = makeRandom(n);
      const values = gaussian(random, n);
      // Special blocks: all zero, one nonzero, huge, tiny (d is an f16 subnormal or 0), exact ±127 multiples.
      values.fill(0, 0, 32);
      if (n > 32) {
        values.fill(0, 32, 64);
        values[40] = -3;
      }
      if (n > 64) for (let i = 64; i < 96; i++) values[i] = (i % 2 ? 1e4 : 1e-7) * (i - 80);
      if (n > 96) for (let i = 96; i < 128; i++) values[i] = 1e-9 * (i - 110);
      if (n > 128) for (let i = 128; i < 160; i++) values[i] = (i - 144) * 2.5;
      putF32(X, values);
      const expected = encode("q8_0", values);
      wasm.quantizeQ8_0(OUT_WASM, X, n);
      ref.quantizeQ8_0(OUT_REF, X, n);
      expect(getBytes(OUT_WASM, expected.length), `wasm n=${n}`).toEqual(expected);
      expect(getBytes(OUT_REF, expected.length), `reference n=${n}`).toEqual(expected);
    }
  });

  test("getRow (f32, f16, bf16, q8_0) wasm == reference == dtype.ts decode, bit for bit", () => {
    for (const dtype of ["f32", "f16", "bf16", "q8_0"] as const) {
      for (const n of dtype === "q8_0" ? Q8_SIZES : SIZES) {
        const rows = 5,
          row = 3;
        const table = encode(dtype, weights(makeRandom(n), rows * n));
        put(W, table);
        const rowBytes = bytesFor(dtype, n);
        const expected = decode(dtype, table.slice(row * rowBytes, (row + 1) * rowBytes), n);
        const name = `getRow${cap(dtype)}` as "getRowF32";
        wasm[name](OUT_WASM, W, row, n);
        ref[name](OUT_REF, W, row, n);
        expectBitExact(getF32(OUT_WASM, n), expected, `${dtype} n=${n} wasm`);
        expectBitExact(getF32(OUT_REF, n), expected, `${dtype} n=${n} reference`);
      }
    }
  });
});

describe("element-wise", () => {
  test("rmsnorm wasm == reference == float64 (rel 1e-6), also in place", () => {
    for (const n of SIZES) {
      const random = makeRandom(n);
      const x = gaussian(random, n, 3);
      const w = gaussian(random, n);
      putF32(X, x);
      putF32(AUX, w);
      const eps = 1e-5;
      const scale = 1 / Math.sqrt(x.reduce((s, v) => s + v * v, 0) / n + eps);
      const naive = Array.from(x, (v, i) => v * scale * w[i]);
      const bound = naive.map((v) => 1e-6 * Math.abs(v));
      wasm.rmsnorm(OUT_WASM, X, AUX, n, eps);
      ref.rmsnorm(OUT_REF, X, AUX, n, eps);
      expectWithin(getF32(OUT_WASM, n), getF32(OUT_REF, n), bound, `n=${n} wasm vs reference`);
      expectWithin(getF32(OUT_WASM, n), naive, bound, `n=${n} wasm vs naive`);
      wasm.rmsnorm(X, X, AUX, n, eps);
      expectBitExact(getF32(X, n), getF32(OUT_WASM, n), `n=${n} in place`);
    }
  });

  test("rmsnorm of a constant vector c is c / sqrt(c² + eps) · w (rel 1e-6)", () => {
    putF32(X, new Float32Array(100).fill(2));
    putF32(
      AUX,
      Float32Array.from({ length: 100 }, (_, i) => i),
    );
    for (const k of [wasm, ref]) {
      k.rmsnorm(OUT_WASM, X, AUX, 100, 1e-5);
      const expected = Array.from({ length: 100 }, (_, i) => (2 / Math.sqrt(4 + 1e-5)) * i);
      expectWithin(
        getF32(OUT_WASM, 100),
        expected,
        expected.map((v) => 1e-6 * v),
        "constant",
      );
    }
  });

  test("ropeInterleaved and ropeHalves wasm == reference bit for bit, ≈ float64 rotation (abs 1e-6·|x|)", () => {
    for (const [nHeads, Hd, nRot] of [
      [1, 2, 2],
      [3, 8, 8],
      [2, 64, 64],
      [4, 64, 32],
      [2, 100, 50],
      [1, 6, 6],
      [5, 128, 128],
      [2, 10, 2],
    ]) {
      const random = makeRandom(Hd * 100 + nRot);
      const x = gaussian(random, nHeads * Hd);
      const angles = Array.from({ length: nRot / 2 }, () => random() * 2 * Math.PI);
      putF32(XQ, angles.map(Math.cos));
      putF32(AUX, angles.map(Math.sin));
      const cos = getF32(XQ, nRot / 2),
        sin = getF32(AUX, nRot / 2);
      for (const [name, pairOf] of [
        ["ropeInterleaved", (i: number) => [2 * i, 2 * i + 1]],
        ["ropeHalves", (i: number) => [i, i + nRot / 2]],
      ] as const) {
        const naive = Array.from(x);
        for (let h = 0; h < nHeads; h++) {
          for (let i = 0; i < nRot / 2; i++) {
            const [a, b] = pairOf(i).map((j) => h * Hd + j);
            naive[a] = x[a] * cos[i] - x[b] * sin[i];
            naive[b] = x[a] * sin[i] + x[b] * cos[i];
          }
        }
        putF32(OUT_WASM, x);
        putF32(OUT_REF, x);
        wasm[name](OUT_WASM, XQ, AUX, nHeads, Hd, nRot);
        ref[name](OUT_REF, XQ, AUX, nHeads, Hd, nRot);
        const what = `${name} heads=${nHeads} Hd=${Hd} nRot=${nRot}`;
        expectBitExact(getF32(OUT_WASM, nHeads * Hd), getF32(OUT_REF, nHeads * Hd), what);
        expectWithin(getF32(OUT_WASM, nHeads * Hd), naive, 1e-6 * Math.max(...x.map(Math.abs)), `${what} vs naive`);
      }
    }
  });

  test("rope rotates [1, 0] by 90° to [0, 1] (exact)", () => {
    putF32(XQ, [0]);
    putF32(AUX, [1]);
    for (const k of [wasm, ref]) {
      for (const name of ["ropeInterleaved", "ropeHalves"] as const) {
        putF32(X, [1, 0]);
        k[name](X, XQ, AUX, 1, 2, 2);
        expect(Array.from(getF32(X, 2)), name).toEqual([0, 1]);
      }
    }
  });

  test("swiglu wasm == reference == float64 (rel 1e-6, abs 1e-38), also in place", () => {
    for (const n of SIZES) {
      const random = makeRandom(n);
      const gate = gaussian(random, n, 4);
      if (n > 10) gate.set([0, -0, 100, -100, 88, -88, 1e-30, -1e-30, 20, -20]);
      const up = gaussian(random, n);
      const naive = Array.from(gate, (g, i) => (g / (1 + Math.exp(-g))) * up[i]);
      const bound = naive.map((v) => 1e-6 * Math.abs(v) + 1e-38);
      putF32(X, gate);
      putF32(AUX, up);
      wasm.swiglu(OUT_WASM, X, AUX, n);
      ref.swiglu(OUT_REF, X, AUX, n);
      expectWithin(getF32(OUT_WASM, n), getF32(OUT_REF, n), bound, `n=${n} wasm vs reference`);
      expectWithin(getF32(OUT_WASM, n), naive, bound, `n=${n} wasm vs naive`);
      wasm.swiglu(X, X, AUX, n);
      expectBitExact(getF32(X, n), getF32(OUT_WASM, n), `n=${n} in place`);
    }
  });

  test("the SIMD exp is within 1 ulp of float64 Math.exp on [-104, 89]", () => {
    const exports = new WebAssembly.Instance(getKernelModule(), { env: { memory: arena.memory } }).exports;
    const expF32 = exports.expF32 as (x: number) => number;
    let worstUlp = 0;
    for (let i = 0; i <= 200000; i++) {
      const x = Math.fround(-104 + (193 * i) / 200000);
      const exact = Math.exp(x);
      const rounded = Math.fround(exact);
      if (rounded === Infinity) continue;
      const ulp = rounded < 2 ** -126 ? 2 ** -149 : 2 ** (Math.floor(Math.log2(rounded)) - 23);
      worstUlp = Math.max(worstUlp, Math.abs(expF32(x) - exact) / ulp);
    }
    expect(worstUlp).toBeLessThanOrEqual(1);
    expect(expF32(90)).toBe(Infinity);
    expect(expF32(-Infinity)).toBe(0);
    expect(expF32(0)).toBe(1);
    expect(expF32(NaN)).toBeNaN();
  });

  test("the approximate SIMD exp (SparQ's α) is within 2.5e-7 + 2⁻²³·|x| relative of float64 Math.exp on [-87, 0]", () => {
    const exports = new WebAssembly.Instance(getKernelModule(), { env: { memory: arena.memory } }).exports;
    const expApprox = exports.expApproxF32 as (x: number) => number;
    let worst = 0;
    for (let i = 0; i <= 200000; i++) {
      const x = Math.fround(-87 * (i / 200000));
      const exact = Math.exp(x);
      worst = Math.max(worst, Math.abs(expApprox(x) - exact) / exact / (2.5e-7 + 2 ** -23 * Math.abs(x)));
    }
    expect(worst).toBeLessThanOrEqual(1);
    expect(expApprox(0)).toBeCloseTo(1, 6);
    expect(Math.abs(expApprox(-1000) / Math.exp(-87) - 1)).toBeLessThan(1e-5); // clamped, not 0
  });

  test("add wasm == reference bit for bit, also in place", () => {
    for (const n of SIZES) {
      const random = makeRandom(n);
      putF32(X, gaussian(random, n));
      putF32(AUX, gaussian(random, n));
      const expected = Float32Array.from(getF32(X, n), (v, i) => v + getF32(AUX, n)[i]);
      wasm.add(OUT_WASM, X, AUX, n);
      ref.add(OUT_REF, X, AUX, n);
      expectBitExact(getF32(OUT_WASM, n), expected, `n=${n} wasm`);
      expectBitExact(getF32(OUT_REF, n), expected, `n=${n} reference`);
      wasm.add(X, X, AUX, n);
      expectBitExact(getF32(X, n), expected, `n=${n} in place`);
    }
  });
});

describe("attention", () => {
  test("attendF32 wasm == reference == float64 naive (out: 1e-5·Σ p|v|, p: rel 1e-5)", () => {
    for (const S of [1, 2, 3, 7, 17, 100, 333]) {
      for (const Hd of [1, 3, 7, 17, 64, 100]) {
        const random = makeRandom(S * 1000 + Hd);
        const q = gaussian(random, Hd),
          K = gaussian(random, S * Hd),
          V = gaussian(random, S * Hd);
        const scale = 1 / Math.sqrt(Hd);
        putF32(X, q);
        putF32(W, K);
        putF32(AUX, V);
        const scores = Array.from(
          { length: S },
          (_, s) => q.reduce((acc, qj, j) => acc + qj * K[s * Hd + j], 0) * scale,
        );
        const max = Math.max(...scores);
        const e = scores.map((v) => Math.exp(v - max));
        const sum = e.reduce((a, b) => a + b, 0);
        const p = e.map((v) => v / sum);
        const out = Array.from({ length: Hd }, (_, j) => p.reduce((acc, ps, s) => acc + ps * V[s * Hd + j], 0));
        const outBound = Array.from(
          { length: Hd },
          (_, j) => 1e-5 * p.reduce((acc, ps, s) => acc + ps * Math.abs(V[s * Hd + j]), 0),
        );
        const pBound = p.map((v) => 1e-5 * v);
        wasm.attendF32(OUT_WASM, SCRATCH_WASM, X, W, AUX, S, Hd, scale);
        ref.attendF32(OUT_REF, SCRATCH_REF, X, W, AUX, S, Hd, scale);
        const what = `S=${S} Hd=${Hd}`;
        expectWithin(getF32(OUT_WASM, Hd), getF32(OUT_REF, Hd), outBound, `${what} out wasm vs reference`);
        expectWithin(getF32(OUT_WASM, Hd), out, outBound, `${what} out wasm vs naive`);
        expectWithin(getF32(SCRATCH_WASM, S), p, pBound, `${what} p wasm vs naive`);
        expectWithin(getF32(SCRATCH_REF, S), p, pBound, `${what} p reference vs naive`);
      }
    }
  });

  test("softmax of equal scores averages V (rel 1e-6)", () => {
    const S = 7,
      Hd = 5;
    const V = gaussian(makeRandom(1), S * Hd);
    putF32(X, [1, 2, 3, 4, 5]);
    putF32(W, new Float32Array(S * Hd).fill(0.5));
    putF32(AUX, V);
    const mean = Array.from({ length: Hd }, (_, j) => V.filter((_, i) => i % Hd === j).reduce((a, b) => a + b, 0) / S);
    for (const k of [wasm, ref]) {
      k.attendF32(OUT_WASM, SCRATCH_WASM, X, W, AUX, S, Hd, 0.125);
      expectWithin(getF32(OUT_WASM, Hd), mean, 1e-6 * Math.max(...V.map(Math.abs)), "mean of V");
      expectWithin(getF32(SCRATCH_WASM, S), new Array(S).fill(1 / S), 1e-7, "p = 1/S");
    }
  });
});
