/**
 * ggml's block formats in TypeScript (src/memory/quants.ts): blocks packed here by hand from the layouts ggml
 * defines dequantize to the formula's values (bit-exact), values on a format's grid survive quantization
 * exactly, and random values come back within each format's error (relative RMS error bounds in the names).
 */
import { describe, expect, test } from "vitest";
import { f16ToF32, f32ToF16 } from "../src/memory/dtype.js";
import { QUANT_BLOCKS, QUANT_TYPES, dequantize, nearestInt, quantize, type QuantType } from "../src/memory/quants.js";
import { gaussian, makeRandom } from "./helpers/kernels-helpers.js";

const f = Math.fround;

describe("hand-packed blocks dequantize to the formula (bit-exact)", () => {
  test("q4_0 and q5_0: value j in byte j's low nibble, j+16 in its high nibble, bit e of the u32 the fifth bit", () => {
    const d = 0.375;
    const codes4 = Array.from({ length: 32 }, (_, e) => (e * 7 + 3) % 16);
    const b4 = new Uint8Array(18);
    new DataView(b4.buffer).setUint16(0, f32ToF16(d), true);
    for (let j = 0; j < 16; j++) b4[2 + j] = codes4[j] | (codes4[j + 16] << 4);
    expect(Array.from(dequantize("q4_0", b4, 32))).toEqual(codes4.map((q) => (q - 8) * d));
    const codes5 = Array.from({ length: 32 }, (_, e) => (e * 11 + 5) % 32);
    const b5 = new Uint8Array(22);
    const v5 = new DataView(b5.buffer);
    v5.setUint16(0, f32ToF16(d), true);
    let qh = 0;
    for (let e = 0; e < 32; e++) qh |= (codes5[e] >> 4) << e;
    v5.setUint32(2, qh >>> 0, true);
    for (let j = 0; j < 16; j++) b5[6 + j] = (codes5[j] & 15) | ((codes5[j + 16] & 15) << 4);
    expect(Array.from(dequantize("q5_0", b5, 32))).toEqual(codes5.map((q) => (q - 16) * d));
  });

  test("q4_1 and q5_1: x = q·d + m", () => {
    const [d, m] = [0.25, -1.5];
    const codes = Array.from({ length: 32 }, (_, e) => (e * 13 + 1) % 32);
    const b = new Uint8Array(24);
    const v = new DataView(b.buffer);
    v.setUint16(0, f32ToF16(d), true);
    v.setUint16(2, f32ToF16(m), true);
    let qh = 0;
    for (let e = 0; e < 32; e++) qh |= (codes[e] >> 4) << e;
    v.setUint32(4, qh >>> 0, true);
    for (let j = 0; j < 16; j++) b[8 + j] = (codes[j] & 15) | ((codes[j + 16] & 15) << 4);
    expect(Array.from(dequantize("q5_1", b, 32))).toEqual(codes.map((q) => q * d + m));
    const b4 = new Uint8Array(20);
    b4.set(b.subarray(0, 4));
    for (let j = 0; j < 16; j++) b4[4 + j] = (codes[j] & 15) | ((codes[j + 16] & 15) << 4);
    expect(Array.from(dequantize("q4_1", b4, 32))).toEqual(codes.map((q) => (q & 15) * d + m));
  });

  test("q4_k and q5_k: eight 6-bit scales and mins (high bits of 4–7 in the top bits of bytes 0–7), nibble groups, fifth bits", () => {
    const [d, dmin] = [f16ToF32(f32ToF16(0.0123)), f16ToF32(f32ToF16(0.0456))];
    const sc = [1, 63, 17, 40, 33, 62, 5, 48];
    const mn = [60, 2, 31, 47, 12, 63, 36, 9];
    const codes = Array.from({ length: 256 }, (_, e) => (e * 29 + 7) % 32);
    for (const type of ["q4_k", "q5_k"] as const) {
      const five = type === "q5_k";
      const b = new Uint8Array(QUANT_BLOCKS[type].bytes);
      const v = new DataView(b.buffer);
      v.setUint16(0, f32ToF16(d), true);
      v.setUint16(2, f32ToF16(dmin), true);
      for (let j = 0; j < 4; j++) {
        b[4 + j] = sc[j] | ((sc[j + 4] >> 4) << 6);
        b[8 + j] = mn[j] | ((mn[j + 4] >> 4) << 6);
        b[12 + j] = (sc[j + 4] & 15) | ((mn[j + 4] & 15) << 4);
      }
      const qs = five ? 48 : 16;
      for (let e = 0; e < 256; e++) {
        const j = e >> 5;
        const q = five ? codes[e] : codes[e] & 15;
        b[qs + 32 * (j >> 1) + (e & 31)] |= (q & 15) << (j & 1 ? 4 : 0);
        if (five) b[16 + (e & 31)] |= (q >> 4) << j;
      }
      const want = codes.map((c, e) => {
        const j = e >> 5;
        return f(f(f(d * sc[j]) * (five ? c : c & 15)) - f(dmin * mn[j]));
      });
      expect(Array.from(dequantize(type, b, 256)), type).toEqual(want);
    }
  });

  test("q6_k: low nibbles in 4 groups of 32 per half, high bit pairs, 16 signed scales, d last; x = (d·scale)·(q − 32)", () => {
    const d = f16ToF32(f32ToF16(0.0031));
    const scales = Array.from(
      { length: 16 },
      (_, j) => [-128, 127, -1, 5, 64, -77, 0, 33, 99, -5, 12, -64, 7, 1, -100, 55][j],
    );
    const codes = Array.from({ length: 256 }, (_, e) => (e * 37 + 11) % 64);
    const b = new Uint8Array(210);
    const v = new DataView(b.buffer);
    for (let e = 0; e < 256; e++) {
      const [half, k, l] = [e >> 7, (e >> 5) & 3, e & 31];
      b[64 * half + (k & 1 ? 32 : 0) + l] |= (codes[e] & 15) << (k < 2 ? 0 : 4);
      b[128 + 32 * half + l] |= (codes[e] >> 4) << (2 * k);
    }
    scales.forEach((s, j) => v.setInt8(192 + j, s));
    v.setUint16(208, f32ToF16(d), true);
    const want = codes.map((c, e) => f(f(d * scales[e >> 4]) * (c - 32)));
    expect(Array.from(dequantize("q6_k", b, 256))).toEqual(want);
  });
});

