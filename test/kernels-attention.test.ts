/**
 * The attention kernels for SparQ and the KV-cache baselines: WASM SIMD against the TypeScript
 * reference twin and against float64 naive computations (test/helpers/kernels-helpers.ts), on ragged
 * shapes (S, Hd not multiples of 4 or 8, g = 1..4, up to 8 for the bit-identities), plus the
 * bit-identities the callers rely on:
 * attention* == g × attendF32, attendRows* == attention* on the gathered rows, attentionCausal* ==
 * attention* once per query row, bf16 == f32 on the decoded values, strided SparQ scores == d-major ones, and the exactly defined kernels
 * (sparqScores*, topK, packBf16, storeColumn*) == their twins bit for bit.
 */
import { describe, expect, test } from "vitest";
import { bf16ToF32, f32BitsToBf16, f32ToBf16 } from "../src/memory/dtype.js";
import type { Ptr } from "../src/memory/arena.js";
import {
  awkwardFloats,
  expectBitExact,
  expectWithin,
  firstByteDifference,
  gaussian,
  makeRandom,
  naiveAttention,
  naiveOrder,
  naiveSparqScores,
  naiveTopK,
  range,
  rowIndices,
} from "./helpers/kernels-helpers.js";
import {
  arena,
  wasm,
  ref,
  K,
  V,
  K16,
  V16,
  KG,
  VG,
  Q,
  IDX,
  SCALE,
  OUT_WASM,
  OUT_REF,
  OUT_2,
  SCORES_WASM,
  SCORES_REF,
  SCORES_2,
  SCRATCH,
  QT,
  SCORES_T,
  SCORES_T2,
  putF32,
  putI32,
  getF32,
  getI32,
  getU16,
  putBf16,
  decodedBf16,
} from "./helpers/attention-kernels.js";
import { type Dtype, SEQ, HEAD_DIMS, GROUPS, ALL_GROUPS, shapes } from "./helpers/attention-kernels.js";

/**
 * Random q (g, Hd), K, V (S, Hd) written to Q and to K, V (f32) and K16, V16 (bf16); returns the
 * values the kernels of `dtype` see (decoded bf16 for Bf16, also left in K, V).
 */
function setupAttention(dtype: Dtype, S: number, Hd: number, g: number, seed: number) {
  const random = makeRandom(seed);
  const q = gaussian(random, g * Hd);
  let k = gaussian(random, S * Hd),
    v = gaussian(random, S * Hd);
  putF32(Q, q);
  if (dtype === "Bf16") {
    putBf16(K16, k);
    putBf16(V16, v);
    k = decodedBf16(k);
    v = decodedBf16(v);
  }
  putF32(K, k);
  putF32(V, v);
  return { q, k, v };
}

