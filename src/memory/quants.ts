/**
 * ggml's 4-, 5- and 6-bit block formats in plain TypeScript: each block's layout, its dequantization, and
 * the reference round-to-nearest quantizers that llama-quantize runs without an importance matrix. These are
 * the formats of the GGUF files people download (Q4_0, Q4_1, Q5_0, Q5_1, and the K-quants Q4_K, Q5_K, Q6_K
 * that Q4_K_M, Q5_K_M and Q6_K files mix). Arithmetic is f32 (Math.fround at every step), as in ggml's C.
 *
 * Layouts (little-endian; d, m, dmin are f16 unless said):
 *   q4_0  32 values, 18 B: d, 16 B of nibbles; value j in the low nibble of byte j, value j+16 in its high
 *         nibble; x = (q − 8)·d.
 *   q4_1  32 values, 20 B: d, m, nibbles as q4_0; x = q·d + m.
 *   q5_0  32 values, 22 B: d, a u32 of fifth bits (bit e for value e), nibbles as q4_0; x = (q − 16)·d.
 *   q5_1  32 values, 24 B: d, m, the u32 of fifth bits, nibbles; x = q·d + m.
 *   q4_k  256 values, 144 B: d, dmin, 12 B of eight 6-bit scales and mins, 128 B of nibbles; sub-block j of
 *         32 values: x = (d·sc_j)·q − dmin·m_j; each 32-byte group of nibbles holds sub-block 2c (low) and
 *         2c+1 (high).
 *   q5_k  256 values, 176 B: as q4_k with 32 B of fifth bits (bit j of byte e mod 32 for value e in
 *         sub-block j) between the scales and the nibbles; q = nibble + 16·bit.
 *   q6_k  256 values, 210 B: 128 B of low nibbles, 64 B of high bit pairs, 16 signed 8-bit scales (one per
 *         16 values), then d; x = (d·scale_j)·(q − 32).
 */
import { f16ToF32, f32ToF16 } from "./half.js";

export const QUANT_TYPES = ["q4_0", "q4_1", "q5_0", "q5_1", "q4_k", "q5_k", "q6_k"] as const;
export type QuantType = (typeof QUANT_TYPES)[number];

/** Values per block, bytes per block and ggml's type id of each format. */
export const QUANT_BLOCKS: Record<QuantType, { values: number; bytes: number; ggmlType: number }> = {
  q4_0: { values: 32, bytes: 18, ggmlType: 2 },
  q4_1: { values: 32, bytes: 20, ggmlType: 3 },
  q5_0: { values: 32, bytes: 22, ggmlType: 6 },
  q5_1: { values: 32, bytes: 24, ggmlType: 7 },
  q4_k: { values: 256, bytes: 144, ggmlType: 12 },
  q5_k: { values: 256, bytes: 176, ggmlType: 13 },
  q6_k: { values: 256, bytes: 210, ggmlType: 14 },
};

const f = Math.fround;

/** ggml's nearest_int: round half to even (|x| < 2^22). */
export function nearestInt(x: number): number {
  const r = Math.round(x);
  return r - x === 0.5 && (r & 1) !== 0 ? r - 1 : r;
}

