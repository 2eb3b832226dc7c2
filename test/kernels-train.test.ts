/**
 * The f32 training kernels (assembly/train-*.ts): WASM SIMD against the TypeScript reference twin
 * (src/kernels/reference-train.ts) and against float64 naive forwards (test/helpers/train-naive.ts), on
 * ragged shapes (not multiples of 4 or 8), and every backward against central finite differences of its
 * float64 forward: Σ grad·Δ within tol·Σ|grad·Δ| of (L(x + hΔ) − L(x − hΔ)) / 2h, h = 1e-3, for
 * L = Σ r·forward(x) with a random r (the kernel's dOut) and a random direction Δ per input.
 * The kernels defined bit for bit (the backward products, RoPE backward, embeddingBackward, adamw, scale)
 * must equal their twins exactly.
 */
import { describe, expect, test } from "vitest";
import { createReferenceKernels } from "../src/kernels/reference.js";
import { loadWasmKernelsSync } from "../src/kernels/wasm.js";
import type { Kernels } from "../src/kernels/kernels.js";
import { Arena, type Ptr } from "../src/memory/arena.js";
import { expectBitExact, expectWithin, gaussian, makeRandom } from "./helpers/kernels-helpers.js";
import {
  type AttentionLayout,
  expectFiniteDifference,
  naiveCausalAttention,
  naiveCrossEntropy,
  naiveEmbedding,
  naiveLinear,
  naiveRmsnorm,
  naiveRope,
  naiveSwiglu,
  project,
} from "./helpers/train-naive.js";

const arena = new Arena(48 << 20, "the training kernel tests");
const wasm = loadWasmKernelsSync(arena.memory);
const ref = createReferenceKernels(arena.memory);
const A = arena.alloc(4 << 20); // first input (dY, x, logits, q, …)
const B = arena.alloc(4 << 20); // second input (W, X, w, k, …)
const C = arena.alloc(4 << 20); // third input (v, rstd, cos, …)
const D = arena.alloc(4 << 20); // fourth input (out, sin, targets, …)
const OUT_WASM = arena.alloc(4 << 20);
const OUT_REF = arena.alloc(4 << 20);
const OUT2_WASM = arena.alloc(4 << 20); // a second output (dW, dV, dUp, …)
const OUT2_REF = arena.alloc(4 << 20);
const OUT3_WASM = arena.alloc(4 << 20); // a third (dK, P, …)
const OUT3_REF = arena.alloc(4 << 20);
const SCRATCH = arena.alloc(4 << 20); // attention's out and P inside the backward helper

const putF32 = (ptr: Ptr, values: ArrayLike<number>) => arena.f32.set(values, ptr / 4);
const putI32 = (ptr: Ptr, values: ArrayLike<number>) => arena.i32.set(values, ptr / 4);
const getF32 = (ptr: Ptr, n: number) => arena.f32.slice(ptr / 4, ptr / 4 + n);
const maxAbs = (x: ArrayLike<number>) => Array.from(x).reduce((m, v) => Math.max(m, Math.abs(v)), 0);
const BOTH = [
  ["wasm", wasm],
  ["reference", ref],
] as const;

/**
 * Finite-difference tolerances, relative to Σ|grad·Δ|: an f32 gradient is good to ~1e-7, and the central
 * difference's truncation error (h²/6 times the third derivative) is ~1e-6 for attention's exps, less elsewhere.
 */
const FD_TOL = 1e-5;
const FD_TOL_ATTENTION = 1e-4;

