/**
 * The quantised-KV-cache kernels (K, V rows in q8_0 / q4_0 blocks; assembly/kv-quant.ts): WASM against the
 * reference twin bit for bit (every kernel), quantizeQ4_0 against src/memory/quants.ts byte for byte, and
 * the identities the kernels are defined by, on seeded random shapes (Hd 32 … 256, g 1 … 8, S not multiples
 * of 4 or 16, gathered rows with repeats):
 *   scores = softmaxF32(matvecQ8_0 / matvecQ4_0 of K with q8_0(q), times scale), bit for bit;
 *   out = Σ p V on the dequantised V, within the f32 summation bound of a float64 sum;
 *   attendRows* = attention* on the rows gathered in idx order; attentionCausal* = attention* once per row;
 *   sparqScores*T / sparqScoresStrided* = sparqScoresF32 / sparqScoresStridedF32 on the dequantised keys.
 * The cache rows come from quants.ts / dtype.ts quantizers and are dequantised there (independent code).
 */
import { describe, expect, test } from "vitest";
import { createReferenceKernels } from "../src/kernels/reference.js";
import { KERNEL_NAMES, loadWasmKernelsSync } from "../src/kernels/wasm.js";
import { Arena, type Ptr } from "../src/memory/arena.js";
import { dequantizeQ8_0, quantizeQ8_0 } from "../src/memory/dtype.js";
import { dequantize, quantize } from "../src/memory/quants.js";
import {
  awkwardFloats,
  expectBitExact,
  expectWithin,
  firstByteDifference,
  gaussian,
  makeRandom,
  range,
  rowIndices,
} from "./helpers/kernels-helpers.js";

const arena = new Arena(48 << 20, "the quantised KV cache kernel tests");
const wasm = loadWasmKernelsSync(arena.memory);
const ref = createReferenceKernels(arena.memory);
const X = arena.alloc(1 << 20); // f32 input of the quantiser; f32 dequantised kT (Hd, ldk)
const KQ = arena.alloc(1 << 20); // K rows (S, Hd) quantised, or the d-major codes kT
const VQ = arena.alloc(1 << 20); // V rows quantised, or the d-major scales dT
const KG = arena.alloc(1 << 20); // gathered rows
const VG = arena.alloc(1 << 20);
const KF = arena.alloc(2 << 20); // dequantised K rows (S, Hd) f32
const Q = arena.alloc(1 << 20); // q (g, Hd), or (T, qStride)
const IDX = arena.alloc(64 << 10);
const SCALE = arena.alloc(64);
const [OUT_W, OUT_R, OUT_2] = [0, 1, 2].map(() => arena.alloc(1 << 20));
const [SC_W, SC_R, SC_2] = [0, 1, 2].map(() => arena.alloc(2 << 20));
const [QQ_W, QQ_R, QQ_2] = [0, 1, 2].map(() => arena.alloc(1 << 20));

const f = Math.fround;
const putF32 = (ptr: Ptr, values: ArrayLike<number>) => arena.f32.set(values, ptr / 4);
const putI32 = (ptr: Ptr, values: ArrayLike<number>) => arena.i32.set(values, ptr / 4);
const getF32 = (ptr: Ptr, n: number) => arena.f32.slice(ptr / 4, ptr / 4 + n);
const getBytes = (ptr: Ptr, n: number) => arena.u8.slice(ptr, ptr + n);
const expectSameBytes = (actual: Uint8Array, expected: Uint8Array, what: string) =>
  expect(firstByteDifference(actual, expected), `${what}: first differing byte`).toBe(-1);

type Format = "Q8_0" | "Q4_0";
const FORMATS: Format[] = ["Q8_0", "Q4_0"];
const BLOCK_BYTES: Record<Format, number> = { Q8_0: 34, Q4_0: 18 };
const rowBytes = (format: Format, Hd: number) => (Hd / 32) * BLOCK_BYTES[format];
/** Values (a whole number of blocks) quantised by the independent TypeScript quantizers, and dequantised. */
const encodeBlocks = (format: Format, x: Float32Array) => (format === "Q8_0" ? quantizeQ8_0(x) : quantize("q4_0", x));
const decodeBlocks = (format: Format, bytes: Uint8Array, n: number) =>
  format === "Q8_0" ? dequantizeQ8_0(bytes, n) : dequantize("q4_0", bytes, n);

