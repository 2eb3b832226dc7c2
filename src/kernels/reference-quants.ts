/**
 * The reference twin of the quantized-weight kernels (assembly/quants*.ts): plain TypeScript, same
 * signatures, same results bit for bit; merged into createReferenceKernels.
 *
 * Written from the formats (dev/notes/ggml-quant-formats.md §2, §3, §6) rather than from the kernels:
 * each weight code is decoded on its own, the integer sums are ggml's generic ones (signed codes for
 * Q4_0, Q5_0, Q6_K; unsigned codes and the bsums for the K-quant mins), and every f32 operation of the
 * fixed order the kernels document (kernels.ts QuantKernels) is one Math.fround. Products of two f32
 * values, and of an f32 and an integer below 2^24, are exact in float64, so fround rounds them once.
 * Pointers are byte offsets into `memory`.
 */
import { f16ToF32, f32ToF16, roundHalfEven } from "../memory/dtype.js";
import type { QuantKernels } from "./kernels.js";

const f = Math.fround;

type Legacy = "q4_0" | "q4_1" | "q5_0" | "q5_1";
type KQuant = "q4_k" | "q5_k" | "q6_k";

/** Bytes per block, whether it has m (and q8_1 activations), whether it has fifth bits. */
const LEGACY: Record<Legacy, { bytes: number; offset: boolean; five: boolean }> = {
  q4_0: { bytes: 18, offset: false, five: false },
  q4_1: { bytes: 20, offset: true, five: false },
  q5_0: { bytes: 22, offset: false, five: true },
  q5_1: { bytes: 24, offset: true, five: true },
};
const K_BYTES: Record<KQuant, number> = { q4_k: 144, q5_k: 176, q6_k: 210 };
const Q8_K_BYTES = 292;

/** An int8 quantizer's rounding as the kernels store it: nearest-even, saturated to int8, NaN → 0. */
function toInt8(v: number): number {
  return Number.isNaN(v) ? 0 : Math.max(-128, Math.min(127, roundHalfEven(v)));
}