describe("GEMM backward", () => {
  // (t, n, d): ragged, and one past the kernel's 256-deep K blocks and 128-column blocks.
  const SHAPES = [
    [1, 1, 1],
    [3, 5, 2],
    [4, 8, 7],
    [5, 9, 33],
    [13, 17, 8],
    [7, 130, 5],
    [6, 261, 300],
  ];

  test("matmulBackwardInput wasm == reference bit for bit, ≈ float64 dY @ W (|err| ≤ 1e-6·√(d+1)·(|dX0| + Σ|dy·w|)), = and +=, ldy > d", () => {
    for (const [t, n, d] of SHAPES) {
      const random = makeRandom(t * 1e6 + n * 1e3 + d);
      const ldy = d + 3;
      const dY = gaussian(random, t * ldy),
        w = gaussian(random, d * n),
        dX0 = gaussian(random, t * n);
      putF32(A, dY);
      putF32(B, w);
      for (const accumulate of [0, 1]) {
        putF32(OUT_WASM, dX0);
        putF32(OUT_REF, dX0);
        wasm.matmulBackwardInput(OUT_WASM, A, B, n, d, t, ldy, accumulate);
        ref.matmulBackwardInput(OUT_REF, A, B, n, d, t, ldy, accumulate);
        const what = `t=${t} n=${n} d=${d} accumulate=${accumulate}`;
        expectBitExact(getF32(OUT_WASM, t * n), getF32(OUT_REF, t * n), what);
        const value = new Float64Array(t * n),
          bound = new Float64Array(t * n);
        for (let i = 0; i < t; i++) {
          for (let j = 0; j < n; j++) {
            let sum = accumulate ? dX0[i * n + j] : 0,
              abs = Math.abs(sum);
            for (let r = 0; r < d; r++) {
              sum += dY[i * ldy + r] * w[r * n + j];
              abs += Math.abs(dY[i * ldy + r] * w[r * n + j]);
            }
            value[i * n + j] = sum;
            bound[i * n + j] = 1e-6 * Math.sqrt(d + 1) * abs;
          }
        }
        expectWithin(getF32(OUT_WASM, t * n), value, bound, `${what} vs naive`);
      }
    }
  });

  test("matmulBackwardWeight wasm == reference bit for bit, ≈ float64 dW0 + dY^T @ X (|err| ≤ 1e-6·√(t+1)·(|dW0| + Σ|dy·x|)), ldy > d", () => {
    for (const [d, n, t] of SHAPES) {
      const random = makeRandom(t * 1e6 + n * 1e3 + d + 7);
      const ldy = d + 2;
      const dY = gaussian(random, t * ldy),
        x = gaussian(random, t * n),
        dW0 = gaussian(random, d * n);
      putF32(A, dY);
      putF32(B, x);
      putF32(OUT_WASM, dW0);
      putF32(OUT_REF, dW0);
      wasm.matmulBackwardWeight(OUT_WASM, A, B, n, d, t, ldy);
      ref.matmulBackwardWeight(OUT_REF, A, B, n, d, t, ldy);
      const what = `t=${t} n=${n} d=${d}`;
      expectBitExact(getF32(OUT_WASM, d * n), getF32(OUT_REF, d * n), what);
      const value = new Float64Array(d * n),
        bound = new Float64Array(d * n);
      for (let r = 0; r < d; r++) {
        for (let j = 0; j < n; j++) {
          let sum = dW0[r * n + j],
            abs = Math.abs(sum);
          for (let i = 0; i < t; i++) {
            sum += dY[i * ldy + r] * x[i * n + j];
            abs += Math.abs(dY[i * ldy + r] * x[i * n + j]);
          }
          value[r * n + j] = sum;
          bound[r * n + j] = 1e-6 * Math.sqrt(t + 1) * abs;
        }
      }
      expectWithin(getF32(OUT_WASM, d * n), value, bound, `${what} vs naive`);
    }
  });

  test("both split by rows of their output (as threads would) give the same bits as one call", () => {
    const t = 11,
      n = 37,
      d = 13,
      ldy = d;
    const random = makeRandom(99);
    putF32(A, gaussian(random, t * ldy));
    putF32(B, gaussian(random, d * n));
    putF32(C, gaussian(random, t * n));
    // dX by rows of t: [0, 5) and [5, 11).
    wasm.matmulBackwardInput(OUT_WASM, A, B, n, d, t, ldy, 0);
    wasm.matmulBackwardInput(OUT_REF, A, B, n, d, 5, ldy, 0);
    wasm.matmulBackwardInput(OUT_REF + 4 * 5 * n, A + 4 * 5 * ldy, B, n, d, t - 5, ldy, 0);
    expectBitExact(getF32(OUT_REF, t * n), getF32(OUT_WASM, t * n), "dX rows");
    // dW by rows of d: [0, 3), [3, 10), [10, 13).
    const dW0 = gaussian(random, d * n);
    putF32(OUT2_WASM, dW0);
    putF32(OUT2_REF, dW0);
    wasm.matmulBackwardWeight(OUT2_WASM, A, C, n, d, t, ldy);
    for (const [r0, r1] of [
      [0, 3],
      [3, 10],
      [10, 13],
    ])
      wasm.matmulBackwardWeight(OUT2_REF + 4 * r0 * n, A + 4 * r0, C, n, r1 - r0, t, ldy);
    expectBitExact(getF32(OUT2_REF, d * n), getF32(OUT2_WASM, d * n), "dW rows");
  });

  test(`dX and dW of Y = X W^T == central finite differences of float64 Σ r·Y (rel ${FD_TOL})`, () => {
    for (const [t, n, d] of [
      [3, 5, 7],
      [5, 17, 9],
      [9, 33, 6],
    ]) {
      const random = makeRandom(t + n + d);
      const x = gaussian(random, t * n),
        w = gaussian(random, d * n),
        r = gaussian(random, t * d);
      putF32(A, r);
      putF32(B, w);
      putF32(C, x);
      for (const [name, k] of BOTH) {
        arena.f32.fill(0, OUT2_WASM / 4, OUT2_WASM / 4 + d * n);
        k.matmulBackwardInput(OUT_WASM, A, B, n, d, t, d, 0);
        k.matmulBackwardWeight(OUT2_WASM, A, C, n, d, t, d);
        const what = `${name} t=${t} n=${n} d=${d}`;
        expectFiniteDifference(
          (xp) => project(r, naiveLinear(xp, w, n, d, t)),
          x,
          getF32(OUT_WASM, t * n),
          random,
          FD_TOL,
          `${what} dX`,
        );
        expectFiniteDifference(
          (wp) => project(r, naiveLinear(x, wp, n, d, t)),
          w,
          getF32(OUT2_WASM, d * n),
          random,
          FD_TOL,
          `${what} dW`,
        );
      }
    }
  });

  test("d = 0 or t = 0: dX = 0 (or unchanged with accumulate), dW unchanged (exact)", () => {
    for (const [name, k] of BOTH) {
      putF32(OUT_WASM, [1, 2, 3]);
      k.matmulBackwardInput(OUT_WASM, A, B, 3, 0, 1, 0, 1);
      expect(Array.from(getF32(OUT_WASM, 3)), name).toEqual([1, 2, 3]);
      k.matmulBackwardInput(OUT_WASM, A, B, 3, 0, 1, 0, 0);
      expect(Array.from(getF32(OUT_WASM, 3)), name).toEqual([0, 0, 0]);
      putF32(OUT_WASM, [1, 2, 3]);
      k.matmulBackwardWeight(OUT_WASM, A, B, 3, 1, 0, 1);
      expect(Array.from(getF32(OUT_WASM, 3)), name).toEqual([1, 2, 3]);
    }
  });
});