const SEQ = [1, 3, 17, 100, 517];
const HEAD_DIMS = [32, 64, 128, 256];
const GROUPS = [1, 2, 4, 8];
function* shapes(seqs = SEQ, groups = GROUPS) {
  for (const S of seqs)
    for (const Hd of HEAD_DIMS) for (const g of groups) yield { S, Hd, g, seed: S * 10000 + Hd * 10 + g };
}

/**
 * Cache-like values for `rows` rows of Hd: N(0, 1), with every 7th row tiny (an f16-subnormal d), every
 * 11th row zero (d = 0) and every 13th row 50x larger.
 */
function cacheValues(random: () => number, rows: number, Hd: number): Float32Array {
  const x = gaussian(random, rows * Hd);
  for (let r = 0; r < rows; r++) {
    const factor = r % 7 === 3 ? 1e-6 : r % 11 === 5 ? 0 : r % 13 === 7 ? 50 : 1;
    for (let j = r * Hd; j < (r + 1) * Hd; j++) x[j] *= factor;
  }
  return x;
}

/**
 * Every 5th row's blocks made of random bytes with a random f16 d in ±[2⁻¹⁰, 2) (full mantissas, every
 * code): large integer block sums whose f32 steps round, so the order of those steps shows.
 */
function scrambleRows(format: Format, bytes: Uint8Array, rows: number, Hd: number, random: () => number): Uint8Array {
  const size = rowBytes(format, Hd);
  for (let r = 2; r < rows; r += 5) {
    for (let at = r * size; at < (r + 1) * size; at += BLOCK_BYTES[format]) {
      for (let i = 2; i < BLOCK_BYTES[format]; i++) bytes[at + i] = Math.floor(256 * random());
      const d =
        (Math.floor(random() * 2) << 15) | ((5 + Math.floor(random() * 11)) << 10) | Math.floor(random() * 1024);
      [bytes[at], bytes[at + 1]] = [d & 255, d >> 8];
    }
  }
  return bytes;
}

/**
 * K, V (S, Hd) in `format` at KQ, VQ, q (g, Hd) at Q; returns the dequantised V. Every 5th K row (from
 * row 4) has the signs of a head's q, so its block sums |Σ c·x| come near their maximum (as for the rows a
 * query attends to most).
 */
function setupAttention(format: Format, S: number, Hd: number, g: number, seed: number) {
  const random = makeRandom(seed);
  const q = gaussian(random, g * Hd, 3);
  const k = cacheValues(random, S, Hd);
  for (let r = 4; r < S; r += 5) for (let j = 0; j < Hd; j++) k[r * Hd + j] = Math.sign(q[(r % g) * Hd + j]) + random();
  const kBytes = scrambleRows(format, encodeBlocks(format, k), S, Hd, random);
  const vBytes = scrambleRows(format, encodeBlocks(format, cacheValues(random, S, Hd)), S, Hd, random);
  arena.u8.set(kBytes, KQ);
  arena.u8.set(vBytes, VQ);
  putF32(Q, q);
  return { v: decodeBlocks(format, vBytes, S * Hd), scale: 1 / Math.sqrt(Hd) };
}

test("every quantised-KV kernel is in KERNEL_NAMES, the module and the reference twin", () => {
  const names = ["quantizeQ4_0", "attentionQ8_0", "attentionQ4_0", "attendRowsQ8_0", "attendRowsQ4_0"];
  names.push("attentionCausalQ8_0", "attentionCausalQ4_0", "sparqScoresQ8_0T", "sparqScoresQ4_0T");
  names.push("sparqScoresStridedQ8_0", "sparqScoresStridedQ4_0");
  for (const name of names) {
    expect(KERNEL_NAMES as readonly string[]).toContain(name);
    expect(typeof (wasm as unknown as Record<string, unknown>)[name], name).toBe("function");
    expect(typeof (ref as unknown as Record<string, unknown>)[name], name).toBe("function");
  }
});