/** Dequantizes n values (a whole number of blocks) of `type` from `bytes`. */
export function dequantize(type: QuantType, bytes: Uint8Array, n: number): Float32Array {
  const { values, bytes: size } = QUANT_BLOCKS[type];
  if (n % values !== 0) throw new RangeError(`${type}: ${n} values are not whole blocks of ${values}`);
  if (bytes.length < (n / values) * size)
    throw new RangeError(`${type}: ${n} values need ${(n / values) * size} bytes, got ${bytes.length}`);
  const out = new Float32Array(n);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  for (let b = 0; b < n / values; b++) {
    const at = b * size;
    const y = out.subarray(b * values, (b + 1) * values);
    switch (type) {
      case "q4_0":
      case "q4_1":
      case "q5_0":
      case "q5_1": {
        const d = f16ToF32(view.getUint16(at, true));
        const offset = type === "q4_1" || type === "q5_1";
        const m = offset ? f16ToF32(view.getUint16(at + 2, true)) : 0;
        const five = type === "q5_0" || type === "q5_1";
        const qh = five ? view.getUint32(at + (offset ? 4 : 2), true) : 0;
        const qs = at + (offset ? 4 : 2) + (five ? 4 : 0);
        const bias = offset ? 0 : five ? 16 : 8;
        for (let j = 0; j < 16; j++) {
          const byte = bytes[qs + j];
          const lo = (byte & 15) | (five ? ((qh >>> j) & 1) << 4 : 0);
          const hi = (byte >> 4) | (five ? ((qh >>> (j + 16)) & 1) << 4 : 0);
          y[j] = offset ? f(f(lo * d) + m) : f((lo - bias) * d);
          y[j + 16] = offset ? f(f(hi * d) + m) : f((hi - bias) * d);
        }
        break;
      }
      case "q4_k":
      case "q5_k": {
        const d = f16ToF32(view.getUint16(at, true));
        const dmin = f16ToF32(view.getUint16(at + 2, true));
        const scales = bytes.subarray(at + 4, at + 16);
        const five = type === "q5_k";
        const qh = at + 16;
        const qs = at + (five ? 48 : 16);
        for (let j = 0; j < 8; j++) {
          const [sc, m] = scaleMinK4(scales, j);
          const d1 = f(d * sc);
          const m1 = f(dmin * m);
          const c = j >> 1;
          const high = j & 1;
          for (let l = 0; l < 32; l++) {
            const byte = bytes[qs + 32 * c + l];
            let q = high ? byte >> 4 : byte & 15;
            if (five) q += ((bytes[qh + l] >> j) & 1) << 4;
            y[32 * j + l] = f(f(d1 * q) - m1);
          }
        }
        break;
      }
      case "q6_k": {
        const ql = at;
        const qh = at + 128;
        const sc = at + 192;
        const d = f16ToF32(view.getUint16(at + 208, true));
        for (let e = 0; e < 256; e++) {
          const half = e >> 7;
          const k = (e >> 5) & 3;
          const l = e & 31;
          const lowByte = bytes[ql + 64 * half + (k & 1 ? 32 : 0) + l];
          const low = k < 2 ? lowByte & 15 : lowByte >> 4;
          const high = (bytes[qh + 32 * half + l] >> (2 * k)) & 3;
          const q = (low | (high << 4)) - 32;
          y[e] = f(f(d * view.getInt8(sc + (e >> 4))) * q);
        }
        break;
      }
      default:
        return type satisfies never;
    }
  }
  return out;
}

/** The 6-bit scale and min of sub-block j (0–7) from a K-quant's 12 packed bytes. */
export function scaleMinK4(s: Uint8Array, j: number): [number, number] {
  if (j < 4) return [s[j] & 63, s[j + 4] & 63];
  return [(s[j + 4] & 15) | ((s[j - 4] >> 6) << 4), (s[j + 4] >> 4) | ((s[j] >> 6) << 4)];
}

/** Quantizes n values (a whole number of blocks) with ggml's reference quantizer for `type`. */
export function quantize(type: QuantType, values: ArrayLike<number>): Uint8Array {
  const { values: per, bytes: size } = QUANT_BLOCKS[type];
  const n = values.length;
  if (n % per !== 0) throw new RangeError(`${type}: ${n} values are not whole blocks of ${per}`);
  const out = new Uint8Array((n / per) * size);
  const view = new DataView(out.buffer);
  const x = Float32Array.from(values);
  for (let b = 0; b < n / per; b++) {
    const block = x.subarray(b * per, (b + 1) * per);
    const at = b * size;
    switch (type) {
      case "q4_0":
      case "q5_0":
        quantizeSymmetric(type, block, out, view, at);
        break;
      case "q4_1":
      case "q5_1":
        quantizeOffset(type, block, out, view, at);
        break;
      case "q4_k":
      case "q5_k":
        quantizeK45(type, block, out, view, at);
        break;
      case "q6_k":
        quantizeQ6K(block, out, view, at);
        break;
      default:
        return type satisfies never;
    }
  }
  return out;
}

/** The signed value of largest magnitude (the first one on ties). */
function signedMax(x: Float32Array): number {
  let amax = 0;
  let max = 0;
  for (const v of x) {
    if (Math.abs(v) > amax) {
      amax = Math.abs(v);
      max = v;
    }
  }
  return max;
}