describe("RMSNorm", () => {
  const SHAPES = [
    [1, 1],
    [3, 3],
    [2, 7],
    [5, 17],
    [3, 100],
    [2, 333],
  ];
  const eps = 1e-5;

  test("rmsnormForward wasm == reference == float64 (out rel 1e-6·|x·rstd·w|, rstd rel 1e-6); wasm rows == rmsnorm bit for bit", () => {
    for (const [t, n] of SHAPES) {
      const random = makeRandom(t * 1000 + n);
      const x = gaussian(random, t * n, 3),
        w = gaussian(random, n);
      putF32(A, x);
      putF32(B, w);
      const naive = naiveRmsnorm(x, w, n, t, eps);
      const what = `t=${t} n=${n}`;
      for (const [name, k, out, rstd] of [
        ["wasm", wasm, OUT_WASM, OUT2_WASM],
        ["reference", ref, OUT_REF, OUT2_REF],
      ] as const) {
        k.rmsnormForward(out, rstd, A, B, n, t, eps);
        expectWithin(
          getF32(out, t * n),
          naive.out,
          naive.out.map((v) => 1e-6 * Math.abs(v)),
          `${what} ${name} out`,
        );
        expectWithin(
          getF32(rstd, t),
          naive.rstd,
          naive.rstd.map((v) => 1e-6 * v),
          `${what} ${name} rstd`,
        );
      }
      for (let i = 0; i < t; i++) wasm.rmsnorm(OUT3_WASM + 4 * i * n, A + 4 * i * n, B, n, eps);
      expectBitExact(getF32(OUT_WASM, t * n), getF32(OUT3_WASM, t * n), `${what} vs rmsnorm`);
    }
  });

  test(`rmsnormBackward wasm == reference (|err| ≤ 1e-5·max|grad|), dX and dW == central finite differences (rel ${FD_TOL} of the terms before cancellation), = and +=`, () => {
    for (const [t, n] of SHAPES) {
      const random = makeRandom(t * 1000 + n + 1);
      const x = gaussian(random, t * n, 3),
        w = gaussian(random, n),
        r = gaussian(random, t * n);
      const dX0 = gaussian(random, t * n),
        dW0 = gaussian(random, n);
      putF32(A, x);
      putF32(B, w);
      putF32(D, r);
      wasm.rmsnormForward(OUT3_WASM, C, A, B, n, t, eps); // rstd in C
      const what = `t=${t} n=${n}`;
      for (const accumulate of [0, 1]) {
        for (const [out, out2, k] of [
          [OUT_WASM, OUT2_WASM, wasm],
          [OUT_REF, OUT2_REF, ref],
        ] as const) {
          putF32(out, dX0);
          putF32(out2, dW0);
          k.rmsnormBackward(out, out2, D, A, B, C, n, t, accumulate);
        }
        const dX = getF32(OUT_WASM, t * n),
          dW = getF32(OUT2_WASM, n);
        expectWithin(
          dX,
          getF32(OUT_REF, t * n),
          1e-5 * maxAbs(dX),
          `${what} accumulate=${accumulate} dX wasm vs reference`,
        );
        expectWithin(dW, getF32(OUT2_REF, n), 1e-5 * maxAbs(dW), `${what} dW wasm vs reference`);
        if (accumulate) continue;
        const dWOnly = dW.map((v, j) => v - dW0[j]);
        // dX = rstd · (dOut·w − x̂ · mean(dOut·w·x̂)): its size before the two terms cancel.
        const rstd = getF32(C, t),
          terms = new Float64Array(t * n);
        for (let i = 0; i < t; i++) {
          let mean = 0;
          for (let j = 0; j < n; j++) mean += Math.abs(r[i * n + j] * w[j] * x[i * n + j] * rstd[i]) / n;
          for (let j = 0; j < n; j++)
            terms[i * n + j] = rstd[i] * (Math.abs(r[i * n + j] * w[j]) + Math.abs(x[i * n + j] * rstd[i]) * mean);
        }
        expectFiniteDifference(
          (xp) => project(r, naiveRmsnorm(xp, w, n, t, eps).out),
          x,
          dX,
          random,
          FD_TOL,
          `${what} dX`,
          { terms },
        );
        expectFiniteDifference(
          (wp) => project(r, naiveRmsnorm(x, wp, n, t, eps).out),
          w,
          dWOnly,
          random,
          FD_TOL,
          `${what} dW`,
        );
      }
      // dX may equal dOut.
      putF32(OUT_WASM, r);
      wasm.rmsnormBackward(OUT_WASM, OUT2_WASM, OUT_WASM, A, B, C, n, t, 0);
      wasm.rmsnormBackward(OUT_REF, OUT2_REF, D, A, B, C, n, t, 0);
      expectBitExact(getF32(OUT_WASM, t * n), getF32(OUT_REF, t * n), `${what} in place`);
    }
  });
});