describe("attention", () => {
  for (const dtype of ["F32", "Bf16"] as const) {
    test(`attention${dtype} wasm == reference == float64 naive (out: (1e-5 + 2δ)·Σ p|v|, p: rel 1e-5 + 2δ, δ = 2e-7·√Hd·max Σ|q k|·scale)`, () => {
      for (const { S, Hd, g, seed } of shapes()) {
        const { q, k, v } = setupAttention(dtype, S, Hd, g, seed);
        const scale = 1 / Math.sqrt(Hd);
        const kv = dtype === "F32" ? [K, V] : [K16, V16];
        wasm[`attention${dtype}`](OUT_WASM, SCORES_WASM, Q, kv[0], kv[1], S, Hd, g, scale);
        ref[`attention${dtype}`](OUT_REF, SCORES_REF, Q, kv[0], kv[1], S, Hd, g, scale);
        const naive = naiveAttention(q, k, v, range(S), Hd, g, scale);
        const what = `S=${S} Hd=${Hd} g=${g}`;
        expectWithin(
          getF32(OUT_WASM, g * Hd),
          getF32(OUT_REF, g * Hd),
          naive.outBound,
          `${what} out wasm vs reference`,
        );
        expectWithin(getF32(OUT_WASM, g * Hd), naive.out, naive.outBound, `${what} out wasm vs naive`);
        expectWithin(getF32(OUT_REF, g * Hd), naive.out, naive.outBound, `${what} out reference vs naive`);
        expectWithin(getF32(SCORES_WASM, g * S), naive.p, naive.pBound, `${what} p wasm vs naive`);
        expectWithin(getF32(SCORES_REF, g * S), naive.p, naive.pBound, `${what} p reference vs naive`);
      }
    });
  }

  test("attentionF32 with g heads (g ≤ 8) == g separate attendF32 calls, out and p (bit-exact)", () => {
    for (const { S, Hd, g, seed } of shapes(SEQ, ALL_GROUPS)) {
      setupAttention("F32", S, Hd, g, seed);
      const scale = 1 / Math.sqrt(Hd);
      wasm.attentionF32(OUT_WASM, SCORES_WASM, Q, K, V, S, Hd, g, scale);
      for (let h = 0; h < g; h++)
        wasm.attendF32(OUT_2 + 4 * h * Hd, SCORES_2 + 4 * h * S, Q + 4 * h * Hd, K, V, S, Hd, scale);
      const what = `S=${S} Hd=${Hd} g=${g}`;
      expectBitExact(getF32(OUT_WASM, g * Hd), getF32(OUT_2, g * Hd), `${what} out`);
      expectBitExact(getF32(SCORES_WASM, g * S), getF32(SCORES_2, g * S), `${what} p`);
    }
  });

  test("attentionBf16 == attentionF32 on the decoded K, V, out and p (bit-exact)", () => {
    for (const { S, Hd, g, seed } of shapes(SEQ, ALL_GROUPS)) {
      setupAttention("Bf16", S, Hd, g, seed);
      const scale = 1 / Math.sqrt(Hd);
      wasm.attentionBf16(OUT_WASM, SCORES_WASM, Q, K16, V16, S, Hd, g, scale);
      wasm.attentionF32(OUT_2, SCORES_2, Q, K, V, S, Hd, g, scale);
      const what = `S=${S} Hd=${Hd} g=${g}`;
      expectBitExact(getF32(OUT_WASM, g * Hd), getF32(OUT_2, g * Hd), `${what} out`);
      expectBitExact(getF32(SCORES_WASM, g * S), getF32(SCORES_2, g * S), `${what} p`);
    }
  });

  test("attention of equal scores averages V, p = 1/S (rel 1e-6)", () => {
    const S = 7,
      Hd = 5,
      g = 2;
    const values = gaussian(makeRandom(1), S * Hd);
    putF32(Q, range(g * Hd));
    putF32(K, new Float32Array(S * Hd).fill(0.5));
    putF32(V, values);
    const mean = range(Hd).map((j) => range(S).reduce((acc, s) => acc + values[s * Hd + j], 0) / S);
    for (const k of [wasm, ref]) {
      k.attentionF32(OUT_WASM, SCORES_WASM, Q, K, V, S, Hd, g, 0.125);
      expectWithin(getF32(OUT_WASM, g * Hd), [...mean, ...mean], 1e-6 * Math.max(...values.map(Math.abs)), "mean of V");
      expectWithin(getF32(SCORES_WASM, g * S), new Array(g * S).fill(1 / S), 1e-7, "p = 1/S");
    }
  });
});

