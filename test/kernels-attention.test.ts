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
import { createReferenceKernels } from "../src/kernels/reference.js";
import { loadWasmKernelsSync } from "../src/kernels/wasm.js";
import { Arena, type Ptr } from "../src/memory/arena.js";
import { bf16ToF32, f32BitsToBf16, f32ToBf16 } from "../src/memory/dtype.js";
import {
  awkwardFloats, expectBitExact, expectWithin, firstByteDifference, gaussian, makeRandom, naiveAttention, naiveOrder,
  naiveSparqScores, naiveTopK, range, rowIndices,
} from "./helpers/kernels-helpers.js";

const arena = new Arena(64 << 20, "the attention kernel tests");
const wasm = loadWasmKernelsSync(arena.memory);
const ref = createReferenceKernels(arena.memory);
const K = arena.alloc(4 << 20); // K (S, Hd) f32, or the decoded bf16 K
const V = arena.alloc(4 << 20);
const K16 = arena.alloc(2 << 20); // K (S, Hd) bf16
const V16 = arena.alloc(2 << 20);
const KG = arena.alloc(4 << 20); // gathered rows of K / V, or the d-major kT (Hd, ldk)
const VG = arena.alloc(4 << 20);
const Q = arena.alloc(64 << 10); // q (g, Hd), or x for topK / packBf16
const IDX = arena.alloc(1 << 20); // i32 row / component indices
const SCALE = arena.alloc(64);
const OUT_WASM = arena.alloc(1 << 20);
const OUT_REF = arena.alloc(1 << 20);
const OUT_2 = arena.alloc(1 << 20);
const SCORES_WASM = arena.alloc(1 << 20);
const SCORES_REF = arena.alloc(1 << 20);
const SCORES_2 = arena.alloc(1 << 20);
const SCRATCH = arena.alloc(2 << 20);
const QT = arena.alloc(1 << 20); // q (T, qStride) of a causal chunk
const SCORES_T = arena.alloc(2 << 20); // (T, g, S0 + T)
const SCORES_T2 = arena.alloc(2 << 20);

const putF32 = (ptr: Ptr, values: ArrayLike<number>) => arena.f32.set(values, ptr / 4);
const putI32 = (ptr: Ptr, values: ArrayLike<number>) => arena.i32.set(values, ptr / 4);
const getF32 = (ptr: Ptr, n: number) => arena.f32.slice(ptr / 4, ptr / 4 + n);
const getI32 = (ptr: Ptr, n: number) => Array.from(arena.i32.subarray(ptr / 4, ptr / 4 + n));
const getU16 = (ptr: Ptr, n: number) => Array.from(arena.u16.subarray(ptr / 2, ptr / 2 + n));
const putBf16 = (ptr: Ptr, values: ArrayLike<number>) => arena.u16.set(Array.from(values, f32ToBf16), ptr / 2);
const decodedBf16 = (values: ArrayLike<number>) => Float32Array.from(values, (v) => bf16ToF32(f32ToBf16(v)));

const SEQ = [1, 3, 17, 100, 1031];
const HEAD_DIMS = [4, 24, 64, 128, 20, 7];
const GROUPS = [1, 2, 3, 4];
const ALL_GROUPS = [1, 2, 3, 4, 5, 8]; // for the fast bit-exact tests: g goes up to 8
type Dtype = "F32" | "Bf16";

/** Every (S, Hd, g) of the grids, with a seed. */
function* shapes(seqs = SEQ, groups = GROUPS): Generator<{ S: number; Hd: number; g: number; seed: number }> {
  for (const S of seqs) for (const Hd of HEAD_DIMS) for (const g of groups) yield { S, Hd, g, seed: S * 10000 + Hd * 10 + g };
}

/**
 * Random q (g, Hd), K, V (S, Hd) written to Q and to K, V (f32) and K16, V16 (bf16); returns the
 * values the kernels of `dtype` see (decoded bf16 for Bf16, also left in K, V).
 */