describe("element-wise backward", () => {
  const ROPE_SHAPES = [
    [1, 2, 2],
    [3, 8, 8],
    [2, 64, 64],
    [4, 64, 32],
    [2, 100, 50],
    [1, 6, 6],
    [2, 10, 2],
    [3, 14, 14],
  ];

  test(`ropeInterleavedBackward and ropeHalvesBackward wasm == reference bit for bit, invert the forward (abs 1e-6·max|x|), == finite differences (rel ${FD_TOL})`, () => {
    for (const [nHeads, Hd, nRot] of ROPE_SHAPES) {
      const random = makeRandom(Hd * 100 + nRot + nHeads);
      const x = gaussian(random, nHeads * Hd),
        r = gaussian(random, nHeads * Hd);
      const angles = Array.from({ length: nRot / 2 }, () => random() * 2 * Math.PI);
      putF32(C, angles.map(Math.cos));
      putF32(D, angles.map(Math.sin));
      const cos = getF32(C, nRot / 2),
        sin = getF32(D, nRot / 2);
      for (const halves of [false, true]) {
        const name = halves ? "ropeHalves" : "ropeInterleaved";
        const backwardName = `${name}Backward` as const;
        const what = `${name}Backward heads=${nHeads} Hd=${Hd} nRot=${nRot}`;
        putF32(OUT_WASM, r);
        putF32(OUT_REF, r);
        wasm[backwardName](OUT_WASM, C, D, nHeads, Hd, nRot);
        ref[backwardName](OUT_REF, C, D, nHeads, Hd, nRot);
        expectBitExact(getF32(OUT_WASM, nHeads * Hd), getF32(OUT_REF, nHeads * Hd), what);
        expectFiniteDifference(
          (xp) => project(r, naiveRope(xp, cos, sin, nHeads, Hd, nRot, halves)),
          x,
          getF32(OUT_WASM, nHeads * Hd),
          random,
          FD_TOL,
          what,
        );
        // Forward then backward is the identity (cos² + sin² = 1 up to f32 rounding).
        putF32(OUT_WASM, x);
        wasm[name](OUT_WASM, C, D, nHeads, Hd, nRot);
        wasm[backwardName](OUT_WASM, C, D, nHeads, Hd, nRot);
        expectWithin(getF32(OUT_WASM, nHeads * Hd), x, 1e-6 * maxAbs(x), `${what} inverts the forward`);
      }
    }
  });

  test("rope backward rotates [0, 1] by −90° to [1, 0] (exact)", () => {
    putF32(C, [0]);
    putF32(D, [1]);
    for (const [name, k] of BOTH) {
      for (const rope of ["ropeInterleavedBackward", "ropeHalvesBackward"] as const) {
        putF32(OUT_WASM, [0, 1]);
        k[rope](OUT_WASM, C, D, 1, 2, 2);
        expect(Array.from(getF32(OUT_WASM, 2)), `${name} ${rope}`).toEqual([1, 0]);
      }
    }
  });

  test(`swigluBackward wasm == reference == float64 derivative (rel 1e-6·|dOut|·(|up| + |gate|), abs 1e-37), == finite differences (rel ${FD_TOL}), in place`, () => {
    for (const n of [1, 3, 7, 17, 100, 333]) {
      const random = makeRandom(n + 5);
      const gate = gaussian(random, n, 4),
        up = gaussian(random, n),
        dOut = gaussian(random, n);
      if (n > 10) gate.set([0, -0, 100, -100, 88, -88, 1e-30, -1e-30, 20, -20]);
      putF32(A, gate);
      putF32(B, up);
      putF32(C, dOut);
      const dGate = new Float64Array(n),
        dUp = new Float64Array(n),
        bound = new Float64Array(n);
      for (let j = 0; j < n; j++) {
        const s = 1 / (1 + Math.exp(-gate[j]));
        dUp[j] = dOut[j] * gate[j] * s;
        dGate[j] = dOut[j] * up[j] * s * (1 + gate[j] * (1 - s));
        bound[j] = 1e-6 * Math.abs(dOut[j]) * (Math.abs(up[j]) + Math.abs(gate[j])) + 1e-37;
      }
      for (const [name, k, out, out2] of [
        ["wasm", wasm, OUT_WASM, OUT2_WASM],
        ["reference", ref, OUT_REF, OUT2_REF],
      ] as const) {
        k.swigluBackward(out, out2, C, A, B, n);
        expectWithin(getF32(out, n), dGate, bound, `n=${n} ${name} dGate`);
        expectWithin(getF32(out2, n), dUp, bound, `n=${n} ${name} dUp`);
      }
      // Finite differences away from the ±100 saturation (there the f64 and f32 exps differ in what they flush).
      const fdRandom = makeRandom(n);
      const gate2 = gaussian(fdRandom, n, 3);
      putF32(A, gate2);
      wasm.swigluBackward(OUT_WASM, OUT2_WASM, C, A, B, n);
      expectFiniteDifference(
        (g) => project(dOut, naiveSwiglu(g, up)),
        gate2,
        getF32(OUT_WASM, n),
        fdRandom,
        FD_TOL,
        `n=${n} dGate`,
      );
      expectFiniteDifference(
        (u) => project(dOut, naiveSwiglu(gate2, u)),
        up,
        getF32(OUT2_WASM, n),
        fdRandom,
        FD_TOL,
        `n=${n} dUp`,
      );
      // dGate may equal gate, dUp may equal up.
      putF32(OUT3_WASM, gate2);
      putF32(OUT3_REF, up);
      wasm.swigluBackward(OUT3_WASM, OUT3_REF, C, OUT3_WASM, OUT3_REF, n);
      expectBitExact(getF32(OUT3_WASM, n), getF32(OUT_WASM, n), `n=${n} dGate in place`);
      expectBitExact(getF32(OUT3_REF, n), getF32(OUT2_WASM, n), `n=${n} dUp in place`);
    }
  });

  test(`embeddingBackward wasm == reference bit for bit, ≈ float64 scatter-add (|err| ≤ 1e-6·Σ|terms|), == finite differences (rel ${FD_TOL})`, () => {
    for (const [rows, n, t] of [
      [5, 1, 3],
      [7, 9, 12],
      [50, 67, 30],
    ]) {
      const random = makeRandom(rows * n + t);
      const tokens = Array.from({ length: t }, () => Math.floor(random() * rows)); // repeats included
      const table = gaussian(random, rows * n),
        dOut = gaussian(random, t * n),
        dTable0 = gaussian(random, rows * n);
      putI32(A, tokens);
      putF32(B, dOut);
      putF32(OUT_WASM, dTable0);
      putF32(OUT_REF, dTable0);
      wasm.embeddingBackward(OUT_WASM, B, A, n, t);
      ref.embeddingBackward(OUT_REF, B, A, n, t);
      const what = `rows=${rows} n=${n} t=${t}`;
      expectBitExact(getF32(OUT_WASM, rows * n), getF32(OUT_REF, rows * n), what);
      const value = Float64Array.from(dTable0),
        magnitude = Float64Array.from(dTable0, Math.abs);
      tokens.forEach((row, i) => {
        for (let j = 0; j < n; j++) {
          value[row * n + j] += dOut[i * n + j];
          magnitude[row * n + j] += Math.abs(dOut[i * n + j]);
        }
      });
      expectWithin(
        getF32(OUT_WASM, rows * n),
        value,
        magnitude.map((m) => 1e-6 * m),
        `${what} vs naive`,
      );
      arena.f32.fill(0, OUT_WASM / 4, OUT_WASM / 4 + rows * n);
      wasm.embeddingBackward(OUT_WASM, B, A, n, t);
      expectFiniteDifference(
        (tp) => project(dOut, naiveEmbedding(tp, tokens, n)),
        table,
        getF32(OUT_WASM, rows * n),
        random,
        FD_TOL,
        what,
      );
    }
  });
});