/** q4_0, q5_0: d = max / −8 (−16), q = min(15 (31), ⌊x/d + 8.5 (16.5)⌋). */
function quantizeSymmetric(type: "q4_0" | "q5_0", x: Float32Array, out: Uint8Array, view: DataView, at: number): void {
  const five = type === "q5_0";
  const d = f(signedMax(x) / (five ? -16 : -8));
  const id = d !== 0 ? f(1 / d) : 0;
  view.setUint16(at, f32ToF16(d), true);
  let qh = 0;
  const qs = at + (five ? 6 : 2);
  for (let j = 0; j < 16; j++) {
    // ggml's C compiles x·id + 8.5 with one rounding (a fused multiply-add) on the machines llama.cpp is
    // built for; in double precision the sum is exact before the truncation, which is the same.
    const top = five ? 31 : 15;
    const lo = Math.min(top, Math.trunc(x[j] * id + (five ? 16.5 : 8.5)));
    const hi = Math.min(top, Math.trunc(x[j + 16] * id + (five ? 16.5 : 8.5)));
    out[qs + j] = (lo & 15) | ((hi & 15) << 4);
    qh |= ((lo >> 4) << j) | ((hi >> 4) << (j + 16));
  }
  if (five) view.setUint32(at + 2, qh >>> 0, true);
}

/** q4_1, q5_1: d = (max − min) / 15 (31), m = min, q = ⌊(x − min)/d + 0.5⌋. */
function quantizeOffset(type: "q4_1" | "q5_1", x: Float32Array, out: Uint8Array, view: DataView, at: number): void {
  const five = type === "q5_1";
  let min = Infinity;
  let max = -Infinity;
  for (const v of x) {
    if (v < min) min = v;
    if (v > max) max = v;
  }
  const d = f(f(max - min) / (five ? 31 : 15));
  const id = d !== 0 ? f(1 / d) : 0;
  view.setUint16(at, f32ToF16(d), true);
  view.setUint16(at + 2, f32ToF16(min), true);
  let qh = 0;
  const qs = at + (five ? 8 : 4);
  for (let j = 0; j < 16; j++) {
    const code = (v: number) => {
      const q = Math.trunc(f(v - min) * id + 0.5);
      return five ? q : Math.min(15, q);
    };
    const lo = code(x[j]);
    const hi = code(x[j + 16]);
    out[qs + j] = (lo & 15) | ((hi & 15) << 4);
    qh |= (((lo >> 4) & 1) << j) | (((hi >> 4) & 1) << (j + 16));
  }
  if (five) view.setUint32(at + 4, qh >>> 0, true);
}

/**
 * ggml's make_qkx2_quants: the scale and (negated) min of n values with codes 0…nmax that minimise the
 * weighted error, searching nstep + 1 candidate scales around the range's. Writes the codes to L.
 */