function setupAttention(dtype: Dtype, S: number, Hd: number, g: number, seed: number) {
  const random = makeRandom(seed);
  const q = gaussian(random, g * Hd);
  let k = gaussian(random, S * Hd), v = gaussian(random, S * Hd);
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
        expectWithin(getF32(OUT_WASM, g * Hd), getF32(OUT_REF, g * Hd), naive.outBound, `${what} out wasm vs reference`);
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
      for (let h = 0; h < g; h++) wasm.attendF32(OUT_2 + 4 * h * Hd, SCORES_2 + 4 * h * S, Q + 4 * h * Hd, K, V, S, Hd, scale);
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
    const S = 7, Hd = 5, g = 2;
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
  test("expSumF32 wasm == reference: max exact, Σ e^(x − max) within rel 1e-6 of float64; x untouched", () => {
    for (const n of [1, 3, 4, 17, 100, 1031, 16384]) {
      const x = gaussian(makeRandom(n + 1), n, 4);
      const max = Math.max(...x);
      const sum = x.reduce((acc, v) => acc + Math.exp(v - max), 0);
      for (const k of [wasm, ref]) {
        putF32(K, x);
        k.expSumF32(OUT_WASM, K, n);
        const [m, s] = getF32(OUT_WASM, 2);
        expect(m).toBe(Math.fround(max));
        expect(Math.abs(s - sum) / sum).toBeLessThan(1e-6);
        expect(getF32(K, n)).toEqual(Float32Array.from(x));
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
      for (const [k, out] of [[wasm, OUT_WASM], [ref, OUT_REF]] as const) {
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
  for (const S0 of s0s) for (const T of ts) for (const Hd of heads) for (const g of groups) yield { S0, T, Hd, g, seed: S0 * 1e5 + T * 1e3 + Hd * 10 + g };
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
          const S = S0 + t + 1, at = 4 * t * qStride;
          wasm[`attention${dtype}`](OUT_2 + at, SCORES_2, QT + at, kv[0], kv[1], S, Hd, g, scale);
          for (let h = 0; h < g; h++) {
            const row = SCORES_T + 4 * (t * g + h) * Sall;
            expectBitExact(getF32(row, S), getF32(SCORES_2 + 4 * h * S, S), `${what} t=${t} h=${h} p`);
            const rest = 4 * (t * g + h) * Sall + 4 * S;
            expectBitExact(getF32(SCORES_T + rest, Sall - S), getF32(SCORES_T2 + rest, Sall - S), `${what} t=${t} h=${h} past p`);
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
          const S = S0 + t + 1, at = 4 * t * qStride;
          const naive = naiveAttention(q.subarray(t * qStride, t * qStride + g * Hd), k, v, range(S), Hd, g, scale);
          const what = `S0=${S0} T=${T} Hd=${Hd} g=${g} t=${t}`;
          expectWithin(getF32(OUT_WASM + at, g * Hd), getF32(OUT_REF + at, g * Hd), naive.outBound, `${what} out wasm vs reference`);
          expectWithin(getF32(OUT_WASM + at, g * Hd), naive.out, naive.outBound, `${what} out wasm vs naive`);
          expectWithin(getF32(OUT_REF + at, g * Hd), naive.out, naive.outBound, `${what} out reference vs naive`);
          for (let h = 0; h < g; h++) {
            const row = 4 * (t * g + h) * (S0 + T), p = naive.p.subarray(h * S, (h + 1) * S), bound = naive.pBound.subarray(h * S, (h + 1) * S);
            expectWithin(getF32(SCORES_T + row, S), p, bound, `${what} h=${h} p wasm vs naive`);
            expectWithin(getF32(SCORES_T2 + row, S), p, bound, `${what} h=${h} p reference vs naive`);
          }
        }
      }
    });
  }
});

/**
 * Random q (g, Hd), K (S, Hd) and its d-major copy kT (Hd, ldk) in KG (f32 or bf16), K itself in
 * K / K16, r distinct components in random order in IDX, per-head scales in SCALE. Returns the
 * values the kernels see.
 */
