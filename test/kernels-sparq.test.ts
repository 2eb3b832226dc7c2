/**
 * SparQ's selection kernels and the bf16 writers: sparqScores* (d-major and strided) and topK against their
 * TypeScript twins bit for bit and against float64 naive computations; packBf16 and storeColumn* bit for bit.
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
const componentCounts = (Hd: number) =>
  [...new Set([1, 3, Math.max(1, Math.floor(Hd / 8)), Math.floor(Hd / 2), Hd])].filter((r) => r <= Hd);

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
    const S = 16,
      Hd = 8,
      g = 1,
      ldk = 16;
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

/** Whether topK's long-input path samples position i of n (it takes floor(j·n / 1024), j < 1024). */
const isSampled = (i: number, n: number) => Math.floor((Math.ceil((i * 1024) / n) * n) / 1024) === i;

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
    // Against the long-input path's sample of 1024 evenly spaced keys: a sample that sees only the
    // smallest values (its guess keeps everything), and one that sees only the largest (it keeps too few).
    ["sample sees the smallest", Float32Array.from(range(n), (i) => (isSampled(i, n) ? -1 : random()))],
    ["sample sees the largest", Float32Array.from(range(n), (i) => (isSampled(i, n) ? 2 + random() : random()))],
  ];
}

const kks = (n: number) =>
  [...new Set([1, 2, 3, Math.ceil(n / 8), Math.floor(n / 2), n - 1, n])].filter((kk) => kk >= 1 && kk <= n);

describe("topK", () => {
  const SCRATCH_CANARY = 0x5a5a5a5a;

  test("topK wasm == reference == naive sort (exact), ascending indices, within 4·(n + 2048) bytes of scratch", () => {
    for (const n of [1, 2, 3, 5, 17, 100, 1031, 4099, 16411, 131072]) {
      for (const [name, x] of topKInputs(n, n)) {
        putF32(Q, x);
        const order = naiveOrder(x);
        for (const kk of n > 5000 ? [1, 1100, Math.ceil(n / 8), Math.floor(n / 4), n] : kks(n)) {
          const expected = naiveTopK(order, kk);
          const what = `${name} n=${n} kk=${kk}`;
          for (const [k, label] of [
            [wasm, "wasm"],
            [ref, "reference"],
          ] as const) {
            // Canaries right past the output and past the scratch the doc comment promises.
            arena.i32.fill(SCRATCH_CANARY, (OUT_WASM >> 2) + kk, (OUT_WASM >> 2) + kk + 4);
            arena.i32.fill(SCRATCH_CANARY, (SCRATCH >> 2) + n + 2048, (SCRATCH >> 2) + n + 2048 + 64);
            k.topK(OUT_WASM, Q, n, kk, SCRATCH);
            expect(getI32(OUT_WASM, kk), `${what} ${label}`).toEqual(expected);
            expect(getI32(OUT_WASM + 4 * kk, 4), `${what} ${label} wrote past outIdx (kk)`).toEqual(
              new Array(4).fill(SCRATCH_CANARY),
            );
            expect(getI32(SCRATCH + 4 * (n + 2048), 64), `${what} ${label} scratch`).toEqual(
              new Array(64).fill(SCRATCH_CANARY),
            );
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
  0x7f800001,
  0xff800001,
  0x7fc00000,
  0xffc00000,
  0x7fffffff,
  0xffffffff,
  0x7f80ffff,
  0x7fbf8000, // NaNs
  0x7f800000,
  0xff800000,
  0x7f7fffff,
  0x7f7f7fff,
  0x7f7f8000,
  0xff7f8000, // infinities, overflow, largest finite
  0x3f808000,
  0x3f818000,
  0x3f808001,
  0x3f80ffff,
  0xbf808000,
  0xbf818000, // halfway: to even, above, below
  0x00000000,
  0x80000000,
  0x00000001,
  0x00008000,
  0x00018000,
  0x807fffff,
  0x00800000,
  0x007f8000, // ±0, subnormals
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
    for (const [k, out] of [
      [wasm, OUT_WASM],
      [ref, OUT_REF],
    ] as const) {
      k.packBf16(out, Q, n);
      expect(
        getU16(out, n).map((b) => b.toString(16)),
        k === wasm ? "wasm" : "reference",
      ).toEqual(expected.map((b) => b.toString(16)));
    }
  });

  for (const dtype of ["F32", "Bf16"] as const) {
    test(`storeColumn${dtype} writes kT[i·ldk] = x[i] and nothing else, wasm == reference (bit-exact)`, () => {
      const bytes = dtype === "F32" ? 4 : 2;
      for (const [n, ldk, column] of [
        [1, 1, 0],
        [7, 9, 3],
        [24, 100, 99],
        [128, 1031, 500],
        [20, 4, 1],
      ]) {
        const values = new Uint32Array([...AWKWARD_BITS, ...new Uint32Array(awkwardFloats(n, n).buffer)].slice(0, n));
        u32.set(values, Q / 4);
        const tableBytes = n * ldk * bytes;
        for (const [k, table] of [
          [wasm, KG],
          [ref, VG],
        ] as const) {
          arena.u8.fill(0xab, table, table + tableBytes + 64);
          k[`storeColumn${dtype}`](table + column * bytes, Q, n, ldk);
        }
        const what = `n=${n} ldk=${ldk} column=${column}`;
        const wasmTable = arena.u8.subarray(KG, KG + tableBytes + 64);
        expect(
          firstByteDifference(wasmTable, arena.u8.subarray(VG, VG + tableBytes + 64)),
          `${what} wasm vs reference`,
        ).toBe(-1);
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