describe("quantizeQ4_0", () => {
  /** x for which trunc(x·id + 8.5) differs from trunc(f32(f32(x·id) + 8.5)): one rounding matters (ggml with FMA). */
  function oneRoundingCases(max: number): number[] {
    const id = f(1 / f(max / -8));
    const bits = new Float32Array(1),
      int = new Int32Array(bits.buffer);
    const found: number[] = [];
    for (let code = 1; code < 16; code++) {
      bits[0] = (code - 8.5) / id;
      const start = int[0];
      for (let u = -64; u <= 64; u++) {
        int[0] = start + u;
        const x = bits[0];
        if (Math.abs(x) < Math.abs(max) && Math.trunc(x * id + 8.5) !== Math.trunc(f(f(x * id) + 8.5))) {
          found.push(x);
          break;
        }
      }
    }
    return found;
  }

  /** Blocks of 32: random, zero, exact ties, ±a / ∓a (the first is the max), one-rounding cases, NaN / ±inf, tiny. */
  function specialValues(n: number, seed: number): Float32Array {
    const random = makeRandom(seed);
    const x = gaussian(random, n, 3);
    const fill = (b: number, fn: (e: number) => number) => {
      if (b < n / 32) for (let e = 0; e < 32; e++) x[32 * b + e] = fn(e);
    };
    const cases = oneRoundingCases(-7.3);
    expect(cases.length, "values where the rounding of x·id matters").toBeGreaterThanOrEqual(8);
    fill(0, () => 0);
    fill(1, (e) => (e === 0 ? -8 : (e % 16) - 8 + 0.5)); // d = 1: x·id + 8.5 an exact integer
    fill(2, (e) => (e === 3 ? 5 : e === 7 ? -5 : e * 0.01));
    fill(3, (e) => (e === 3 ? -5 : e === 7 ? 5 : e * 0.01));
    fill(4, (e) => (e === 0 ? -7.3 : (cases[e % cases.length] ?? 0)));
    fill(5, (e) => (e % 2 ? -0 : 1e-40 * e)); // d an f32 subnormal: id = inf
    fill(6, (e) => 1e-6 * (e - 13)); // d an f16 subnormal
    fill(7, (e) => [NaN, 1, -2, Infinity, -0.5][e % 5]);
    fill(8, (e) => [3, -Infinity, 0.25][e % 3]);
    if (n >= 1024) x.set(awkwardFloats(256, seed), 512);
    return x;
  }

  test("quantizeQ4_0 wasm == reference == quants.ts quantize('q4_0'), byte for byte (ties, zero blocks, one-rounding cases, NaN / ±inf, subnormals)", () => {
    for (const n of [32, 96, 320, 1024, 4096]) {
      const values = specialValues(n, n);
      putF32(X, values);
      const expected = quantize("q4_0", values);
      wasm.quantizeQ4_0(OUT_W, X, n);
      ref.quantizeQ4_0(OUT_R, X, n);
      expectSameBytes(getBytes(OUT_W, expected.length), expected, `wasm n=${n}`);
      expectSameBytes(getBytes(OUT_R, expected.length), expected, `reference n=${n}`);
    }
    // The ties, the clamp and the sign of the max, spelled out: d = 1 gives codes min(15, 9 + ⌊x⌋); a zero
    // block d = −0, codes 8.
    const bytes = getBytes(OUT_W, 18 * 4);
    expect(Array.from(bytes.subarray(18 + 2, 18 + 18), (b) => [b & 15, b >> 4])).toEqual(
      range(16).map((e) => [e === 0 ? 0 : Math.min(15, e + 1), Math.min(15, e + 1)]),
    );
    expect(Array.from(bytes.subarray(0, 18))).toEqual([0, 0x80, ...new Array(16).fill(0x88)]);
    expect([bytes[36 + 2 + 3] & 15, bytes[36 + 2 + 7] & 15, bytes[54 + 2 + 3] & 15, bytes[54 + 2 + 7] & 15]).toEqual([
      0, 15, 0, 15,
    ]);
  });
});