function setupSparq(dtype: Dtype, S: number, Hd: number, g: number, r: number, ldk: number, seed: number) {
  const random = makeRandom(seed);
  const q = gaussian(random, g * Hd);
  putF32(Q, q);
  let k = gaussian(random, S * Hd);
  if (dtype === "Bf16") {
    putBf16(K16, k);
    k = decodedBf16(k);
  }
  putF32(K, k);
  const kT = new Float32Array(Hd * ldk);
  for (let s = 0; s < S; s++) for (let i = 0; i < Hd; i++) kT[i * ldk + s] = k[s * Hd + i];
  if (dtype === "F32") putF32(KG, kT);
  else putBf16(KG, kT);
  const idx = rowIndices(random, Hd, r, "ascending");
  for (let j = r - 1; j > 0; j--) {
    const other = Math.floor(random() * (j + 1));
    [idx[j], idx[other]] = [idx[other], idx[j]];
  }
  putI32(IDX, idx);
  const scale = Array.from({ length: g }, (_, h) => (h + 1) / Math.sqrt(Hd));
  putF32(SCALE, scale);
  return { q, k, idx, scale: getF32(SCALE, g) };
}

/** r values for head dim Hd: one component, a few, about an eighth, half, all. */
const componentCounts = (Hd: number) => [...new Set([1, 3, Math.max(1, Math.floor(Hd / 8)), Math.floor(Hd / 2), Hd])].filter((r) => r <= Hd);

describe("sparqScores", () => {
  for (const dtype of ["F32", "Bf16"] as const) {
    test(`sparqScores${dtype} wasm == reference (bit-exact) ≈ float64 naive (|err| ≤ (r+2)·2⁻²⁴·Σ|q·k|·scale)`, () => {
      for (const { S, Hd, g, seed } of shapes()) {
        for (const r of componentCounts(Hd)) {
          const ldk = S + 13;
          const { q, k, idx, scale } = setupSparq(dtype, S, Hd, g, r, ldk, seed + r);
          wasm[`sparqScores${dtype}`](OUT_WASM, Q, KG, IDX, SCALE, r, S, ldk, Hd, g);
          ref[`sparqScores${dtype}`](OUT_REF, Q, KG, IDX, SCALE, r, S, ldk, Hd, g);
          const what = `S=${S} Hd=${Hd} g=${g} r=${r}`;
          expectBitExact(getF32(OUT_WASM, g * S), getF32(OUT_REF, g * S), `${what} wasm vs reference`);
          const naive = naiveSparqScores(q, k, idx, scale, S, Hd, g);
          expectWithin(getF32(OUT_WASM, g * S), naive.value, naive.bound, `${what} wasm vs naive`);
        }
      }
    });

    test(`sparqScoresStrided${dtype} == sparqScores${dtype} on the d-major copy, wasm == reference (bit-exact)`, () => {
      for (const { S, Hd, g, seed } of shapes(SEQ, ALL_GROUPS)) {
        for (const r of componentCounts(Hd)) {
          const ldk = S + 13;
          setupSparq(dtype, S, Hd, g, r, ldk, seed + r);
          const k = dtype === "F32" ? K : K16;
          wasm[`sparqScores${dtype}`](OUT_2, Q, KG, IDX, SCALE, r, S, ldk, Hd, g);
          wasm[`sparqScoresStrided${dtype}`](OUT_WASM, Q, k, IDX, SCALE, r, S, Hd, g);
          ref[`sparqScoresStrided${dtype}`](OUT_REF, Q, k, IDX, SCALE, r, S, Hd, g);
          const what = `S=${S} Hd=${Hd} g=${g} r=${r}`;
          expectBitExact(getF32(OUT_WASM, g * S), getF32(OUT_2, g * S), `${what} strided vs d-major`);
          expectBitExact(getF32(OUT_REF, g * S), getF32(OUT_2, g * S), `${what} reference strided vs d-major`);
        }
      }
    });
  }

  test("sparqScoresF32 depends on the order of idx (the sum is in idx order, not sorted) (bit-exact to the reference)", () => {
    // Components of very different sizes, so summation order changes the rounding.
    const S = 16, Hd = 8, g = 1, ldk = 16;
    putF32(Q, [1e8, 1, -1e8, 1, 1, 1, 1, 1]);
    putF32(KG, new Float32Array(Hd * ldk).fill(1));
    putF32(SCALE, [1]);
    putI32(IDX, [0, 1, 2]);
    wasm.sparqScoresF32(OUT_WASM, Q, KG, IDX, SCALE, 3, S, ldk, Hd, g);
    expect(Array.from(getF32(OUT_WASM, S))).toEqual(new Array(S).fill(0)); // (1e8 + 1) rounds to 1e8
    putI32(IDX, [0, 2, 1]);
    wasm.sparqScoresF32(OUT_WASM, Q, KG, IDX, SCALE, 3, S, ldk, Hd, g);
    expect(Array.from(getF32(OUT_WASM, S))).toEqual(new Array(S).fill(1));
    ref.sparqScoresF32(OUT_REF, Q, KG, IDX, SCALE, 3, S, ldk, Hd, g);
    expectBitExact(getF32(OUT_REF, S), getF32(OUT_WASM, S), "reference");
  });
});