describe("quantize", () => {
  test("values on a block's grid come back exactly (q4_0: k·d for k in −8…7; q5_0: −16…15; q8-range halves)", () => {
    const d = 0.5;
    const grid4 = Float32Array.from({ length: 32 }, (_, e) => (((e * 5) % 16) - 8) * d);
    grid4[3] = -8 * d; // the largest magnitude is negative: d = max / −8 exactly
    expect(dequantize("q4_0", quantize("q4_0", grid4), 32)).toEqual(grid4);
    const grid5 = Float32Array.from({ length: 32 }, (_, e) => (((e * 7) % 32) - 16) * d);
    grid5[0] = -16 * d;
    expect(dequantize("q5_0", quantize("q5_0", grid5), 32)).toEqual(grid5);
  });

  const bounds: Record<QuantType, number> = {
    q4_0: 0.1,
    q4_1: 0.095,
    q5_0: 0.055,
    q5_1: 0.05,
    q4_k: 0.085,
    q5_k: 0.045,
    q6_k: 0.024,
  };
  for (const type of QUANT_TYPES) {
    test(`${type}: random Gaussian rows of 4 blocks round-trip within a relative RMS error of ${bounds[type]}; all-zero blocks stay zero`, () => {
      const n = 4 * QUANT_BLOCKS[type].values;
      const x = Float32Array.from(gaussian(makeRandom(QUANT_BLOCKS[type].ggmlType), n));
      const bytes = quantize(type, x);
      expect(bytes.length).toBe(4 * QUANT_BLOCKS[type].bytes);
      const y = dequantize(type, bytes, n);
      let err = 0;
      let norm = 0;
      for (let i = 0; i < n; i++) {
        err += (x[i] - y[i]) ** 2;
        norm += x[i] ** 2;
      }
      expect(Math.sqrt(err / norm)).toBeLessThan(bounds[type]);
      expect(Array.from(dequantize(type, quantize(type, new Float32Array(n)), n)).every((v) => v === 0)).toBe(true);
    });
  }

  test("nearestInt rounds halves to even, like ggml's nearest_int", () => {
    expect([2.5, 3.5, -2.5, -3.5, 0.5, 1.4999, -0.5].map(nearestInt)).toEqual([2, 4, -2, -4, 0, 1, -0]);
  });
});