describe("attention", () => {
  for (const format of FORMATS) {
    test(`attention${format} wasm == reference (out, p, qq: bit-exact); qq = q8_0(q) (bytes); p = softmaxF32(matvec${format}(K, qq)·scale) (bit-exact); out within (S/4 + 8)·2⁻²⁴·Σ p|v| + 4S·2⁻¹⁴⁹ of float64 Σ p·V on the dequantised V`, () => {
      for (const { S, Hd, g, seed } of shapes()) {
        const { v, scale } = setupAttention(format, S, Hd, g, seed);
        const qqBytes = rowBytes("Q8_0", Hd);
        wasm[`attention${format}`](OUT_W, SC_W, Q, KQ, VQ, S, Hd, g, scale, QQ_W);
        ref[`attention${format}`](OUT_R, SC_R, Q, KQ, VQ, S, Hd, g, scale, QQ_R);
        const what = `S=${S} Hd=${Hd} g=${g}`;
        const out = getF32(OUT_W, g * Hd),
          p = getF32(SC_W, g * S);
        expectBitExact(getF32(OUT_R, g * Hd), out, `${what} out reference vs wasm`);
        expectBitExact(getF32(SC_R, g * S), p, `${what} p reference vs wasm`);
        expectSameBytes(getBytes(QQ_R, g * qqBytes), getBytes(QQ_W, g * qqBytes), `${what} qq reference vs wasm`);
        expectSameBytes(getBytes(QQ_W, g * qqBytes), quantizeQ8_0(getF32(Q, g * Hd)), `${what} qq vs dtype.ts q8_0`);

        // Steps 1 and 2: the matvec of K with each head's qq, times scale (an f32), then softmaxF32.
        for (let h = 0; h < g; h++) {
          wasm[`matvec${format}`](SC_2 + 4 * h * S, QQ_W + h * qqBytes, KQ, Hd, S);
          ref[`matvec${format}`](OUT_2, QQ_W + h * qqBytes, KQ, Hd, S);
          expectBitExact(getF32(OUT_2, S), getF32(SC_2 + 4 * h * S, S), `${what} h=${h} matvec reference vs wasm`);
        }
        putF32(
          SC_2,
          getF32(SC_2, g * S).map((x) => f(x * f(scale))),
        );
        for (let h = 0; h < g; h++) wasm.softmaxF32(SC_2 + 4 * h * S, S);
        expectBitExact(p, getF32(SC_2, g * S), `${what} p vs softmax(matvec·scale)`);

        // Step 3: float64 Σ p V with the kernel's p.
        const expected = new Float64Array(g * Hd),
          bound = new Float64Array(g * Hd);
        for (let h = 0; h < g; h++) {
          for (let j = 0; j < Hd; j++) {
            let acc = 0,
              abs = 0;
            for (let s = 0; s < S; s++) {
              acc += p[h * S + s] * v[s * Hd + j];
              abs += p[h * S + s] * Math.abs(v[s * Hd + j]);
            }
            expected[h * Hd + j] = acc;
            bound[h * Hd + j] = (S / 4 + 8) * 2 ** -24 * abs + 4 * S * 2 ** -149; // the last: f32 subnormals
          }
        }
        expectWithin(out, expected, bound, `${what} out vs float64`);
      }
    });
  }
});

/** Copies rows `rows` of the quantised K, V at KQ, VQ to KG, VG, in order. */
function gatherRows(rows: number[], bytes: number) {
  rows.forEach((row, s) => {
    arena.u8.copyWithin(KG + s * bytes, KQ + row * bytes, KQ + (row + 1) * bytes);
    arena.u8.copyWithin(VG + s * bytes, VQ + row * bytes, VQ + (row + 1) * bytes);
  });
}