export function createReferenceQuantKernels(memory: WebAssembly.Memory): QuantKernels {
  const u8 = new Uint8Array(memory.buffer);
  const i8 = new Int8Array(memory.buffer);
  const f32 = new Float32Array(memory.buffer);
  const view = new DataView(memory.buffer);
  const half = (p: number) => f16ToF32(view.getUint16(p, true));

  // ---- codes ----

  /** The code (0..15 or 0..31) of element e of the legacy block at wb. */
  function legacyCode(type: Legacy, wb: number, e: number): number {
    const { offset, five } = LEGACY[type];
    const qh = offset ? 4 : 2;
    const qs = qh + (five ? 4 : 0);
    const byte = u8[wb + qs + (e & 15)];
    let c = e < 16 ? byte & 15 : byte >> 4;
    if (five) c |= ((view.getUint32(wb + qh, true) >>> e) & 1) << 4;
    return c;
  }

  /** The code of element e (0..255) of the K-quant block at wb: 0..15, 0..31 or 0..63. */
  function kCode(type: KQuant, wb: number, e: number): number {
    if (type === "q6_k") {
      const h = e >> 7,
        k = (e >> 5) & 3,
        l = e & 31;
      const byte = u8[wb + 64 * h + 32 * (k & 1) + l];
      const low = k < 2 ? byte & 15 : byte >> 4;
      return low | (((u8[wb + 128 + 32 * h + l] >> (2 * k)) & 3) << 4);
    }
    const j = e >> 5,
      l = e & 31;
    const byte = u8[wb + (type === "q5_k" ? 48 : 16) + 32 * (j >> 1) + l];
    let c = j & 1 ? byte >> 4 : byte & 15;
    if (type === "q5_k") c |= ((u8[wb + 16 + l] >> j) & 1) << 4;
    return c;
  }

  /** Scale and min (6 bits each) of sub-block j of a Q4_K / Q5_K block at wb (ggml's get_scale_min_k4). */
  function scaleMin(wb: number, j: number): [number, number] {
    const s = (i: number) => u8[wb + 4 + i];
    if (j < 4) return [s(j) & 63, s(j + 4) & 63];
    return [(s(j + 4) & 15) | ((s(j - 4) >> 6) << 4), (s(j + 4) >> 4) | ((s(j) >> 6) << 4)];
  }

  // ---- dots ----

  /** Weight row r (blocks from w) of a legacy type · the q8_0 / q8_1 row at xq, as the kernels compute it. */
  function legacyDot(type: Legacy, xq: number, w: number, r: number, n: number): number {
    const { bytes, offset, five } = LEGACY[type];
    const nb = n / 32;
    const xBytes = offset ? 36 : 34;
    const bias = offset ? 0 : five ? 16 : 8;
    let sum = 0;
    for (let b = 0; b < nb; b++) {
      const wb = w + (r * nb + b) * bytes;
      const xb = xq + b * xBytes;
      let sumi = 0;
      for (let e = 0; e < 32; e++) sumi += (legacyCode(type, wb, e) - bias) * i8[xb + (offset ? 4 : 2) + e];
      const d = half(wb),
        dx = half(xb);
      let term: number;
      if (type === "q4_0") term = f(f(sumi * d) * dx);
      else if (type === "q5_0") term = f(f(d * dx) * sumi);
      else term = f(f(f(d * dx) * sumi) + f(half(wb + 2) * half(xb + 2)));
      sum = f(sum + term);
    }
    return sum;
  }

  /** Weight row r of a K-quant type · the q8_K row at xq, as the kernels compute it. */
  function kDot(type: KQuant, xq: number, w: number, r: number, n: number): number {
    const nb = n / 256;
    let sum = 0;
    for (let b = 0; b < nb; b++) {
      const wb = w + (r * nb + b) * K_BYTES[type];
      const xb = xq + b * Q8_K_BYTES;
      const dy = f32[xb / 4];
      const x = (e: number) => i8[xb + 4 + e];
      if (type === "q6_k") {
        let isum = 0;
        for (let j = 0; j < 16; j++) {
          let s = 0;
          for (let e = 16 * j; e < 16 * j + 16; e++) s += (kCode(type, wb, e) - 32) * x(e);
          isum += i8[wb + 192 + j] * s;
        }
        sum = f(sum + f(f(half(wb + 208) * dy) * f(isum)));
      } else {
        let isum = 0,
          summs = 0;
        for (let j = 0; j < 8; j++) {
          const [sc, m] = scaleMin(wb, j);
          let s = 0;
          for (let e = 32 * j; e < 32 * j + 32; e++) s += kCode(type, wb, e) * x(e);
          isum += sc * s;
          summs += m * (view.getInt16(xb + 260 + 4 * j, true) + view.getInt16(xb + 262 + 4 * j, true));
        }
        const dall = f(half(wb) * dy),
          dmin = f(half(wb + 2) * dy);
        sum = f(sum + f(f(dall * f(isum)) - f(dmin * f(summs))));
      }
    }
    return sum;
  }

  // ---- dequantization ----

  function legacyRow(type: Legacy, out: number, table: number, row: number, n: number): void {
    const { bytes, offset, five } = LEGACY[type];
    const nb = n / 32;
    for (let b = 0; b < nb; b++) {
      const wb = table + (row * nb + b) * bytes;
      const d = half(wb),
        m = offset ? half(wb + 2) : 0;
      for (let e = 0; e < 32; e++) {
        const c = legacyCode(type, wb, e);
        f32[out / 4 + 32 * b + e] = offset ? f(f(c * d) + m) : f((c - (five ? 16 : 8)) * d);
      }
    }
  }

  function kRow(type: KQuant, out: number, table: number, row: number, n: number): void {
    const nb = n / 256;
    for (let b = 0; b < nb; b++) {
      const wb = table + (row * nb + b) * K_BYTES[type];
      const y = out / 4 + 256 * b;
      if (type === "q6_k") {
        const d = half(wb + 208);
        for (let e = 0; e < 256; e++) f32[y + e] = f(f(d * i8[wb + 192 + (e >> 4)]) * (kCode(type, wb, e) - 32));
      } else {
        const d = half(wb),
          dmin = half(wb + 2);
        for (let e = 0; e < 256; e++) {
          const [sc, m] = scaleMin(wb, e >> 5);
          f32[y + e] = f(f(f(d * sc) * kCode(type, wb, e)) - f(dmin * m));
        }
      }
    }
  }

  const matvecLegacy = (type: Legacy) => (out: number, xq: number, w: number, n: number, d: number) => {
    for (let r = 0; r < d; r++) f32[out / 4 + r] = legacyDot(type, xq, w, r, n);
  };
  const matmulLegacy =
    (type: Legacy) => (out: number, xq: number, w: number, n: number, d: number, t: number, ldo: number) => {
      const xRow = (n / 32) * (LEGACY[type].offset ? 36 : 34);
      for (let i = 0; i < t; i++)
        for (let r = 0; r < d; r++) f32[out / 4 + i * ldo + r] = legacyDot(type, xq + i * xRow, w, r, n);
    };
  const matvecK = (type: KQuant) => (out: number, xq: number, w: number, n: number, d: number) => {
    for (let r = 0; r < d; r++) f32[out / 4 + r] = kDot(type, xq, w, r, n);
  };
  const matmulK =
    (type: KQuant) => (out: number, xq: number, w: number, n: number, d: number, t: number, ldo: number) => {
      const xRow = (n / 256) * Q8_K_BYTES;
      for (let i = 0; i < t; i++)
        for (let r = 0; r < d; r++) f32[out / 4 + i * ldo + r] = kDot(type, xq + i * xRow, w, r, n);
    };
  const getRowLegacy = (type: Legacy) => (out: number, table: number, row: number, n: number) =>
    legacyRow(type, out, table, row, n);
  const getRowK = (type: KQuant) => (out: number, table: number, row: number, n: number) =>
    kRow(type, out, table, row, n);

  return {
    quantizeQ8_1(out, x, n) {
      for (let b = 0; b < n / 32; b++) {
        const xb = x / 4 + 32 * b,
          ob = out + 36 * b;
        // As quantizeQ8_0 (Math.max, like f32x4.max, propagates NaN), plus s from the stored int8.
        let amax = 0;
        for (let e = 0; e < 32; e++) amax = Math.max(amax, Math.abs(f32[xb + e]));
        const d = f(amax / 127);
        const id = amax !== 0 ? f(127 / amax) : 0;
        let sum = 0;
        for (let e = 0; e < 32; e++) {
          const q = toInt8(f(f32[xb + e] * id));
          i8[ob + 4 + e] = q;
          sum += q;
        }
        view.setUint16(ob, f32ToF16(d), true);
        view.setUint16(ob + 2, f32ToF16(f(sum * d)), true);
      }
    },
    quantizeQ8_K(out, x, n) {
      for (let b = 0; b < n / 256; b++) {
        const xb = x / 4 + 256 * b,
          ob = out + Q8_K_BYTES * b;
        // ggml: the first x of largest magnitude (a strict > scan, which also skips NaN).
        let amax = 0,
          max = 0;
        for (let e = 0; e < 256; e++) {
          if (Math.abs(f32[xb + e]) > amax) {
            amax = Math.abs(f32[xb + e]);
            max = f32[xb + e];
          }
        }
        if (amax === 0) {
          u8.fill(0, ob, ob + Q8_K_BYTES);
          continue;
        }
        const iscale = f(-127 / max);
        for (let g = 0; g < 16; g++) {
          let bsum = 0;
          for (let e = 16 * g; e < 16 * g + 16; e++) {
            const q = Math.min(127, toInt8(f(iscale * f32[xb + e])));
            i8[ob + 4 + e] = q;
            bsum += q;
          }
          view.setInt16(ob + 260 + 2 * g, bsum, true);
        }
        view.setFloat32(ob, f(1 / iscale), true);
      }
    },

    matvecQ4_0: matvecLegacy("q4_0"),
    matvecQ4_1: matvecLegacy("q4_1"),
    matvecQ5_0: matvecLegacy("q5_0"),
    matvecQ5_1: matvecLegacy("q5_1"),
    matvecQ4_K: matvecK("q4_k"),
    matvecQ5_K: matvecK("q5_k"),
    matvecQ6_K: matvecK("q6_k"),

    matmulQ4_0: matmulLegacy("q4_0"),
    matmulQ4_1: matmulLegacy("q4_1"),
    matmulQ5_0: matmulLegacy("q5_0"),
    matmulQ5_1: matmulLegacy("q5_1"),
    matmulQ4_K: matmulK("q4_k"),
    matmulQ5_K: matmulK("q5_k"),
    matmulQ6_K: matmulK("q6_k"),

    getRowQ4_0: getRowLegacy("q4_0"),
    getRowQ4_1: getRowLegacy("q4_1"),
    getRowQ5_0: getRowLegacy("q5_0"),
    getRowQ5_1: getRowLegacy("q5_1"),
    getRowQ4_K: getRowK("q4_k"),
    getRowQ5_K: getRowK("q5_k"),
    getRowQ6_K: getRowK("q6_k"),
  };
}