describe("attention", () => {
  /**
   * A group of g heads inside wider buffers: q (T, 2g·Hd + 3) from float g·Hd + 1 of each row (the
   * second KV head's group, with padding), K, V (T, 2·Hd + 1) from float Hd.
   */
  function layout(T: number, Hd: number, g: number): AttentionLayout {
    return {
      T,
      Hd,
      g,
      qStride: 2 * g * Hd + 3,
      kvStride: 2 * Hd + 1,
      qAt: g * Hd + 1,
      kvAt: Hd,
      scale: 1 / Math.sqrt(Hd),
    };
  }
  const SHAPES = [
    [1, 4, 1],
    [5, 4, 1],
    [7, 5, 3],
    [13, 8, 1],
    [13, 12, 3],
    [10, 16, 2],
    [37, 7, 2],
  ];

  /** Random q, K, V and dOut written to A, B, C, D; the buffers' floats (padding included). */
  function setup(L: AttentionLayout, seed: number) {
    const random = makeRandom(seed);
    const q = gaussian(random, L.T * L.qStride, 1.5),
      k = gaussian(random, L.T * L.kvStride, 1.5);
    const v = gaussian(random, L.T * L.kvStride),
      r = gaussian(random, L.T * L.qStride);
    putF32(A, q);
    putF32(B, k);
    putF32(C, v);
    putF32(D, r);
    return { random, q, k, v, r };
  }
  const qAt = (L: AttentionLayout) => 4 * L.qAt,
    kvAt = (L: AttentionLayout) => 4 * L.kvAt;

  /** attentionForward of k into out, p (A, B, C hold q, K, V). */
  function forward(k: Kernels, L: AttentionLayout, out: Ptr, p: Ptr) {
    k.attentionForward(
      out + qAt(L),
      p,
      A + qAt(L),
      B + kvAt(L),
      C + kvAt(L),
      L.T,
      L.Hd,
      L.g,
      L.qStride,
      L.kvStride,
      L.scale,
    );
  }

  test("attentionForward wasm == reference == float64 (out: 1e-5·Σ p|v| + 1e-6·max|v|, p: 2e-6 + 1e-5·p), strided slices", () => {
    for (const [T, Hd, g] of SHAPES) {
      const L = layout(T, Hd, g);
      const { q, k, v } = setup(L, T * 100 + Hd * 10 + g);
      const naive = naiveCausalAttention(q, k, v, L);
      const what = `T=${T} Hd=${Hd} g=${g}`;
      const outBound = naive.magnitude.map((m) => 1e-5 * m + 1e-6 * maxAbs(v));
      for (const [name, kernels, out, p] of [
        ["wasm", wasm, OUT_WASM, OUT3_WASM],
        ["reference", ref, OUT_REF, OUT3_REF],
      ] as const) {
        arena.f32.fill(0, out / 4, out / 4 + T * L.qStride);
        forward(kernels, L, out, p);
        expectWithin(getF32(out, T * L.qStride), naive.out, outBound, `${what} ${name} out`);
        const pGot = getF32(p, g * T * T);
        for (let i = 0; i < g * T * T; i++) if (i % T > Math.floor(i / T) % T) pGot[i] = 0; // u > t: not written
        expectWithin(
          pGot,
          naive.p,
          naive.p.map((x) => 2e-6 + 1e-5 * x),
          `${what} ${name} p`,
        );
      }
    }
  });

  test("attentionForward with kvStride = Hd == attentionCausalF32 (S0 = 0), out and p (bit-exact)", () => {
    for (const [T, Hd, g] of SHAPES) {
      const L: AttentionLayout = { T, Hd, g, qStride: g * Hd, kvStride: Hd, qAt: 0, kvAt: 0, scale: 1 / Math.sqrt(Hd) };
      setup(L, T + Hd + g);
      wasm.attentionForward(OUT_WASM, OUT3_WASM, A, B, C, T, Hd, g, g * Hd, Hd, L.scale);
      wasm.attentionCausalF32(OUT_REF, OUT3_REF, A, B, C, 0, T, Hd, g, g * Hd, L.scale);
      const what = `T=${T} Hd=${Hd} g=${g}`;
      expectBitExact(getF32(OUT_WASM, T * g * Hd), getF32(OUT_REF, T * g * Hd), `${what} out`);
      for (let h = 0; h < g; h++) {
        for (let t = 0; t < T; t++) {
          // P (g, T, T) row (h, t) vs scores (T, g, T) row (t, h), first t + 1 floats.
          const mine = getF32(OUT3_WASM + 4 * (h * T + t) * T, t + 1),
            theirs = getF32(OUT3_REF + 4 * (t * g + h) * T, t + 1);
          expectBitExact(mine, theirs, `${what} p h=${h} t=${t}`);
        }
      }
    }
  });

  /**
   * Runs attentionForward, then attentionBackwardPV and attentionBackwardQK with dOut = r (in D) on
   * `kernels`: dQ, dK, dV in outs (dK, dV starting from dK0, dV0), out and P in SCRATCH, dS over P.
   */
  function backward(
    kernels: Kernels,
    L: AttentionLayout,
    outs: readonly [Ptr, Ptr, Ptr],
    dK0: Float32Array,
    dV0: Float32Array,
  ) {
    const [dQ, dK, dV] = outs;
    const out = SCRATCH,
      p = SCRATCH + (2 << 20);
    arena.f32.fill(0, dQ / 4, dQ / 4 + L.T * L.qStride);
    putF32(dK, dK0);
    putF32(dV, dV0);
    forward(kernels, L, out, p);
    kernels.attentionBackwardPV(
      p,
      dV + kvAt(L),
      D + qAt(L),
      out + qAt(L),
      C + kvAt(L),
      p,
      L.T,
      L.Hd,
      L.g,
      L.qStride,
      L.kvStride,
    );
    kernels.attentionBackwardQK(
      dQ + qAt(L),
      dK + kvAt(L),
      p,
      A + qAt(L),
      B + kvAt(L),
      L.T,
      L.Hd,
      L.g,
      L.qStride,
      L.kvStride,
      L.scale,
    );
    return { dQ: getF32(dQ, L.T * L.qStride), dK: getF32(dK, L.T * L.kvStride), dV: getF32(dV, L.T * L.kvStride) };
  }

  test(`attentionBackwardPV + attentionBackwardQK: dQ, dK, dV == central finite differences of float64 attention (rel ${FD_TOL_ATTENTION}), g = 1, 2, 3, T not a multiple of 4, strided slices`, () => {
    for (const [T, Hd, g] of SHAPES) {
      const L = layout(T, Hd, g);
      const { random, q, k, v, r } = setup(L, T * 7 + Hd + g);
      const zeros = new Float32Array(T * L.kvStride);
      const inQ = (i: number) => i % L.qStride >= L.qAt && i % L.qStride < L.qAt + g * Hd;
      const inKV = (i: number) => i % L.kvStride >= L.kvAt && i % L.kvStride < L.kvAt + Hd;
      const rGroup = r.map((x, i) => (inQ(i) ? x : 0));
      const loss = (qp: ArrayLike<number>, kp: ArrayLike<number>, vp: ArrayLike<number>) =>
        project(rGroup, naiveCausalAttention(qp, kp, vp, L).out);
      for (const [name, kernels, outs] of [
        ["wasm", wasm, [OUT_WASM, OUT2_WASM, OUT3_WASM]],
        ["reference", ref, [OUT_REF, OUT2_REF, OUT3_REF]],
      ] as const) {
        const { dQ, dK, dV } = backward(kernels, L, outs, zeros, zeros);
        const what = `${name} T=${T} Hd=${Hd} g=${g}`;
        expectFiniteDifference((qp) => loss(qp, k, v), q, dQ, random, FD_TOL_ATTENTION, `${what} dQ`, { mask: inQ });
        expectFiniteDifference((kp) => loss(q, kp, v), k, dK, random, FD_TOL_ATTENTION, `${what} dK`, { mask: inKV });
        expectFiniteDifference((vp) => loss(q, k, vp), v, dV, random, FD_TOL_ATTENTION, `${what} dV`, { mask: inKV });
        // Nothing outside the group's slots is written.
        expect(maxAbs(dQ.filter((_, i) => !inQ(i))), `${what} dQ padding`).toBe(0);
        expect(
          maxAbs(dK.filter((_, i) => !inKV(i))) + maxAbs(dV.filter((_, i) => !inKV(i))),
          `${what} dK, dV padding`,
        ).toBe(0);
      }
    }
  });

  test("attention backward wasm == reference (|err| ≤ 1e-5·max|grad|), dK and dV accumulate (+=, 1e-5·max|grad|)", () => {
    for (const [T, Hd, g] of SHAPES) {
      const L = layout(T, Hd, g);
      const { random } = setup(L, T * 11 + Hd + g);
      const dK0 = gaussian(random, T * L.kvStride),
        dV0 = gaussian(random, T * L.kvStride);
      const got = backward(wasm, L, [OUT_WASM, OUT2_WASM, OUT3_WASM], dK0, dV0);
      const expected = backward(ref, L, [OUT_REF, OUT2_REF, OUT3_REF], dK0, dV0);
      const fresh = backward(
        ref,
        L,
        [OUT_REF, OUT2_REF, OUT3_REF],
        new Float32Array(dK0.length),
        new Float32Array(dV0.length),
      );
      const what = `T=${T} Hd=${Hd} g=${g}`;
      for (const key of ["dQ", "dK", "dV"] as const) {
        const scale = Math.max(maxAbs(expected[key]), maxAbs(fresh[key]));
        expectWithin(got[key], expected[key], 1e-5 * scale, `${what} ${key}`);
      }
      expectWithin(
        expected.dK,
        fresh.dK.map((x, i) => x + dK0[i]),
        1e-5 * maxAbs(expected.dK),
        `${what} dK accumulates`,
      );
      expectWithin(
        expected.dV,
        fresh.dV.map((x, i) => x + dV0[i]),
        1e-5 * maxAbs(expected.dV),
        `${what} dV accumulates`,
      );
    }
  });

  test("attentionBackwardPV with dS separate from P == dS over P (bit-exact)", () => {
    const L = layout(13, 12, 3);
    setup(L, 5);
    forward(wasm, L, OUT_WASM, OUT3_WASM);
    const n = L.g * L.T * L.T;
    arena.f32.copyWithin(OUT3_REF / 4, OUT3_WASM / 4, OUT3_WASM / 4 + n);
    arena.f32.fill(0, OUT2_WASM / 4, OUT2_WASM / 4 + L.T * L.kvStride);
    arena.f32.fill(0, OUT2_REF / 4, OUT2_REF / 4 + L.T * L.kvStride);
    const args = [D + qAt(L), OUT_WASM + qAt(L), C + kvAt(L)] as const;
    wasm.attentionBackwardPV(OUT_REF, OUT2_REF, ...args, OUT3_REF, L.T, L.Hd, L.g, L.qStride, L.kvStride);
    wasm.attentionBackwardPV(OUT3_WASM, OUT2_WASM, ...args, OUT3_WASM, L.T, L.Hd, L.g, L.qStride, L.kvStride);
    for (let h = 0; h < L.g; h++) {
      for (let t = 0; t < L.T; t++) {
        const at = 4 * (h * L.T + t) * L.T;
        expectBitExact(getF32(OUT3_WASM + at, t + 1), getF32(OUT_REF + at, t + 1), `dS h=${h} t=${t}`);
      }
    }
    expectBitExact(getF32(OUT2_WASM, L.T * L.kvStride), getF32(OUT2_REF, L.T * L.kvStride), "dV");
  });
});