/** Inputs for topK: gaussian, heavy ties among awkward values, all equal, sorted both ways, tiny spreads. */
function topKInputs(n: number, seed: number): [string, Float32Array][] {
  const random = makeRandom(seed);
  const special = [0, -0, 1, -1, 2, Infinity, -Infinity, 2 ** -149, -(2 ** -149), 1e-40, 3.4e38, -3.4e38];
  return [
    ["gaussian", gaussian(random, n)],
    ["ties", Float32Array.from({ length: n }, () => special[Math.floor(random() * special.length)])],
    ["all equal", new Float32Array(n).fill(0.5)],
    ["ascending", Float32Array.from(range(n), (i) => i - n / 2)],
    ["descending", Float32Array.from(range(n), (i) => n / 2 - i)],
    // Values differing only in the low mantissa bits: the select needs all three digits.
    ["narrow", Float32Array.from({ length: n }, () => 1 + Math.floor(random() * 64) * 2 ** -23)],
  ];
}

const kks = (n: number) => [...new Set([1, 2, 3, Math.ceil(n / 8), Math.floor(n / 2), n - 1, n])].filter((kk) => kk >= 1 && kk <= n);

describe("topK", () => {
  const SCRATCH_CANARY = 0x5a5a5a5a;

  test("topK wasm == reference == naive sort (exact), ascending indices, within 4·(n + 2048) bytes of scratch", () => {
    for (const n of [1, 2, 3, 5, 17, 100, 1031, 4099, 131072]) {
      for (const [name, x] of topKInputs(n, n)) {
        putF32(Q, x);
        const order = naiveOrder(x);
        for (const kk of n > 5000 ? [1, Math.ceil(n / 8), n] : kks(n)) {
          const expected = naiveTopK(order, kk);
          const what = `${name} n=${n} kk=${kk}`;
          for (const [k, label] of [[wasm, "wasm"], [ref, "reference"]] as const) {
            // Canaries right past the output and past the scratch the doc comment promises.
            arena.i32.fill(SCRATCH_CANARY, (OUT_WASM >> 2) + kk, (OUT_WASM >> 2) + kk + 4);
            arena.i32.fill(SCRATCH_CANARY, (SCRATCH >> 2) + n + 2048, (SCRATCH >> 2) + n + 2048 + 64);
            k.topK(OUT_WASM, Q, n, kk, SCRATCH);
            expect(getI32(OUT_WASM, kk), `${what} ${label}`).toEqual(expected);
            expect(getI32(OUT_WASM + 4 * kk, 4), `${what} ${label} wrote past outIdx (kk)`).toEqual(new Array(4).fill(SCRATCH_CANARY));
            expect(getI32(SCRATCH + 4 * (n + 2048), 64), `${what} ${label} scratch`).toEqual(new Array(64).fill(SCRATCH_CANARY));
          }
        }
      }
    }
  });

  test("topK of [3, -0, +0, 3, +Infinity, 1]: ties to the lower index, +0 above -0, +Infinity first (exact)", () => {
    putF32(Q, [3, -0, 0, 3, Infinity, 1]);
    for (const k of [wasm, ref]) {
      const top = (kk: number) => {
        k.topK(OUT_WASM, Q, 6, kk, SCRATCH);
        return getI32(OUT_WASM, kk);
      };
      expect(top(1)).toEqual([4]);
      expect(top(2)).toEqual([0, 4]);
      expect(top(3)).toEqual([0, 3, 4]);
      expect(top(5)).toEqual([0, 2, 3, 4, 5]);
      expect(top(6)).toEqual([0, 1, 2, 3, 4, 5]);
    }
  });
});