describe("softmax", () => {
  test("sparqAlpha wasm == reference == float64 per head (|err| ≤ 1e-6·α), clamped to 1; approx untouched", () => {
    for (const [S, g] of [
      [1, 1],
      [3, 2],
      [17, 1],
      [100, 4],
      [1031, 3],
      [16384, 1],
      [16391, 2],
    ]) {
      const random = makeRandom(S * 7 + g);
      const x = gaussian(random, g * S, 4);
      // A far-below entry (its exp is below e^-87) and selections of several sizes, in ascending order.
      if (S > 5) x[2] = x[0] - 120;
      for (const n of [...new Set([1, Math.ceil(S / 16), Math.ceil(S / 3), S])]) {
        const idx = rowIndices(random, S, n, "ascending");
        putI32(IDX, idx);
        const expected = range(g).map((h) => {
          const row = x.subarray(h * S, (h + 1) * S);
          const max = row.reduce((a, b) => Math.max(a, b), -Infinity);
          const e = (v: number) => Math.exp(Math.max(v - max, -87));
          const total = row.reduce((acc, v) => acc + e(v), 0);
          return Math.min(1, idx.reduce((acc, i) => acc + e(row[i]), 0) / total);
        });
        for (const [k, label] of [
          [wasm, "wasm"],
          [ref, "reference"],
        ] as const) {
          putF32(K, x);
          k.sparqAlpha(OUT_WASM, K, IDX, n, S, g);
          const alpha = getF32(OUT_WASM, g);
          for (let h = 0; h < g; h++) {
            expect(Math.abs(alpha[h] - expected[h]), `${label} S=${S} g=${g} n=${n} h=${h}`).toBeLessThanOrEqual(
              1e-6 * expected[h],
            );
            expect(alpha[h]).toBeLessThanOrEqual(1);
          }
          expect(getF32(K, g * S)).toEqual(Float32Array.from(x));
        }
      }
    }
  });

  // x - max is rounded to f32 before the exp: a relative error up to 2⁻²⁴·|x - max| in e^(x - max),
  // in each term and (weighted by p) in the sum.
  test("softmaxF32 wasm == reference == float64 (|err| ≤ p·(1e-6 + 2⁻²⁴·(|x − max| + Σ p|x − max|)) + 1e-38), -Infinity gives 0", () => {
    for (const n of [1, 2, 3, 4, 5, 17, 100, 1031]) {
      const x = gaussian(makeRandom(n), n, 5);
      // A masked entry, and a gap big enough that e^(x - max) is subnormal or underflows.
      if (n > 2) x[1] = -Infinity;
      if (n > 4) x[3] = x[0] - 95;
      if (n > 5) x[4] = x[0] - 200;
      const max = Math.max(...x);
      const sum = x.reduce((acc, v) => acc + Math.exp(v - max), 0);
      const naive = Array.from(x, (v) => Math.exp(v - max) / sum);
      const spread = naive.reduce((acc, p, i) => acc + (p === 0 ? 0 : p * (max - x[i])), 0);
      const bound = naive.map((p, i) => p * (1e-6 + 2 ** -24 * (max - x[i] + spread)) + 1e-38);
      for (const [k, out] of [
        [wasm, OUT_WASM],
        [ref, OUT_REF],
      ] as const) {
        putF32(out, x);
        k.softmaxF32(out, n);
        expectWithin(getF32(out, n), naive, bound, `n=${n} ${k === wasm ? "wasm" : "reference"} vs naive`);
        if (n > 2) expect(getF32(out, n)[1], "masked entry").toBe(0);
      }
    }
  });
});

/** Copies rows `rows` of the (S, Hd) tables at k, v (element size `bytes`) to KG, VG, in order. */
function gatherRows(k: Ptr, v: Ptr, rows: number[], Hd: number, bytes: number) {
  const rowBytes = Hd * bytes;
  rows.forEach((row, s) => {
    arena.u8.copyWithin(KG + s * rowBytes, k + row * rowBytes, k + (row + 1) * rowBytes);
    arena.u8.copyWithin(VG + s * rowBytes, v + row * rowBytes, v + (row + 1) * rowBytes);
  });
}

/** The row selections the attendRows tests use for S positions: few, a third, all, and repeats in any order. */
function selections(random: () => number, S: number): number[][] {
  return [
    rowIndices(random, S, 1, "ascending"),
    rowIndices(random, S, Math.ceil(S / 3), "ascending"),
    rowIndices(random, S, S, "ascending"),
    rowIndices(random, S, S + 5, "any"),
  ];
}