describe("cross-entropy", () => {
  test(`crossEntropy wasm == reference == float64 (loss: 1e-6·(1 + |loss|), dLogits: 1e-6·scale), ignored rows, == finite differences (rel ${FD_TOL})`, () => {
    for (const [t, V] of [
      [1, 1],
      [3, 5],
      [4, 17],
      [6, 100],
      [5, 1003],
    ]) {
      const random = makeRandom(t * 1000 + V);
      const logits = gaussian(random, t * V, 3);
      const targets = Array.from({ length: t }, (_, i) => (i % 3 === 1 ? -1 : Math.floor(random() * V)));
      const counted = targets.filter((x) => x >= 0).length;
      const scale = 1 / Math.max(1, counted);
      putF32(A, logits);
      putI32(B, targets);
      const naive = naiveCrossEntropy(logits, targets, V);
      const dNaive = new Float64Array(t * V);
      for (let i = 0; i < t; i++) {
        if (targets[i] < 0) continue;
        const lse = naive[i] + logits[i * V + targets[i]];
        for (let j = 0; j < V; j++)
          dNaive[i * V + j] = (Math.exp(logits[i * V + j] - lse) - (j === targets[i] ? 1 : 0)) * scale;
      }
      const what = `t=${t} V=${V}`;
      for (const [name, k, losses, d] of [
        ["wasm", wasm, OUT2_WASM, OUT_WASM],
        ["reference", ref, OUT2_REF, OUT_REF],
      ] as const) {
        k.crossEntropy(losses, d, A, B, V, t, scale);
        expectWithin(
          getF32(losses, t),
          naive,
          naive.map((l) => 1e-6 * (1 + Math.abs(l))),
          `${what} ${name} loss`,
        );
        expectWithin(getF32(d, t * V), dNaive, 1e-6 * scale, `${what} ${name} dLogits`);
        const lossOf = (x: Float64Array) => scale * naiveCrossEntropy(x, targets, V).reduce((a, b) => a + b, 0);
        expectFiniteDifference(lossOf, logits, getF32(d, t * V), random, FD_TOL, `${what} ${name}`);
      }
      // In place: dLogits over logits.
      wasm.crossEntropy(OUT3_WASM, A, A, B, V, t, scale);
      expectBitExact(getF32(A, t * V), getF32(OUT_WASM, t * V), `${what} in place dLogits`);
      expectBitExact(getF32(OUT3_WASM, t), getF32(OUT2_WASM, t), `${what} in place loss`);
    }
  });

  test("crossEntropy of huge logits (±1e4, equal maxima) stays finite == float64 (rel 1e-6)", () => {
    const V = 9,
      logits = [1e4, -1e4, 1e4, 0, 5, -3, 1e4 - 1, 2, 1, 3e4, 3e4, -3e4, 0, 0, 0, 0, 0, 0];
    const targets = [3, 1];
    putF32(A, logits);
    putI32(B, targets);
    const naive = naiveCrossEntropy(Float32Array.from(logits), targets, V);
    for (const [name, k] of BOTH) {
      k.crossEntropy(OUT2_WASM, OUT_WASM, A, B, V, 2, 0.5);
      expectWithin(
        getF32(OUT2_WASM, 2),
        naive,
        naive.map((l) => 1e-6 * l),
        `${name} loss`,
      );
      expect(getF32(OUT_WASM, 2 * V).every(Number.isFinite), `${name} dLogits finite`).toBe(true);
    }
  });
});