function makeQkx2(
  x: Float32Array,
  w: Float32Array,
  nmax: number,
  L: Uint8Array,
  rmin: number,
  rdelta: number,
  nstep: number,
): { scale: number; min: number } {
  const n = x.length;
  let min = x[0];
  let max = x[0];
  let sumW = w[0];
  let sumX = f(sumW * x[0]);
  for (let i = 1; i < n; i++) {
    if (x[i] < min) min = x[i];
    if (x[i] > max) max = x[i];
    sumW = f(sumW + w[i]);
    sumX = f(sumX + f(w[i] * x[i]));
  }
  if (min > 0) min = 0;
  if (max === min) {
    L.fill(0);
    return { scale: 0, min: -min };
  }
  let iscale = f(nmax / f(max - min));
  let scale = f(1 / iscale);
  let bestError = 0;
  for (let i = 0; i < n; i++) {
    const l = Math.max(0, Math.min(nmax, nearestInt(f(iscale * f(x[i] - min)))));
    L[i] = l;
    const diff = f(f(f(scale * l) + min) - x[i]);
    bestError = f(bestError + f(w[i] * f(diff * diff)));
  }
  const aux = new Uint8Array(n);
  for (let is = 0; is <= nstep; is++) {
    iscale = f(f(f(rmin + f(rdelta * is)) + nmax) / f(max - min));
    let sumL = 0;
    let sumL2 = 0;
    let sumXL = 0;
    for (let i = 0; i < n; i++) {
      const l = Math.max(0, Math.min(nmax, nearestInt(f(iscale * f(x[i] - min)))));
      aux[i] = l;
      const wl = f(w[i] * l);
      sumL = f(sumL + wl);
      sumL2 = f(sumL2 + f(wl * l));
      sumXL = f(sumXL + f(wl * x[i]));
    }
    const D = f(f(sumW * sumL2) - f(sumL * sumL));
    if (D > 0) {
      let thisScale = f(f(f(sumW * sumXL) - f(sumX * sumL)) / D);
      let thisMin = f(f(f(sumL2 * sumX) - f(sumL * sumXL)) / D);
      if (thisMin > 0) {
        thisMin = 0;
        thisScale = f(sumXL / sumL2);
      }
      let err = 0;
      for (let i = 0; i < n; i++) {
        const diff = f(f(f(thisScale * aux[i]) + thisMin) - x[i]);
        err = f(err + f(w[i] * f(diff * diff)));
      }
      if (err < bestError) {
        L.set(aux);
        bestError = err;
        scale = thisScale;
        min = thisMin;
      }
    }
  }
  return { scale, min: -min };
}

/** q4_k, q5_k: per 32-value sub-block a scale and min from makeQkx2, both quantized to 6 bits against d, dmin. */
function quantizeK45(type: "q4_k" | "q5_k", x: Float32Array, out: Uint8Array, view: DataView, at: number): void {
  const five = type === "q5_k";
  const nmax = five ? 31 : 15;
  const L = new Uint8Array(256);
  const scales = new Float32Array(8);
  const mins = new Float32Array(8);
  const w = new Float32Array(32);
  let maxScale = 0;
  let maxMin = 0;
  for (let j = 0; j < 8; j++) {
    const xs = x.subarray(32 * j, 32 * j + 32);
    let sum2 = 0;
    for (const v of xs) sum2 = f(sum2 + f(v * v));
    const av = f(Math.sqrt(f(sum2 / 32)));
    for (let i = 0; i < 32; i++) w[i] = f(av + Math.abs(xs[i]));
    const r = five
      ? makeQkx2(xs, w, nmax, L.subarray(32 * j, 32 * j + 32), -0.5, 0.1, 15)
      : makeQkx2(xs, w, nmax, L.subarray(32 * j, 32 * j + 32), -1, 0.1, 20);
    scales[j] = r.scale;
    mins[j] = r.min;
    if (r.scale > maxScale) maxScale = r.scale;
    if (r.min > maxMin) maxMin = r.min;
  }
  const invScale = maxScale > 0 ? f(63 / maxScale) : 0;
  const invMin = maxMin > 0 ? f(63 / maxMin) : 0;
  const S = out.subarray(at + 4, at + 16);
  for (let j = 0; j < 8; j++) {
    const ls = Math.min(63, nearestInt(f(invScale * scales[j])) & 255);
    const lm = Math.min(63, nearestInt(f(invMin * mins[j])) & 255);
    if (j < 4) {
      S[j] = ls;
      S[j + 4] = lm;
    } else {
      S[j + 4] = (ls & 15) | ((lm & 15) << 4);
      S[j - 4] |= (ls >> 4) << 6;
      S[j] |= (lm >> 4) << 6;
    }
  }
  view.setUint16(at, f32ToF16(f(maxScale / 63)), true);
  view.setUint16(at + 2, f32ToF16(f(maxMin / 63)), true);
  const d = f16ToF32(view.getUint16(at, true));
  const dmin = f16ToF32(view.getUint16(at + 2, true));
  for (let j = 0; j < 8; j++) {
    const [sc, m] = scaleMinK4(S, j);
    const dq = f(d * sc);
    if (dq === 0) continue;
    const dm = f(dmin * m);
    for (let i = 32 * j; i < 32 * j + 32; i++) L[i] = Math.max(0, Math.min(nmax, nearestInt(f(f(x[i] + dm) / dq))));
  }
  const qh = at + 16;
  const qs = at + (five ? 48 : 16);
  for (let c = 0; c < 4; c++) {
    for (let l = 0; l < 32; l++) {
      let a = L[64 * c + l];
      let b = L[64 * c + l + 32];
      if (five) {
        if (a > 15) {
          a -= 16;
          out[qh + l] |= 1 << (2 * c);
        }
        if (b > 15) {
          b -= 16;
          out[qh + l] |= 2 << (2 * c);
        }
      }
      out[qs + 32 * c + l] = a | (b << 4);
    }
  }
}