describe("attendRows", () => {
  for (const format of FORMATS) {
    test(`attendRows${format} == attention${format} on the rows gathered in idx order (ascending, any order with repeats), out and p, and wasm == reference (bit-exact)`, () => {
      for (const { S, Hd, g, seed } of shapes([1, 3, 17, 100], [1, 2, 4, 8])) {
        const { scale } = setupAttention(format, S, Hd, g, seed);
        const random = makeRandom(seed + 1);
        const selections = [
          rowIndices(random, S, 1, "ascending"),
          rowIndices(random, S, Math.ceil(S / 3), "ascending"),
          rowIndices(random, S, S + 5, "any"),
        ];
        for (const rows of selections) {
          const n = rows.length,
            what = `S=${S} Hd=${Hd} g=${g} n=${n}`;
          putI32(IDX, rows);
          wasm[`attendRows${format}`](OUT_W, SC_W, Q, KQ, VQ, IDX, n, Hd, g, scale, QQ_W);
          ref[`attendRows${format}`](OUT_R, SC_R, Q, KQ, VQ, IDX, n, Hd, g, scale, QQ_R);
          gatherRows(rows, rowBytes(format, Hd));
          wasm[`attention${format}`](OUT_2, SC_2, Q, KG, VG, n, Hd, g, scale, QQ_2);
          expectBitExact(getF32(OUT_W, g * Hd), getF32(OUT_2, g * Hd), `${what} out`);
          expectBitExact(getF32(SC_W, g * n), getF32(SC_2, g * n), `${what} p`);
          expectBitExact(getF32(OUT_R, g * Hd), getF32(OUT_W, g * Hd), `${what} out reference vs wasm`);
          expectBitExact(getF32(SC_R, g * n), getF32(SC_W, g * n), `${what} p reference vs wasm`);
        }
      }
    });
  }
});

describe("attentionCausal", () => {
  // (S0, T): one row, a chunk alone, chunks after a prefix, and chunks over several K / V tiles (a tile
  // is 16 KiB of rows: 60 rows of q8_0 at Hd = 256, 908 of q4_0 at Hd = 32).
  const CHUNKS = [
    [0, 1],
    [0, 7],
    [5, 13],
    [100, 37],
    [1000, 6],
  ];

  for (const format of FORMATS) {
    test(`attentionCausal${format} == attention${format} once per row t with S = S0 + t + 1 (out, p, qq), nothing else written, and wasm == reference (bit-exact)`, () => {
      for (const [S0, T] of CHUNKS) {
        for (const Hd of HEAD_DIMS) {
          for (const g of [1, 2, 4]) {
            const seed = S0 * 1e5 + T * 1e3 + Hd * 10 + g;
            setupAttention(format, S0 + T, Hd, g, seed);
            const scale = 1 / Math.sqrt(Hd),
              qStride = g * Hd + 5,
              Sall = S0 + T,
              qqBytes = rowBytes("Q8_0", Hd);
            putF32(Q, gaussian(makeRandom(seed + 1), T * qStride, 3));
            // The same canary in every output, so unwritten floats compare equal.
            const canary = gaussian(makeRandom(seed + 2), Math.max(T * qStride, T * g * Sall), 100);
            for (const ptr of [OUT_W, OUT_R, OUT_2]) putF32(ptr, canary.subarray(0, T * qStride));
            for (const ptr of [SC_W, SC_R]) putF32(ptr, canary.subarray(0, T * g * Sall));
            wasm[`attentionCausal${format}`](OUT_W, SC_W, Q, KQ, VQ, S0, T, Hd, g, qStride, scale, QQ_W);
            ref[`attentionCausal${format}`](OUT_R, SC_R, Q, KQ, VQ, S0, T, Hd, g, qStride, scale, QQ_R);
            const what = `S0=${S0} T=${T} Hd=${Hd} g=${g}`;
            expectBitExact(getF32(OUT_R, T * qStride), getF32(OUT_W, T * qStride), `${what} out reference vs wasm`);
            expectBitExact(getF32(SC_R, T * g * Sall), getF32(SC_W, T * g * Sall), `${what} scores reference vs wasm`);
            expectSameBytes(getBytes(QQ_R, T * g * qqBytes), getBytes(QQ_W, T * g * qqBytes), `${what} qq`);
            for (let t = 0; t < T; t++) {
              const S = S0 + t + 1,
                at = 4 * t * qStride;
              wasm[`attention${format}`](OUT_2 + at, SC_2, Q + at, KQ, VQ, S, Hd, g, scale, QQ_2);
              const qq = QQ_W + t * g * qqBytes;
              expectSameBytes(getBytes(qq, g * qqBytes), getBytes(QQ_2, g * qqBytes), `${what} t=${t} qq`);
              for (let h = 0; h < g; h++) {
                const row = SC_W + 4 * (t * g + h) * Sall;
                expectBitExact(getF32(row, S), getF32(SC_2 + 4 * h * S, S), `${what} t=${t} h=${h} p`);
                const past = 4 * ((t * g + h) * Sall + S);
                expectBitExact(
                  getF32(SC_W + past, Sall - S),
                  canary.subarray(past / 4, past / 4 + Sall - S),
                  `${what} t=${t} h=${h} past p`,
                );
              }
            }
            // Row by row, OUT_2 got the same out and kept the canary in the gaps between rows.
            expectBitExact(getF32(OUT_W, T * qStride), getF32(OUT_2, T * qStride), `${what} out and gaps`);
          }
        }
      }
    });
  }
});