describe("attendRows", () => {
  for (const dtype of ["F32", "Bf16"] as const) {
    test(`attendRows${dtype} == attention${dtype} on the rows gathered in idx order, out and p (bit-exact)`, () => {
      for (const { S, Hd, g, seed } of shapes(SEQ, ALL_GROUPS)) {
        setupAttention(dtype, S, Hd, g, seed);
        const scale = 1 / Math.sqrt(Hd);
        const [k, v, bytes] = dtype === "F32" ? [K, V, 4] : [K16, V16, 2];
        for (const rows of selections(makeRandom(seed), S)) {
          const n = rows.length;
          putI32(IDX, rows);
          wasm[`attendRows${dtype}`](OUT_WASM, SCORES_WASM, Q, k, v, IDX, n, Hd, g, scale);
          gatherRows(k, v, rows, Hd, bytes);
          wasm[`attention${dtype}`](OUT_2, SCORES_2, Q, KG, VG, n, Hd, g, scale);
          const what = `S=${S} Hd=${Hd} g=${g} n=${n}`;
          expectBitExact(getF32(OUT_WASM, g * Hd), getF32(OUT_2, g * Hd), `${what} out`);
          expectBitExact(getF32(SCORES_WASM, g * n), getF32(SCORES_2, g * n), `${what} p`);
        }
      }
    });

    test(`attendRows${dtype} wasm == reference == float64 naive (out: (1e-5 + 2δ)·Σ p|v|, p: rel 1e-5 + 2δ)`, () => {
      for (const { S, Hd, g, seed } of shapes([3, 17, 100])) {
        const { q, k, v } = setupAttention(dtype, S, Hd, g, seed);
        const scale = 1 / Math.sqrt(Hd);
        const [kPtr, vPtr] = dtype === "F32" ? [K, V] : [K16, V16];
        for (const rows of selections(makeRandom(seed + 1), S)) {
          const n = rows.length;
          putI32(IDX, rows);
          wasm[`attendRows${dtype}`](OUT_WASM, SCORES_WASM, Q, kPtr, vPtr, IDX, n, Hd, g, scale);
          ref[`attendRows${dtype}`](OUT_REF, SCORES_REF, Q, kPtr, vPtr, IDX, n, Hd, g, scale);
          const naive = naiveAttention(q, k, v, rows, Hd, g, scale);
          const what = `S=${S} Hd=${Hd} g=${g} n=${n}`;
          expectWithin(getF32(OUT_WASM, g * Hd), naive.out, naive.outBound, `${what} out wasm vs naive`);
          expectWithin(getF32(OUT_REF, g * Hd), naive.out, naive.outBound, `${what} out reference vs naive`);
          expectWithin(getF32(SCORES_WASM, g * n), naive.p, naive.pBound, `${what} p wasm vs naive`);
          expectWithin(getF32(SCORES_REF, g * n), naive.p, naive.pBound, `${what} p reference vs naive`);
        }
      }
    });
  }
});

const CAUSAL_S0 = [0, 1, 5, 100, 1031];
const CAUSAL_T = [1, 2, 3, 7, 64];
const CAUSAL_HD = [7, 24, 64, 128];

/** Every (S0, T, Hd, g) of the grids, with a seed. */
function* causalShapes(s0s = CAUSAL_S0, ts = CAUSAL_T, heads = CAUSAL_HD, groups = [1, 2, 4]) {
  for (const S0 of s0s)
    for (const T of ts)
      for (const Hd of heads) for (const g of groups) yield { S0, T, Hd, g, seed: S0 * 1e5 + T * 1e3 + Hd * 10 + g };
}

/**
 * K, V (S0 + T, Hd) as setupAttention, and q (T, qStride) in QT: the g heads of row t at t·qStride,
 * then other heads and an odd padding (qStride = 2·g·Hd + 3). OUT_WASM, OUT_2 (T, qStride) and
 * SCORES_T, SCORES_T2 (T, g, S0 + T) are filled with the same canary, so unwritten floats compare equal.
 */
function setupCausal(dtype: Dtype, S0: number, T: number, Hd: number, g: number, seed: number) {
  const { k, v } = setupAttention(dtype, S0 + T, Hd, g, seed);
  const qStride = 2 * g * Hd + 3;
  const q = gaussian(makeRandom(seed + 1), T * qStride);
  putF32(QT, q);
  const canary = gaussian(makeRandom(seed + 2), Math.max(T * qStride, T * g * (S0 + T)), 100);
  for (const ptr of [OUT_WASM, OUT_2]) putF32(ptr, canary.subarray(0, T * qStride));
  for (const ptr of [SCORES_T, SCORES_T2]) putF32(ptr, canary.subarray(0, T * g * (S0 + T)));
  return { q, k, v, qStride, scale: 1 / Math.sqrt(Hd), kv: dtype === "F32" ? [K, V] : [K16, V16] };
}