describe("optimizer", () => {
  const SIZES = [1, 3, 7, 17, 100, 1031];

  test("adamw wasm == reference bit for bit, ≈ float64 AdamW (rel 1e-6 of each update's terms)", () => {
    for (const n of SIZES) {
      for (const step of [1, 2, 1000]) {
        const random = makeRandom(n * 10 + step);
        const p = gaussian(random, n),
          g = gaussian(random, n, 0.1),
          m = gaussian(random, n, 0.01);
        const v = Float32Array.from(gaussian(random, n, 0.01), (x) => x * x);
        const [lr, beta1, beta2, eps, wd] = [3e-4, 0.9, 0.95, 1e-8, 0.1];
        const bc1 = 1 - beta1 ** step,
          bc2 = 1 - beta2 ** step;
        putF32(A, g);
        for (const [pp, mm, vv] of [
          [OUT_WASM, OUT2_WASM, OUT3_WASM],
          [OUT_REF, OUT2_REF, OUT3_REF],
        ]) {
          putF32(pp, p);
          putF32(mm, m);
          putF32(vv, v);
        }
        wasm.adamw(OUT_WASM, OUT2_WASM, OUT3_WASM, A, n, lr, beta1, beta2, eps, wd, bc1, bc2);
        ref.adamw(OUT_REF, OUT2_REF, OUT3_REF, A, n, lr, beta1, beta2, eps, wd, bc1, bc2);
        const what = `n=${n} step=${step}`;
        expectBitExact(getF32(OUT_WASM, n), getF32(OUT_REF, n), `${what} p`);
        expectBitExact(getF32(OUT2_WASM, n), getF32(OUT2_REF, n), `${what} m`);
        expectBitExact(getF32(OUT3_WASM, n), getF32(OUT3_REF, n), `${what} v`);
        const mNew = m.map((x, j) => beta1 * x + (1 - beta1) * g[j]);
        const vNew = Array.from(v, (x, j) => beta2 * x + (1 - beta2) * g[j] * g[j]);
        const step64 = p.map((_, j) => mNew[j] / bc1 / (Math.sqrt(vNew[j] / bc2) + eps) + wd * p[j]);
        const pNew = p.map((x, j) => x - lr * step64[j]);
        expectWithin(
          getF32(OUT2_WASM, n),
          mNew,
          m.map((x, j) => 1e-6 * (Math.abs(beta1 * x) + Math.abs((1 - beta1) * g[j]))),
          `${what} m vs naive`,
        );
        expectWithin(
          getF32(OUT3_WASM, n),
          vNew,
          vNew.map((x) => 1e-6 * x + 1e-15),
          `${what} v vs naive`,
        );
        expectWithin(
          getF32(OUT_WASM, n),
          pNew,
          p.map((x, j) => 1e-6 * Math.abs(x) + 1e-6 * lr * Math.abs(step64[j])),
          `${what} p vs naive`,
        );
      }
    }
  });

  test("sumSquares wasm == reference == float64 Σx² (rel 1e-6); scale wasm == reference bit for bit == f32(x·alpha)", () => {
    for (const n of [0, ...SIZES]) {
      const random = makeRandom(n + 3);
      const x = gaussian(random, n, 1e-3);
      putF32(A, x);
      const naive = x.reduce((s, v) => s + v * v, 0);
      for (const [name, k] of BOTH) {
        k.sumSquares(OUT_WASM, A, n);
        expectWithin(getF32(OUT_WASM, 1), [naive], 1e-6 * naive, `n=${n} ${name} sumSquares`);
      }
      putF32(OUT_WASM, x);
      putF32(OUT_REF, x);
      wasm.scale(OUT_WASM, n, 0.3);
      ref.scale(OUT_REF, n, 0.3);
      expectBitExact(getF32(OUT_WASM, n), getF32(OUT_REF, n), `n=${n} scale`);
      expectBitExact(
        getF32(OUT_WASM, n),
        x.map((v) => v * Math.fround(0.3)),
        `n=${n} scale vs naive`,
      );
    }
  });
});