/** f32 bit patterns the bf16 rounding must get right: NaN payloads and signs, halfway cases, overflow, subnormals. */
const AWKWARD_BITS = [
  0x7f800001, 0xff800001, 0x7fc00000, 0xffc00000, 0x7fffffff, 0xffffffff, 0x7f80ffff, 0x7fbf8000, // NaNs
  0x7f800000, 0xff800000, 0x7f7fffff, 0x7f7f7fff, 0x7f7f8000, 0xff7f8000, // infinities, overflow, largest finite
  0x3f808000, 0x3f818000, 0x3f808001, 0x3f80ffff, 0xbf808000, 0xbf818000, // halfway: to even, above, below
  0x00000000, 0x80000000, 0x00000001, 0x00008000, 0x00018000, 0x807fffff, 0x00800000, 0x007f8000, // ±0, subnormals
];

describe("bf16 packing and d-major columns", () => {
  const u32 = new Uint32Array(arena.memory.buffer);

  test("packBf16 wasm == reference == dtype.ts f32ToBf16 on awkward floats (bit-exact)", () => {
    for (const n of [1, 3, 7, 8, 9, 17, 64, 100, 333]) {
      const values = awkwardFloats(n, n);
      putF32(Q, values);
      const expected = Array.from(values, f32ToBf16);
      wasm.packBf16(OUT_WASM, Q, n);
      ref.packBf16(OUT_REF, Q, n);
      expect(getU16(OUT_WASM, n), `n=${n} wasm`).toEqual(expected);
      expect(getU16(OUT_REF, n), `n=${n} reference`).toEqual(expected);
    }
  });

  test("packBf16 on raw f32 bits (NaN payloads and signs, ties, overflow, subnormals) == f32BitsToBf16 (bit-exact)", () => {
    const n = AWKWARD_BITS.length;
    u32.set(AWKWARD_BITS, Q / 4);
    const expected = AWKWARD_BITS.map(f32BitsToBf16);
    // Spot checks of the rule itself: quiet NaN keeps sign and payload, ties go to even, overflow to inf.
    expect(expected.slice(0, 4)).toEqual([0x7fc0, 0xffc0, 0x7fc0, 0xffc0]);
    expect(expected.slice(14, 16)).toEqual([0x3f80, 0x3f82]);
    expect(expected[10]).toBe(0x7f80);
    for (const [k, out] of [[wasm, OUT_WASM], [ref, OUT_REF]] as const) {
      k.packBf16(out, Q, n);
      expect(getU16(out, n).map((b) => b.toString(16)), k === wasm ? "wasm" : "reference").toEqual(expected.map((b) => b.toString(16)));
    }
  });

  for (const dtype of ["F32", "Bf16"] as const) {
    test(`storeColumn${dtype} writes kT[i·ldk] = x[i] and nothing else, wasm == reference (bit-exact)`, () => {
      const bytes = dtype === "F32" ? 4 : 2;
      for (const [n, ldk, column] of [[1, 1, 0], [7, 9, 3], [24, 100, 99], [128, 1031, 500], [20, 4, 1]]) {
        const values = new Uint32Array([...AWKWARD_BITS, ...new Uint32Array(awkwardFloats(n, n).buffer)].slice(0, n));
        u32.set(values, Q / 4);
        const tableBytes = n * ldk * bytes;
        for (const [k, table] of [[wasm, KG], [ref, VG]] as const) {
          arena.u8.fill(0xab, table, table + tableBytes + 64);
          k[`storeColumn${dtype}`](table + column * bytes, Q, n, ldk);
        }
        const what = `n=${n} ldk=${ldk} column=${column}`;
        const wasmTable = arena.u8.subarray(KG, KG + tableBytes + 64);
        expect(firstByteDifference(wasmTable, arena.u8.subarray(VG, VG + tableBytes + 64)), `${what} wasm vs reference`).toBe(-1);
        const expectedTable = new Uint8Array(tableBytes + 64).fill(0xab);
        const view = new DataView(expectedTable.buffer);
        for (let i = 0; i < n; i++) {
          const at = (i * ldk + column) * bytes;
          if (dtype === "F32") view.setUint32(at, values[i], true);
          else view.setUint16(at, f32BitsToBf16(values[i]), true);
        }
        expect(firstByteDifference(wasmTable, expectedTable), `${what} wasm vs expected`).toBe(-1);
      }
    });
  }
});