describe("attentionCausal", () => {
  for (const dtype of ["F32", "Bf16"] as const) {
    test(`attentionCausal${dtype} == attention${dtype} once per row t with S = S0 + t + 1, out and p; nothing else written (bit-exact)`, () => {
      for (const { S0, T, Hd, g, seed } of causalShapes()) {
        const { qStride, scale, kv } = setupCausal(dtype, S0, T, Hd, g, seed);
        const Sall = S0 + T;
        wasm[`attentionCausal${dtype}`](OUT_WASM, SCORES_T, QT, kv[0], kv[1], S0, T, Hd, g, qStride, scale);
        const what = `S0=${S0} T=${T} Hd=${Hd} g=${g}`;
        for (let t = 0; t < T; t++) {
          const S = S0 + t + 1,
            at = 4 * t * qStride;
          wasm[`attention${dtype}`](OUT_2 + at, SCORES_2, QT + at, kv[0], kv[1], S, Hd, g, scale);
          for (let h = 0; h < g; h++) {
            const row = SCORES_T + 4 * (t * g + h) * Sall;
            expectBitExact(getF32(row, S), getF32(SCORES_2 + 4 * h * S, S), `${what} t=${t} h=${h} p`);
            const rest = 4 * (t * g + h) * Sall + 4 * S;
            expectBitExact(
              getF32(SCORES_T + rest, Sall - S),
              getF32(SCORES_T2 + rest, Sall - S),
              `${what} t=${t} h=${h} past p`,
            );
          }
        }
        expectBitExact(getF32(OUT_WASM, T * qStride), getF32(OUT_2, T * qStride), `${what} out`);
      }
    });

    test(`attentionCausal${dtype} wasm == reference == float64 naive (out: (1e-5 + 2δ)·Σ p|v|, p: rel 1e-5 + 2δ)`, () => {
      for (const { S0, T, Hd, g, seed } of causalShapes([0, 5, 100], [1, 2, 7, 64], [7, 24, 128], [1, 4])) {
        const { q, k, v, qStride, scale, kv } = setupCausal(dtype, S0, T, Hd, g, seed);
        wasm[`attentionCausal${dtype}`](OUT_WASM, SCORES_T, QT, kv[0], kv[1], S0, T, Hd, g, qStride, scale);
        ref[`attentionCausal${dtype}`](OUT_REF, SCORES_T2, QT, kv[0], kv[1], S0, T, Hd, g, qStride, scale);
        for (let t = 0; t < T; t++) {
          const S = S0 + t + 1,
            at = 4 * t * qStride;
          const naive = naiveAttention(q.subarray(t * qStride, t * qStride + g * Hd), k, v, range(S), Hd, g, scale);
          const what = `S0=${S0} T=${T} Hd=${Hd} g=${g} t=${t}`;
          expectWithin(
            getF32(OUT_WASM + at, g * Hd),
            getF32(OUT_REF + at, g * Hd),
            naive.outBound,
            `${what} out wasm vs reference`,
          );
          expectWithin(getF32(OUT_WASM + at, g * Hd), naive.out, naive.outBound, `${what} out wasm vs naive`);
          expectWithin(getF32(OUT_REF + at, g * Hd), naive.out, naive.outBound, `${what} out reference vs naive`);
          for (let h = 0; h < g; h++) {
            const row = 4 * (t * g + h) * (S0 + T),
              p = naive.p.subarray(h * S, (h + 1) * S),
              bound = naive.pBound.subarray(h * S, (h + 1) * S);
            expectWithin(getF32(SCORES_T + row, S), p, bound, `${what} h=${h} p wasm vs naive`);
            expectWithin(getF32(SCORES_T2 + row, S), p, bound, `${what} h=${h} p reference vs naive`);
          }
        }
      }
    });
  }
});