/** ggml's make_qx_quants with rmse_type 1 (weights x²): a signed scale and codes 0…2·nmax−1 in L. */
function makeQx(x: Float32Array, nmax: number, L: Uint8Array): number {
  const n = x.length;
  const max = signedMax(x);
  if (Math.abs(max) < 1e-15) {
    L.fill(0);
    return 0;
  }
  const clamp = (v: number) => Math.max(-nmax, Math.min(nmax - 1, v));
  const sums = (iscale: number, store: boolean) => {
    let sumlx = 0;
    let suml2 = 0;
    for (let i = 0; i < n; i++) {
      const l = clamp(nearestInt(f(iscale * x[i])));
      if (store) L[i] = l + nmax;
      const w = f(x[i] * x[i]);
      sumlx = f(sumlx + f(f(w * x[i]) * l));
      suml2 = f(suml2 + f(f(w * l) * l));
    }
    return { sumlx, suml2 };
  };
  let { sumlx, suml2 } = sums(f(-nmax / max), true);
  let scale = suml2 !== 0 ? f(sumlx / suml2) : 0;
  let best = f(scale * sumlx);
  for (let is = -9; is <= 9; is++) {
    if (is === 0) continue;
    const iscale = f(-f(nmax + f(0.1 * is)) / max);
    ({ sumlx, suml2 } = sums(iscale, false));
    if (suml2 > 0 && f(sumlx * sumlx) > f(best * suml2)) {
      sums(iscale, true);
      scale = f(sumlx / suml2);
      best = f(scale * sumlx);
    }
  }
  return scale;
}

/** q6_k: per 16-value sub-block a signed scale from makeQx, quantized to 8 bits against d. */
function quantizeQ6K(x: Float32Array, out: Uint8Array, view: DataView, at: number): void {
  const L = new Uint8Array(256);
  const scales = new Float32Array(16);
  let maxScale = 0;
  let maxAbs = 0;
  for (let j = 0; j < 16; j++) {
    scales[j] = makeQx(x.subarray(16 * j, 16 * j + 16), 32, L.subarray(16 * j, 16 * j + 16));
    if (Math.abs(scales[j]) > maxAbs) {
      maxAbs = Math.abs(scales[j]);
      maxScale = scales[j];
    }
  }
  if (maxAbs < 1e-15) return; // an all-zero block
  const iscale = f(-128 / maxScale);
  view.setUint16(at + 208, f32ToF16(f(1 / iscale)), true);
  const d = f16ToF32(view.getUint16(at + 208, true));
  for (let j = 0; j < 16; j++) view.setInt8(at + 192 + j, Math.min(127, nearestInt(f(iscale * scales[j]))));
  for (let j = 0; j < 16; j++) {
    const dq = f(d * view.getInt8(at + 192 + j));
    if (dq === 0) continue;
    for (let i = 16 * j; i < 16 * j + 16; i++) L[i] = Math.max(-32, Math.min(31, nearestInt(f(x[i] / dq)))) + 32;
  }
  for (let half = 0; half < 2; half++) {
    const o = 128 * half;
    for (let l = 0; l < 32; l++) {
      out[at + 64 * half + l] = (L[o + l] & 15) | ((L[o + l + 64] & 15) << 4);
      out[at + 64 * half + 32 + l] = (L[o + l + 32] & 15) | ((L[o + l + 96] & 15) << 4);
      out[at + 128 + 32 * half + l] =
        (L[o + l] >> 4) | ((L[o + l + 32] >> 4) << 2) | ((L[o + l + 64] >> 4) << 4) | ((L[o + l + 96] >> 4) << 6);
    }
  }
}