describe("SparQ scores", () => {
  /**
   * Random keys for n positions quantised per channel in groups of 32 positions (positions n … ldk − 1
   * random too), as a d-major copy: codes kT at KQ, scales dT at VQ, and the dequantised kT (Hd, ldk) f32
   * at X. q (g, Hd) at Q, scale (g) at SCALE.
   */
  function setupT(format: Format, n: number, ldk: number, Hd: number, g: number, seed: number) {
    const random = makeRandom(seed);
    const keys = cacheValues(random, ldk, Hd); // (ldk, Hd): position-major
    // Whole channels tiny (f16-subnormal d) or zero (d = 0), as outlier-free channels can be.
    for (let s = 0; s < ldk; s++) for (let i = 2; i < Hd; i += 9) keys[s * Hd + i] *= i % 2 ? 1e-6 : 0;
    const groups = ldk / 32;
    const dequantised = new Float32Array(Hd * ldk);
    for (let i = 0; i < Hd; i++) {
      for (let j = 0; j < groups; j++) {
        const group = Float32Array.from(range(32), (e) => keys[(32 * j + e) * Hd + i]);
        const block = encodeBlocks(format, group);
        dequantised.set(decodeBlocks(format, block, 32), i * ldk + 32 * j);
        arena.u8.set(block.subarray(0, 2), VQ + 2 * (i * groups + j));
        arena.u8.set(
          block.subarray(2),
          KQ + i * (format === "Q8_0" ? ldk : ldk / 2) + (format === "Q8_0" ? 32 : 16) * j,
        );
      }
    }
    putF32(X, dequantised);
    putF32(Q, gaussian(random, g * Hd));
    putF32(
      SCALE,
      Float32Array.from(range(g), () => 0.05 + random()),
    );
  }

  /** Component selections: a few, a quarter, all (each in random order), and one with repeats. */
  function componentSets(random: () => number, Hd: number): number[][] {
    const shuffled = (r: number) => rowIndices(random, Hd, r, "ascending").sort(() => random() - 0.5);
    return [shuffled(3), shuffled(Hd / 4), shuffled(Hd), rowIndices(random, Hd, Hd / 2, "any")];
  }

  for (const format of FORMATS) {
    test(`sparqScores${format}T == sparqScoresF32 on the dequantised kT (n < ldk, ldo > n; out past n untouched), and wasm == reference (bit-exact)`, () => {
      for (const n of [1, 15, 16, 17, 40, 100, 517]) {
        for (const Hd of HEAD_DIMS) {
          for (const g of [1, 2, 3, 4, 8]) {
            const seed = n * 1000 + Hd * 10 + g,
              ldk = 32 * Math.ceil((n + 1) / 32) + 32 * (n % 2),
              ldo = n + 3 + (n % 5);
            setupT(format, n, ldk, Hd, g, seed);
            for (const idx of componentSets(makeRandom(seed + 1), Hd)) {
              const r = idx.length,
                what = `n=${n} ldk=${ldk} Hd=${Hd} g=${g} r=${r}`;
              putI32(IDX, idx);
              const canary = gaussian(makeRandom(seed + 2), g * ldo, 100);
              putF32(OUT_W, canary);
              putF32(OUT_R, canary);
              wasm[`sparqScores${format}T`](OUT_W, Q, KQ, VQ, IDX, SCALE, r, n, ldo, ldk, Hd, g);
              ref[`sparqScores${format}T`](OUT_R, Q, KQ, VQ, IDX, SCALE, r, n, ldo, ldk, Hd, g);
              wasm.sparqScoresF32(OUT_2, Q, X, IDX, SCALE, r, n, ldk, Hd, g);
              const expected = Float32Array.from(canary);
              for (let h = 0; h < g; h++) expected.set(getF32(OUT_2 + 4 * h * n, n), h * ldo);
              expectBitExact(getF32(OUT_W, g * ldo), expected, `${what} wasm`);
              expectBitExact(getF32(OUT_R, g * ldo), expected, `${what} reference`);
            }
          }
        }
      }
    });

    test(`sparqScoresStrided${format} == sparqScoresStridedF32 on the dequantised rows for positions from … S − 1 (out elsewhere untouched), and wasm == reference (bit-exact)`, () => {
      for (const S of [1, 5, 31, 100, 517]) {
        for (const Hd of HEAD_DIMS) {
          for (const g of [1, 2, 3, 8]) {
            const seed = S * 1000 + Hd * 10 + g,
              random = makeRandom(seed);
            const kBytes = encodeBlocks(format, cacheValues(random, S, Hd));
            arena.u8.set(kBytes, KQ);
            putF32(KF, decodeBlocks(format, kBytes, S * Hd));
            putF32(Q, gaussian(random, g * Hd));
            putF32(
              SCALE,
              Float32Array.from(range(g), () => 0.05 + random()),
            );
            const canary = gaussian(makeRandom(seed + 2), g * S, 100);
            for (const idx of componentSets(random, Hd)) {
              const r = idx.length;
              putI32(IDX, idx);
              wasm.sparqScoresStridedF32(OUT_2, Q, KF, IDX, SCALE, r, S, Hd, g);
              const full = getF32(OUT_2, g * S);
              for (const from of [...new Set([0, S - 1, Math.max(0, S - 17), Math.max(0, S - 31), S >> 1])]) {
                const what = `S=${S} Hd=${Hd} g=${g} r=${r} from=${from}`;
                putF32(OUT_W, canary);
                putF32(OUT_R, canary);
                wasm[`sparqScoresStrided${format}`](OUT_W, Q, KQ, IDX, SCALE, r, from, S, Hd, g);
                ref[`sparqScoresStrided${format}`](OUT_R, Q, KQ, IDX, SCALE, r, from, S, Hd, g);
                const expected = Float32Array.from(canary);
                for (let h = 0; h < g; h++) expected.set(full.subarray(h * S + from, (h + 1) * S), h * S + from);
                expectBitExact(getF32(OUT_W, g * S), expected, `${what} wasm`);
                expectBitExact(getF32(OUT_R, g * S), expected, `${what} reference`);
              }
            }
          }
        }
      }
    });
  }
});
